"""LoRA adapters as files: a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``
or ``.bin``), a diffusers ``pytorch_lora_weights.safetensors`` (its LoraConfig in
``__metadata__["lora_adapter_metadata"]``) or a kohya / sd-scripts file (``lora_unet_*`` keys,
``.lora_down`` / ``.lora_up`` / ``.alpha``, ``ss_network_*`` metadata).

The tensors are read by the ordinary readers (safetensors, and torch's safe reader for a
``.bin``); this module only recognises the key layout, reads the configuration and sets
``Checkpoint.adapter`` to an :class:`~weightviz.formats._peft_config.AdapterInfo`.
"""
from __future__ import annotations

import os
import re

from ..errors import CorruptFileError, UnknownFormatError, capped, message
from ._peft_config import CONFIG_NAME, AdapterInfo, from_config, from_diffusers, from_names, load_config
from .limits import JSON_MAX_BYTES

WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
# a LoRA tensor name: PEFT / new diffusers (lora_A, lora_B, embeddings, DoRA), old diffusers
# (lora.down, lora_linear_layer.down, to_q_lora.down), kohya (lora_down, lora_up)
_LORA_KEY = re.compile(
    r"\.(lora_[AB](\.[^.]+)?\.weight|lora_embedding_[AB](\.[^.]+)?|lora_magnitude_vector(\.[^.]+)?"
    r"|lora(_linear_layer)?\.(down|up)\.weight|lora_(down|up)\.weight)$|_lora\.(down|up)\.weight$")
_KOHYA = re.compile(r"^lora_[a-z0-9]+_.+\.(lora_down|lora_up)\.weight$")


def naming_of(names) -> str | None:
    """'peft', 'diffusers' or 'kohya' when the tensor names are a LoRA adapter's, else None."""
    found = None
    for n in names:
        if _KOHYA.match(n):
            return "kohya"
        if _LORA_KEY.search(n):
            if n.startswith(PEFT_PREFIX):
                return "peft"
            found = "diffusers"
    return found


def _ranks(ckpt) -> set[int]:
    return {e.shape[0] for n, e in ckpt.entries.items()
            if re.search(r"(lora_A(\.[^.]+)?\.weight|lora_embedding_A(\.[^.]+)?|lora_down\.weight"
                         r"|(\.|_)lora(_linear_layer)?\.down\.weight)$", n) and e.shape}


def attach(ckpt, path: str):
    """The checkpoint with ``.adapter`` set when its names (or its file name and a config
    beside it) say it is a LoRA adapter; the checkpoint unchanged otherwise."""
    if ckpt.format not in ("safetensors", "torch") or getattr(ckpt, "adapter", None) is not None:
        return ckpt
    fname = os.path.basename(path)
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_NAME)
    named = fname in WEIGHT_NAMES
    has_cfg = os.path.isfile(cfg_path)
    naming = naming_of(ckpt.entries)
    if naming is None and not (named and has_cfg):
        return ckpt
    meta = ckpt.metadata.get("safetensors_metadata") or {} if isinstance(ckpt.metadata, dict) else {}
    has_alpha = any(n.endswith(".alpha") for n in ckpt.entries)
    if naming == "kohya" and not (named and has_cfg):
        info = from_names("kohya", meta, _ranks(ckpt), has_alpha)
    elif naming == "diffusers" and not (named and has_cfg):
        info = from_diffusers(meta, fname) or from_names("diffusers", meta, _ranks(ckpt), has_alpha)
    else:
        if not has_cfg:
            raise CorruptFileError(message(
                f"{CONFIG_NAME} not found beside {fname}; PEFT writes it with save_pretrained",
                expected=f"a PEFT adapter folder: {CONFIG_NAME} next to {fname}, holding r, "
                         "lora_alpha and target_modules (without them the scale alpha / r is unknown)",
                fix=f"copy {CONFIG_NAME} from where the adapter was saved (model.save_pretrained(folder) "
                    "writes both), or open the file with format='safetensors' / 'torch' to list its "
                    "tensors as a plain checkpoint",
                got=f"{naming or 'adapter'}-style tensor names and no {CONFIG_NAME} in the folder"))
        cfg = read_config(cfg_path)
        info = from_config(cfg, naming=naming or "peft", where=CONFIG_NAME, source=CONFIG_NAME)
        ckpt.metadata = {**ckpt.metadata, "adapter_config": cfg}
    ckpt.adapter = info
    return ckpt


def read_config(path: str) -> dict:
    size = os.path.getsize(path)
    if size > JSON_MAX_BYTES:
        raise CorruptFileError(message(
            f"{os.path.basename(path)} is {size:,} bytes, too large for an adapter config",
            expected=f"a small JSON file (at most {JSON_MAX_BYTES:,} bytes)",
            fix="save the adapter again with save_pretrained", got=f"{size:,} bytes"))
    with open(path, "rb") as f:
        return load_config(f.read(), os.path.basename(path))


def weights_file(path: str, names: list[str]) -> str:
    """The weights file of a PEFT adapter folder (the front door opens it with the ordinary
    reader, and :func:`attach` then reads the config beside it)."""
    for w in WEIGHT_NAMES:
        if w in names:
            return os.path.join(path, w)
    raise UnknownFormatError(message(
        f"{os.path.basename(os.path.normpath(path))} holds {CONFIG_NAME} but no adapter weights",
        expected=f"{' or '.join(WEIGHT_NAMES)} beside {CONFIG_NAME}",
        fix="PEFT writes both with model.save_pretrained(folder); copy the weights file into the folder",
        got=capped(names)))


__all__ = ["AdapterInfo", "WEIGHT_NAMES", "attach", "naming_of", "read_config", "weights_file"]

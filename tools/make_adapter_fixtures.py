"""Write tests/fixtures/adapters/: small LoRA / DoRA adapters saved by PEFT itself, their base
weights, a diffusers and a kohya file, and planted faults.

Run from the repository root (needs peft, transformers and diffusers in the venv):

    .venv/bin/python tools/make_adapter_fixtures.py

It re-runs itself with PYTHONHASHSEED=0 (PEFT writes ``target_modules`` from a set), so a rerun
with the same library versions (peft 0.21.2, transformers 5.25, diffusers 0.42.1, torch 2.13)
gives the same tensors and configs (files with two or more ``__metadata__`` entries may list them
in another order: safetensors' writer does not fix it).

Bases (built from configs in ``tests/_adapter_models.py``, seeded; no download), saved as
float32 safetensors so the tests need no transformers to build them:
``llama_base``, ``gpt2_base`` (Conv1D layers), ``conv_base`` (Conv2d 3×3 / 1×1 + Linear),
``unet_base`` (a tiny diffusers UNet2DConditionModel).

Adapters: ``get_peft_model(model, LoraConfig(...)).save_pretrained(dir)``, with every factor
PEFT starts at zero (lora_B; lora_embedding_A) drawn from N(0, 0.02²) first so ΔW is not zero
(except ``llama_untrained``), DoRA magnitudes scaled by 1 + N(0, 0.05²):

- ``llama_lora``      r 4, alpha 8, all seven Linear kinds of both layers
- ``llama_bin``       the same config on q/v, saved with safe_serialization=False (adapter_model.bin)
- ``llama_rslora``    r 8, alpha 16, use_rslora (scale 16 / sqrt 8)
- ``llama_patterns``  r 4, rank_pattern {q_proj: 8}, alpha_pattern {layers.1.self_attn.v_proj: 32}
- ``llama_layers``    layers_to_transform [1]
- ``llama_dora``      use_dora on q/v
- ``llama_embed``     LoRA on embed_tokens and q_proj, modules_to_save lm_head (perturbed)
- ``llama_untrained`` lora_B left at PEFT's zeros
- ``gpt2_lora``       c_attn / c_proj / c_fc, fan_in_fan_out=True
- ``conv_lora``       conv1 (3×3), conv2 (1×1), head; ``conv_dora`` the convolutions with DoRA
- ``diffusers/pytorch_lora_weights.safetensors``  the UNet's adapter (to_q/k/v, to_out.0, conv1)
  through diffusers' own ``StableDiffusionPipeline.save_lora_weights`` (LoraConfig in
  ``lora_adapter_metadata``)
- ``kohya_lora.safetensors``  the same state dict through diffusers'
  ``convert_state_dict_to_kohya`` (lora_unet_* / lora_down / lora_up / .alpha). That converter
  writes alpha = rank, so the true alpha (8) is written back over it, and the ss_network_dim /
  ss_network_alpha metadata sd-scripts writes is added by hand.
- ``kohya_noalpha.safetensors``  the same without any .alpha tensor or alpha metadata.

Planted faults, each a copy of ``llama_lora`` edited: ``fault_rank`` (config r 4 -> 8),
``fault_zero3`` (every tensor torch.Size([0]), as DeepSpeed ZeRO-3 saves ungathered
parameters), ``fault_target`` (a target 'gate_projj' that matches nothing), ``fault_missing``
(layers.1.mlp.up_proj's tensors removed), ``fault_shape`` (layers.0.self_attn.k_proj's lora_B
(24, 4) for a (16, 32) weight), ``fault_ab`` (layers.0.self_attn.o_proj's lora_B cut to rank 2),
``fault_prefix`` (keys moved under base_model.model.model.language_model.).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "adapters"
sys.path.insert(0, str(ROOT / "tests"))
from _adapter_models import convnet, gpt2, llama, state_dict, unet  # noqa: E402

LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def perturb(model, seed: int) -> None:
    """Draw the factors PEFT starts at zero, and move DoRA magnitudes off their start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_A" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02 + (p if "modules_to_save" in name else 0))
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.05 * torch.randn(p.shape, generator=g))


def adapter(build, name: str, seed: int, train: bool = True, safe: bool = True, **cfg) -> None:
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    model = get_peft_model(build(), LoraConfig(**cfg))
    if train:
        perturb(model, seed)
    model.save_pretrained(OUT / name, safe_serialization=safe)
    (OUT / name / "README.md").unlink(missing_ok=True)


def save(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or {"format": "pt"})


def load(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def bases() -> None:
    for name, build in (("llama", llama), ("gpt2", gpt2), ("conv", convnet), ("unet", unet)):
        save(state_dict(build()), OUT / f"{name}_base.safetensors")


def peft_adapters() -> None:
    adapter(llama, "llama_lora", 1, r=4, lora_alpha=8, target_modules=LLAMA_ALL)
    adapter(llama, "llama_bin", 2, safe=False, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    adapter(llama, "llama_rslora", 3, r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "v_proj"])
    adapter(llama, "llama_patterns", 4, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
            rank_pattern={"q_proj": 8}, alpha_pattern={"layers.1.self_attn.v_proj": 32})
    adapter(llama, "llama_layers", 5, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
            layers_to_transform=[1])
    adapter(llama, "llama_dora", 6, r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"])
    adapter(llama, "llama_embed", 7, r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"],
            modules_to_save=["lm_head"])
    adapter(llama, "llama_untrained", 8, train=False, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    adapter(gpt2, "gpt2_lora", 9, r=4, lora_alpha=8, fan_in_fan_out=True,
            target_modules=["c_attn", "c_proj", "c_fc"])
    adapter(convnet, "conv_lora", 10, r=2, lora_alpha=4, target_modules=["conv1", "conv2", "head"])
    adapter(convnet, "conv_dora", 11, r=2, lora_alpha=4, use_dora=True, target_modules=["conv1", "conv2"])


def diffusers_and_kohya() -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    model = unet()
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1"]))
    perturb(model, 12)
    sd = get_peft_model_state_dict(model)
    folder = OUT / "diffusers"
    folder.mkdir(exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=sd,
                                              unet_lora_adapter_metadata=model.peft_config["default"].to_dict())
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in sd.items()})
    kohya = {k: (torch.tensor(8.0) if k.endswith(".alpha") else v) for k, v in kohya.items()}
    save(kohya, OUT / "kohya_lora.safetensors",
         {"ss_network_dim": "4", "ss_network_alpha": "8.0", "ss_network_module": "networks.lora"})
    save({k: v for k, v in kohya.items() if not k.endswith(".alpha")}, OUT / "kohya_noalpha.safetensors",
         {"ss_network_module": "networks.lora"})


def fault(name: str, edit_tensors=None, edit_config=None) -> None:
    src, dst = OUT / "llama_lora", OUT / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    if edit_config is not None:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        edit_config(cfg)
        (dst / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if edit_tensors is not None:
        path = dst / "adapter_model.safetensors"
        save(edit_tensors(load(path)), path)


def faults() -> None:
    p = "base_model.model.model.layers."
    fault("fault_rank", edit_config=lambda c: c.update(r=8))
    fault("fault_zero3", lambda t: {k: torch.empty(0, dtype=v.dtype) for k, v in t.items()})
    fault("fault_target", edit_config=lambda c: c.update(target_modules=sorted(c["target_modules"] + ["gate_projj"])))
    fault("fault_missing", lambda t: {k: v for k, v in t.items() if not k.startswith(p + "1.mlp.up_proj.")})
    fault("fault_shape", lambda t: {k: (torch.zeros(24, 4) + 0.01 if k == p + "0.self_attn.k_proj.lora_B.weight"
                                        else v) for k, v in t.items()})
    fault("fault_ab", lambda t: {k: (v[:, :2] if k == p + "0.self_attn.o_proj.lora_B.weight" else v)
                                 for k, v in t.items()})
    fault("fault_prefix", lambda t: {k.replace("base_model.model.model.", "base_model.model.model.language_model."): v
                                     for k, v in t.items()})


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        # PEFT writes target_modules from a set: a fixed hash seed keeps the files byte-identical
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    warnings.filterwarnings("ignore")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    bases()
    peft_adapters()
    diffusers_and_kohya()
    faults()
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {sum(1 for f in OUT.rglob('*') if f.is_file())} files, {total:,} bytes, to {OUT}")


if __name__ == "__main__":
    main()

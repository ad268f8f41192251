"""What an adapter's configuration says: :class:`AdapterInfo`, parsed from PEFT's
``adapter_config.json``, from diffusers' ``lora_adapter_metadata`` or from kohya's
``ss_network_*`` metadata, and PEFT's rules for reading it.

The rules follow PEFT (``tuners/tuners_utils.py::check_target_module_exists``,
``utils/other.py::get_pattern_key``): a list target matches a module name exactly or as a
suffix after a dot, a string target by ``re.fullmatch``; ``rank_pattern`` / ``alpha_pattern``
keys match by ``re.match(rf"(.*\\.)?({key})$", name)``; the scale is ``alpha / r``, or
``alpha / sqrt(r)`` with ``use_rslora``. Nothing here reads tensors or imports torch.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields, replace

from ..errors import CorruptFileError, message
from ..render import fmt_float

CONFIG_NAME = "adapter_config.json"
METHODS = ("lora", "dora")          # what weightviz.adapters analyses; other peft_types are listed


@dataclass(frozen=True)
class AdapterInfo:
    """The adapter's own description: method, rank, alpha, scale, targets, base model.

    ``naming`` is the key layout of the file ('peft', 'diffusers' or 'kohya'); ``components``
    holds one AdapterInfo per diffusers component (``unet``, ``text_encoder`` ...) when the
    file has several; ``notes`` says what was assumed (an alpha the file does not store).
    """
    method: str
    naming: str
    r: int | None = None
    alpha: float | None = None
    scale: float | None = None
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    target_modules: tuple | str | None = None
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    modules_to_save: tuple = ()
    exclude_modules: tuple | str | None = None
    layers_to_transform: tuple | int | None = None
    layers_pattern: tuple | str | None = None
    base_model_name_or_path: str | None = None
    revision: str | None = None
    peft_type: str | None = None
    task_type: str | None = None
    source: str = ""
    components: tuple = ()
    notes: tuple = ()

    __hash__ = None                     # dict fields: compare, don't hash

    @property
    def targets(self):
        """``target_modules``: a tuple of names, or one regular expression."""
        return self.target_modules

    def component(self, name: str) -> "AdapterInfo":
        """The configuration that governs a module (diffusers: by its component prefix)."""
        for prefix, info in self.components:
            if name == prefix or name.startswith(prefix + "."):
                return info
        return self

    def rank_for(self, name: str) -> int | None:
        """The rank PEFT gives module ``name``: ``rank_pattern`` first, else ``r``."""
        key = pattern_key(self.rank_pattern, name)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, name: str) -> float | None:
        key = pattern_key(self.alpha_pattern, name)
        return float(self.alpha_pattern[key]) if key is not None else self.alpha

    def scale_for(self, r: int | None, alpha: float | None) -> float | None:
        if not r or alpha is None:
            return None
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def summary(self) -> str:
        """One line for a checkpoint's display."""
        label = {"lora": "LoRA", "dora": "DoRA"}.get(self.method, self.method)
        parts = [f"{label} ({self.naming})"]
        if self.r is not None:
            parts.append(f"r {self.r}")
        if self.alpha is not None:
            parts.append(f"alpha {fmt_float(self.alpha)}")
        if self.scale is not None:
            parts.append(f"scale {fmt_float(self.scale)}" + (" (rsLoRA)" if self.use_rslora else ""))
        if self.target_modules:
            t = self.target_modules
            parts.append("targets " + (repr(t) if isinstance(t, str) else ", ".join(t)))
        if self.modules_to_save:
            parts.append("saves " + ", ".join(self.modules_to_save))
        if self.components:
            parts.append("components " + ", ".join(p for p, _ in self.components))
        if self.base_model_name_or_path:
            base = self.base_model_name_or_path
            parts.append(f"base {base}" + (f" @ {self.revision}" if self.revision else ""))
        return "; ".join(parts)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("method", "naming") or (v not in (None, (), {}, "", False)):
                if isinstance(v, dict):
                    v = dict(sorted(v.items()))
                elif f.name == "components":
                    v = tuple(p for p, _ in v)
                shown.append(f"{f.name}={v!r}")
        return "AdapterInfo(" + ", ".join(shown) + ")"


# ---------------------------------------------------------------- PEFT's matching rules
def pattern_key(patterns: dict, name: str) -> str | None:
    """The ``rank_pattern`` / ``alpha_pattern`` key that governs ``name`` (PEFT's
    ``get_pattern_key``: the first key with ``re.match(rf"(.*\\.)?({key})$", name)``)."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", name):
                return key
        except re.error:
            continue
    return None


def target_matches(info: AdapterInfo, name: str) -> bool:
    """Would PEFT put an adapter on module ``name``? (``check_target_module_exists``)."""
    ex = info.exclude_modules
    if ex:
        if isinstance(ex, str):
            if _fullmatch(ex, name):
                return False
        elif name in ex or any(name.endswith("." + e) for e in ex):
            return False
    if any(_match(rf"(^|.*\.){m}($|\..*)", name) for m in info.modules_to_save):
        return False
    t = info.target_modules
    if not t:
        return False
    if isinstance(t, str):
        return _fullmatch(t, name)
    if name in t:
        return True
    if not any(name.endswith("." + k) for k in t):
        return False
    return _layer_ok(info, name)


def target_hits(info: AdapterInfo, target: str, name: str) -> bool:
    """Does the single list entry ``target`` match ``name`` (for 'matched nothing')?"""
    return name == target or name.endswith("." + target)


def _layer_ok(info: AdapterInfo, name: str) -> bool:
    idx = info.layers_to_transform
    if idx is None or (isinstance(idx, tuple) and not idx):
        return True
    pats = info.layers_pattern
    if not pats:
        m = _match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
    else:
        m = None
        for p in ([pats] if isinstance(pats, str) else pats):
            m = _match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", name)
            if m:
                break
    if not m:
        return False
    i = int(m.group("idx"))
    return i == idx if isinstance(idx, int) else i in idx


def _match(pattern: str, name: str):
    """``re.match``, a pattern from the config that is no valid expression matching nothing."""
    try:
        return re.match(pattern, name)
    except re.error:
        return None


def _fullmatch(pattern: str, name: str) -> bool:
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


# ---------------------------------------------------------------- parsing
def load_config(raw: bytes, where: str) -> dict:
    """``adapter_config.json`` bytes -> dict, or a CorruptFileError in the house words."""
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptFileError(message(
            f"{where} is not valid JSON",
            expected="the adapter_config.json that PEFT's save_pretrained writes (a JSON object)",
            fix="save the adapter again with model.save_pretrained(folder), or restore the file",
            got=f"{type(exc).__name__}: {str(exc)[:160]}; the file begins {raw[:60]!r}")) from None
    if not isinstance(obj, dict):
        raise CorruptFileError(message(
            f"{where} holds a JSON {type(obj).__name__}, not an object",
            expected="a JSON object with r, lora_alpha, target_modules ...",
            fix="save the adapter again with model.save_pretrained(folder)", got=repr(obj)[:120]))
    return obj


def from_config(cfg: dict, *, naming: str, where: str, source: str) -> AdapterInfo:
    """An AdapterInfo from a PEFT LoraConfig dict (``adapter_config.json`` or diffusers' metadata)."""
    def bad(what, got):
        return CorruptFileError(message(
            f"{where}: {what}", expected="a LoraConfig as PEFT writes it",
            fix="save the adapter again with save_pretrained, or correct the field", got=repr(got)[:160]))

    peft_type = cfg.get("peft_type", "LORA")
    if not isinstance(peft_type, str):
        raise bad("peft_type is not a string", peft_type)
    is_lora = peft_type.upper() == "LORA"
    r = cfg.get("r")
    if is_lora or r is not None:
        if type(r) is not int or r <= 0:
            raise bad("r (the rank) must be a positive integer", r)
    alpha = cfg.get("lora_alpha", r if is_lora else None)
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not math.isfinite(alpha)):
        raise bad("lora_alpha must be a number", alpha)
    targets = cfg.get("target_modules")
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        targets = tuple(sorted(targets))
    elif targets is not None and not isinstance(targets, str):
        raise bad("target_modules must be a list of names or a regular expression", targets)
    saved = _strs(cfg.get("modules_to_save"), "modules_to_save", bad)
    if not targets and not cfg.get("target_parameters") and not saved and is_lora:
        raise CorruptFileError(message(
            f"{where} names no target modules",
            expected="target_modules: a list of module names (['q_proj', 'v_proj']) or a regular "
                     "expression, as LoraConfig(target_modules=...) was given",
            fix="write the targets the adapter was trained with into target_modules",
            got=f"target_modules={cfg.get('target_modules')!r}"))
    patterns = {}
    for key in ("rank_pattern", "alpha_pattern"):
        pat = cfg.get(key) or {}
        if not isinstance(pat, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in pat.items()):
            raise bad(f"{key} must map module patterns to numbers", pat)
        patterns[key] = dict(pat)
    layers = cfg.get("layers_to_transform")
    if isinstance(layers, list) and all(type(i) is int for i in layers):
        layers = tuple(layers)
    elif layers is not None and type(layers) is not int:
        raise bad("layers_to_transform must be an integer or a list of them", layers)
    pattern = cfg.get("layers_pattern")
    pattern = tuple(pattern) if isinstance(pattern, list) else pattern
    ex = cfg.get("exclude_modules")
    ex = tuple(sorted(ex)) if isinstance(ex, list) else ex if isinstance(ex, str) else None
    rslora = cfg.get("use_rslora") is True
    info = AdapterInfo(
        method=("dora" if cfg.get("use_dora") is True else "lora") if is_lora else peft_type.lower(),
        naming=naming, r=r, alpha=None if alpha is None else float(alpha),
        use_rslora=rslora, fan_in_fan_out=cfg.get("fan_in_fan_out") is True,
        target_modules=targets, rank_pattern=patterns["rank_pattern"],
        alpha_pattern=patterns["alpha_pattern"], modules_to_save=saved, exclude_modules=ex,
        layers_to_transform=layers, layers_pattern=pattern,
        base_model_name_or_path=_str(cfg.get("base_model_name_or_path")),
        revision=_str(cfg.get("revision")), peft_type=peft_type,
        task_type=_str(cfg.get("task_type")), source=source)
    return replace(info, scale=info.scale_for(r, info.alpha))


def _strs(v, key, bad) -> tuple:
    if v is None:
        return ()
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise bad(f"{key} must be a list of module names", v)


def _str(v) -> str | None:
    return v if isinstance(v, str) and v else None


def from_diffusers(meta: dict, where: str) -> AdapterInfo | None:
    """diffusers' ``__metadata__["lora_adapter_metadata"]``: one LoraConfig per component, its
    keys prefixed with the component (``unet.r``, ``text_encoder.lora_alpha`` ...)."""
    raw = meta.get("lora_adapter_metadata")
    if raw is None:
        return None
    cfg = load_config(raw.encode("utf-8"), f"{where} (lora_adapter_metadata)")
    if "r" in cfg:
        return from_config(cfg, naming="diffusers", where=where, source="lora_adapter_metadata")
    parts: dict[str, dict] = {}
    for k, v in cfg.items():
        comp, dot, key = k.partition(".")
        if dot:
            parts.setdefault(comp, {})[key] = v
    if not parts:
        return None
    comps = tuple((c, from_config(parts[c], naming="diffusers", where=f"{where} ({c})",
                                  source="lora_adapter_metadata")) for c in sorted(parts))
    main = next((i for c, i in comps if c in ("unet", "transformer")), comps[0][1])
    return replace(main, components=comps)


def from_names(naming: str, meta: dict, ranks: set[int], has_alpha: bool) -> AdapterInfo:
    """A file with no LoraConfig: kohya / sd-scripts (``ss_network_dim`` / ``ss_network_alpha``
    metadata, a ``.alpha`` tensor per module) or a diffusers file without
    ``lora_adapter_metadata``. The per-module ``.alpha`` tensors govern each module (read by
    :mod:`weightviz.adapters`); without them alpha = rank, as kohya's and diffusers' loaders assume."""
    def number(key):
        try:
            x = float(meta.get(key, ""))
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) else None
    dim = number("ss_network_dim")
    r = int(dim) if dim and dim.is_integer() and dim > 0 else (next(iter(ranks)) if len(ranks) == 1 else None)
    alpha = number("ss_network_alpha") if has_alpha else None
    notes = () if has_alpha else (
        "no .alpha tensors: alpha = rank for every module (scale 1), as kohya's and diffusers' "
        "loaders assume",)
    source = "ss_network_* metadata" if dim else "key names"
    info = AdapterInfo(method="lora", naming=naming, r=r, alpha=alpha,
                       base_model_name_or_path=_str(meta.get("ss_sd_model_name")),
                       source=source, notes=notes)
    return replace(info, scale=info.scale_for(r, alpha if has_alpha else (float(r) if r else None)))

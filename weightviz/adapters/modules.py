"""An adapter's tensors grouped into adapted modules, and how each fits its base layer.

Key layouts (the module name is what precedes the suffix):

- PEFT / new diffusers: ``<m>.lora_A.weight`` (r, in), ``<m>.lora_B.weight`` (out, r), the
  adapter name possibly kept (``lora_A.default.weight``), ``lora_B.bias``,
  ``lora_embedding_A`` (r, num_embeddings) / ``lora_embedding_B`` (dim, r), DoRA's
  ``lora_magnitude_vector``; PEFT's own names start with ``base_model.model.``, which is no
  part of the module's name in the base model;
- old diffusers: ``<m>.lora.down.weight`` / ``.lora.up.weight``, ``lora_linear_layer``,
  ``to_q_lora.down``; a scalar ``<m>.alpha`` where a file carries one;
- kohya / sd-scripts: ``lora_unet_<path with _>.lora_down.weight`` / ``.lora_up.weight`` /
  ``.alpha``, DoRA's ``.dora_scale``.

Every other tensor is stored whole: ``modules_to_save`` layers, and ``<m>.base_layer.weight``,
the copy of an embedding PEFT saves beside its adapter (``save_embedding_layers``), which it
loads over the base's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..checkpoint import TensorEntry, layer_of
from ..errors import WeightvizError, message
from ..render import fmt_shape

PEFT_PREFIX = "base_model.model."
_ROLES = [
    (re.compile(r"^(?P<m>.+)\.lora_A(?:\.[^.]+)?\.weight$"), "A"),
    (re.compile(r"^(?P<m>.+)\.lora_B(?:\.[^.]+)?\.weight$"), "B"),
    (re.compile(r"^(?P<m>.+)\.lora_B(?:\.[^.]+)?\.bias$"), "bias"),
    (re.compile(r"^(?P<m>.+)\.lora_embedding_A(?:\.[^.]+)?$"), "EA"),
    (re.compile(r"^(?P<m>.+)\.lora_embedding_B(?:\.[^.]+)?$"), "EB"),
    (re.compile(r"^(?P<m>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$"), "magnitude"),
    (re.compile(r"^(?P<m>.+)\.lora(?:_linear_layer)?\.down\.weight$"), "A"),
    (re.compile(r"^(?P<m>.+)\.lora(?:_linear_layer)?\.up\.weight$"), "B"),
    (re.compile(r"^(?P<m>.+)_lora\.down\.weight$"), "A"),
    (re.compile(r"^(?P<m>.+)_lora\.up\.weight$"), "B"),
    (re.compile(r"^(?P<m>.+)\.lora_down\.weight$"), "A"),
    (re.compile(r"^(?P<m>.+)\.lora_up\.weight$"), "B"),
    (re.compile(r"^(?P<m>.+)\.dora_scale$"), "magnitude"),
    (re.compile(r"^(?P<m>.+)\.alpha$"), "alpha"),
    (re.compile(r"^(?P<m>.+)\.base_layer\.(?P<t>weight|bias)$"), "copy"),
    (re.compile(r"^(?P<m>.+)\.(?P<t>lora_mid|hada_\w+|lokr_\w+|oft_\w+|ia3_\w+)(?:\.[^.]+)*$"), "other"),
]
_UNSUPPORTED = {"lora_mid": "LoCon/Tucker (lora_mid)", "hada": "LoHa (hada_*)",
                "lokr": "LoKr (lokr_*)", "oft": "OFT (oft_*)", "ia3": "IA3 (ia3_*)"}


@dataclass
class Module:
    """One adapted module (or one stored-whole module) of the adapter."""
    name: str                       # in the adapter's namespace (PEFT's base_model.model. dropped)
    order: int
    A: TensorEntry | None = None
    B: TensorEntry | None = None
    bias: TensorEntry | None = None
    magnitude: TensorEntry | None = None
    alpha: TensorEntry | None = None
    embedding: bool = False
    saved: dict = field(default_factory=dict)     # tensor suffix -> entry (stored whole)
    copy: dict = field(default_factory=dict)      # base_layer.<t> -> entry (save_embedding_layers)
    keys: list = field(default_factory=list)

    @property
    def is_lora(self) -> bool:
        return self.A is not None or self.B is not None

    @property
    def rank(self) -> int | None:
        return self.A.shape[0] if self.A is not None and self.A.shape else (
            self.B.shape[1] if self.B is not None and len(self.B.shape) > 1 else None)

    def tensors(self) -> list[TensorEntry]:
        out = [t for t in (self.A, self.B, self.bias, self.magnitude, self.alpha) if t is not None]
        return out + list(self.saved.values()) + list(self.copy.values())


def group(ckpt, naming: str) -> list[Module]:
    """The adapter's tensors as modules, in file order."""
    mods: dict[str, Module] = {}
    other: list[str] = []

    def mod(name):
        if naming == "peft" and name.startswith(PEFT_PREFIX):
            name = name[len(PEFT_PREFIX):]
        if name not in mods:
            mods[name] = Module(name, len(mods))
        return mods[name]

    for key, entry in ckpt.entries.items():
        for rx, role in _ROLES:
            m = rx.match(key)
            if m is None:
                continue
            if role == "other":
                t = m.group("t")
                other.append(f"{key} ({_UNSUPPORTED['lora_mid' if t == 'lora_mid' else t.split('_')[0]]})")
                break
            target = mod(m.group("m"))
            target.keys.append(key)
            if role == "copy":
                target.copy[m.group("t")] = entry
            elif role in ("EA", "EB"):
                target.embedding = True
                setattr(target, role[1], entry)
            else:
                setattr(target, role, entry)
            break
        else:
            target = mod(layer_of(key))
            target.keys.append(key)
            target.saved[key[len(layer_of(key)):].lstrip(".")] = entry
    if other:
        raise WeightvizError(message(
            "this adapter is not LoRA: weightviz analyses LoRA and DoRA adapters only",
            expected="lora_A / lora_B (lora_down / lora_up) pairs",
            fix="open it with weightviz.open to list its tensors; check it with the library that made it",
            got=f"{len(other)} tensors such as {other[0]}"))
    for m in mods.values():         # a lone '.alpha' belongs to a stored-whole module
        if m.alpha is not None and not m.is_lora:
            m.saved["alpha"], m.alpha = m.alpha, None
    return list(mods.values())


# ---------------------------------------------------------------- one module against its base layer
@dataclass
class Fit:
    kind: str                       # linear, conv1d, conv, embedding
    transposed: bool                # ΔW = s · (B @ A)ᵀ in the weight's layout
    problems: list = field(default_factory=list)   # (status, note)


def fit(m: Module, wshape: tuple, *, fan_in_fan_out: bool, conv1d: bool | None = None) -> Fit:
    """Which layer kind the base weight is, and whether A, B and the magnitude fit it.

    A 2-D weight is read as Linear (out, in) or, when only that fits (or ``fan_in_fan_out`` /
    the module's class says so for a square one), as Conv1D (in, out): PEFT itself switches
    ``fan_in_fan_out`` to what the layer is.
    """
    A, B = m.A, m.B
    a, b = A.shape, B.shape
    nd = len(wshape)
    if m.embedding:
        kind, transposed = "embedding", True
        want_a = (a[0], wshape[0]) if nd == 2 else None
        want_b = (wshape[1], b[1] if len(b) > 1 else a[0]) if nd == 2 else None
    elif nd >= 3:
        kind, transposed = "conv", False
        want_a = (a[0], *wshape[1:])
        want_b = (wshape[0], a[0], *([1] * (nd - 2)))
    elif nd == 2:
        lin = len(a) == 2 and len(b) == 2 and a[1] == wshape[1] and b[0] == wshape[0]
        c1d = len(a) == 2 and len(b) == 2 and a[1] == wshape[0] and b[0] == wshape[1]
        as_c1d = (c1d and not lin) or (c1d and (conv1d if conv1d is not None else fan_in_fan_out))
        if not lin and not c1d:
            as_c1d = conv1d if conv1d is not None else fan_in_fan_out
        kind, transposed = ("conv1d", True) if as_c1d else ("linear", False)
        out_f, in_f = (wshape[1], wshape[0]) if as_c1d else wshape
        want_a, want_b = (a[0], in_f), (out_f, a[0])
    else:
        return Fit("?", False, [("shape_differs", f"the base weight has shape {tuple(wshape)}: "
                                 "not a Linear, Conv or Embedding weight")])
    out = Fit(kind, transposed)
    if len(b) >= 2 and len(a) >= 1 and b[1] != a[0]:
        out.problems.append(("rank_differs", f"{_role(m, 'A')} holds rank {a[0]} but "
                                             f"{_role(m, 'B')} rank {b[1]}"))
        return out
    bad = []
    if want_a is not None and tuple(a) != tuple(want_a):
        bad.append(f"{_role(m, 'A')} {fmt_shape(a)}, expected {fmt_shape(want_a)}")
    if want_b is not None and tuple(b) != tuple(want_b):
        bad.append(f"{_role(m, 'B')} {fmt_shape(b)}, expected {fmt_shape(want_b)}")
    if m.magnitude is not None and m.magnitude.numel != b[0]:
        bad.append(f"magnitude {fmt_shape(m.magnitude.shape)}, expected {b[0]} values")
    if bad:
        out.problems.append(("shape_differs", "; ".join(bad) + f" for the base {fmt_shape(wshape)}"))
    return out


def _role(m: Module, which: str) -> str:
    if m.embedding:
        return f"lora_embedding_{which}"
    return "lora_A" if which == "A" else "lora_B"


def empty_tensors(m: Module) -> list[TensorEntry]:
    """Tensors with no elements: what DeepSpeed ZeRO-3 leaves when parameters are saved
    without gathering them (``torch.Size([0])``)."""
    return [t for t in m.tensors() if t.numel == 0 and t is not m.alpha]

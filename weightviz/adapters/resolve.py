"""Adapter module names -> base module names, and a rename to propose when they do not land.

The naming scheme's own structure is read silently, as the loaders do: a diffusers component
(``unet.``, ``text_encoder.`` ...) the base may not carry; kohya's ``lora_unet_`` /
``lora_te1_`` names, whose dots became underscores (looked up against the base's names with
their dots replaced, the component's usual prefixes preferred). Anything else that does not
land (a wrapper prefix, a parent module transformers renamed, ``model.language_model.`` for
``model.``) is *not* fixed: PEFT would not load those keys either. The longest tail shared
with exactly one base module proposes a prefix rule (``'model.language_model.' -> 'model.'``),
rules are kept when they land modules, and ``rename=`` applies them.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "prior",
              "decoder", "controlnet", "vae")
_KOHYA_PREFERRED = {"unet": ("unet.", "model.diffusion_model."),
                    "te": ("text_encoder.", "cond_stage_model.", "conditioner.embedders.0."),
                    "te1": ("text_encoder.", "conditioner.embedders.0."),
                    "te2": ("text_encoder_2.", "conditioner.embedders.1."),
                    "te3": ("text_encoder_3.",), "transformer": ("transformer.",)}


def kohya_split(name: str) -> tuple[str, str]:
    """``lora_unet_down_blocks_0_x`` -> ('unet', 'down_blocks_0_x')."""
    rest = name[len("lora_"):] if name.startswith("lora_") else name
    comp, _, body = rest.partition("_")
    return comp, body


def apply_rename(name: str, rename) -> str:
    """A ``{old prefix: new prefix}`` mapping (longest prefix first) or a callable."""
    if rename is None:
        return name
    if callable(rename):
        out = rename(name)
        return name if out is None else str(out)
    for old in sorted(rename, key=len, reverse=True):
        if name.startswith(old):
            return rename[old] + name[len(old):]
    return name


class Resolver:
    """Base module names (``layer_of`` of every tensor) and the lookups the namings need."""

    def __init__(self, base_names, naming: str):
        self.naming = naming
        self.layers: dict[str, list[str]] = {}
        for n in base_names:
            cut = n.rfind(".")
            self.layers.setdefault(n[:cut] if cut > 0 else n, []).append(n)
        self._under = None

    def has(self, module: str) -> bool:
        return module in self.layers

    def weight(self, module: str) -> str | None:
        w = module + ".weight"
        return w if w in self.layers.get(module, ()) else None

    # -- the naming scheme's own structure ---------------------------------------------
    def structural(self, name: str) -> tuple[str | None, str | None]:
        """(base module, how) when the name lands as the scheme intends, else (None, None)."""
        if self.naming == "kohya" and name.startswith("lora_"):
            return self._kohya(name)
        if name in self.layers:
            return name, None
        comp, dot, rest = name.partition(".")
        if dot and comp in COMPONENTS and rest in self.layers:
            return rest, f"the base is the {comp} alone: '{comp}.' read off"
        return None, None

    def _kohya(self, name: str):
        if self._under is None:
            self._under, tails = {}, {}
            for m in self.layers:
                segs = m.split(".")
                for j in range(len(segs)):
                    tails.setdefault("_".join(segs[j:]), []).append(m)
            self._under = tails
        comp, body = kohya_split(name)
        cands = self._under.get(body, [])
        if len(cands) > 1:
            exact = [m for m in cands if m.replace(".", "_") == body]
            pref = [m for m in cands if m.startswith(_KOHYA_PREFERRED.get(comp, ("\0",)))]
            cands = exact if len(exact) == 1 else pref
        if len(cands) == 1:
            return cands[0], None
        return None, None

    # -- proposals ---------------------------------------------------------------------
    def propose(self, names: list[str], taken: set[str]) -> tuple[dict[str, str], dict[str, str]]:
        """For names that did not land: {name: base module} and the prefix rules {old: new}
        behind them (each rule kept only when the module it proposes is free and unique)."""
        tails: dict[str, list[str]] = {}
        for m in self.layers:
            if m in taken:
                continue
            segs = m.split(".")
            for j in range(len(segs)):
                tails.setdefault(".".join(segs[j:]), []).append(m)
        votes: Counter = Counter()
        best: dict[str, tuple[str, str]] = {}
        for n in names:
            segs = n.split(".")
            for j in range(len(segs)):
                hit = tails.get(".".join(segs[j:]))
                if hit and len(hit) == 1:
                    tail = ".".join(segs[j:])
                    rule = (n[:len(n) - len(tail)], hit[0][:len(hit[0]) - len(tail)])
                    best[n] = rule
                    votes[rule] += 1
                    break
        rules: dict[str, str] = {}
        out: dict[str, str] = {}
        used: set[str] = set()
        for (old, new), _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])):
            if old in rules:
                continue
            landed = {n: new + n[len(old):] for n in names
                      if n not in out and n.startswith(old) and self.has(new + n[len(old):])
                      and new + n[len(old):] not in taken and new + n[len(old):] not in used}
            if landed:
                rules[old] = new
                out.update(landed)
                used.update(landed.values())
        return out, rules


def inverse(rules: dict[str, str] | Callable | None) -> Callable[[str], str]:
    """Base name -> the adapter's namespace, undoing prefix rules (identity for a callable)."""
    if not rules or callable(rules):
        return lambda n: n
    back = {new: old for old, new in rules.items()}
    return lambda n: apply_rename(n, back)

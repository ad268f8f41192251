"""Tensor names: matching checkpoint names to model names, and folding repeated layers.

Matching (:func:`match_names`), each step only among names still unmatched:

1. exact names;
2. ``rename=`` (a ``{checkpoint name: model name}`` mapping or a callable);
3. wrapper segments: ``module.`` (DataParallel/DDP), ``_orig_mod.`` (torch.compile) and
   ``_fsdp_wrapped_module.`` (FSDP), on either side, wherever they sit in the name;
4. a leading ``model.`` (Lightning and other wrappers), on either side;
5. any other leading prefix that turns at least two names into model names with
   identical shapes (``backbone.``, ``net.`` ...), on either side.

A pair only forms when it is unique on both sides. :func:`shape_order_guess` pairs
what is left by shape order, :func:`same_layer_guess` by layer and shape; both are only
suggestions. :func:`fold` turns
``layers.0.w`` ... ``layers.11.w`` into ``layers.{0..11}.w`` for display.
"""
from __future__ import annotations

import re
from typing import Callable

from ..checkpoint import layer_of

WRAPPERS = {"module": "DataParallel/DDP", "_orig_mod": "torch.compile",
            "_fsdp_wrapped_module": "FSDP"}
LEADING = {"model": "a wrapper attribute such as Lightning's"}


def _strip(name: str, segments) -> str:
    """The name without wrapper segments (the last segment, the tensor's own, is kept)."""
    parts = name.split(".")
    return ".".join([p for p in parts[:-1] if p not in segments] + parts[-1:])


def _rule_label(ckpt: str, model: str) -> str:
    cp, mp = ckpt.split(".")[:-1], model.split(".")[:-1]
    out = []
    for seg, why in {**WRAPPERS, **LEADING}.items():
        d = cp.count(seg) - mp.count(seg)
        if d > 0:
            out.append(f"strip '{seg}.' ({why})")
        elif d < 0:
            out.append(f"add '{seg}.' (the model is wrapped: {why})")
    return " + ".join(out) or "rename"


def _pair_by(key_c: Callable, key_m: Callable, free_c: list, free_m: list) -> dict[str, str]:
    """ckpt -> model pairs whose keys agree uniquely on both sides."""
    kc: dict[str, list] = {}
    for c in free_c:
        kc.setdefault(key_c(c), []).append(c)
    km: dict[str, list] = {}
    for m in free_m:
        km.setdefault(key_m(m), []).append(m)
    return {cs[0]: km[k][0] for k, cs in kc.items()
            if len(cs) == 1 and len(km.get(k, ())) == 1 and cs[0] != km[k][0]}


def match_names(ckpt_names: list[str], model_names: list[str], ckpt_shapes: dict,
                model_shapes: dict, rename=None) -> tuple[dict[str, str], dict[str, str]]:
    """ckpt -> model pairs (exact ones included) and ckpt -> rule labels for the renamed."""
    mset = set(model_names)
    pairs = {c: c for c in ckpt_names if c in mset}
    rules: dict[str, str] = {}

    def free():
        used = set(pairs.values())
        return [c for c in ckpt_names if c not in pairs], [m for m in model_names if m not in used]

    if rename is not None:
        fc, fm = free()
        fmset = set(fm)
        for c in fc:
            target = rename(c) if callable(rename) else rename.get(c)
            if target in fmset and target not in pairs.values():
                pairs[c], rules[c] = target, "your rename= mapping"
    wrap = set(WRAPPERS)
    steps = [
        (lambda n: _strip(n, wrap), lambda n: _strip(n, wrap)),
        (lambda n: _lead(_strip(n, wrap), "model."), lambda n: _strip(n, wrap)),
        (lambda n: _strip(n, wrap), lambda n: _lead(_strip(n, wrap), "model.")),
    ]
    for kc, km in steps:
        fc, fm = free()
        for c, m in _pair_by(kc, km, fc, fm).items():
            pairs[c], rules[c] = m, _rule_label(c, m)
    # any other leading prefix, with shapes as evidence
    for side in ("ckpt", "model"):
        fc, fm = free()
        src, other = (fc, set(fm)) if side == "ckpt" else (fm, set(fc))
        hits: dict[str, int] = {}
        for n in src:  # one pass: only prefixes that turn 2+ names into the other side's names
            head, dot, rest = n.partition(".")
            if dot and rest in other:
                hits[head + "."] = hits.get(head + ".", 0) + 1
        for p in sorted(h for h, k in hits.items() if k >= 2):
            fc, fm = free()
            if side == "ckpt":
                found = _pair_by(lambda n: _lead(n, p), lambda n: n, [c for c in fc if c.startswith(p)], fm)
            else:
                found = _pair_by(lambda n: n, lambda n: _lead(n, p), fc, [m for m in fm if m.startswith(p)])
            if len(found) >= 2 and all(ckpt_shapes[c] == model_shapes[m] for c, m in found.items()):
                why = (f"strip '{p}' (a leading prefix found by matching names)" if side == "ckpt"
                       else f"add '{p}' (the model's names carry it)")
                for c, m in found.items():
                    pairs[c], rules[c] = m, why
    return pairs, rules


def _lead(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


def shape_order_guess(fc: list[str], fm: list[str], cshape: dict, mshape: dict) -> dict[str, str]:
    """Unmatched names paired in order when the two shape sequences agree one for one."""
    if not fc or len(fc) != len(fm):
        return {}
    for c, m in zip(fc, fm):
        a, b = cshape[c], mshape[m]
        if a != b and not (len(a) == 2 and a == b[::-1]):
            return {}
    return dict(zip(fc, fm))


def same_layer_guess(fc: list[str], fm: list[str], cshape: dict, mshape: dict,
                     pairs: dict[str, str]) -> dict[str, str]:
    """Unmatched names of the same layer with the same shape, when the pair is unique on
    both sides (``bn1.gamma`` -> ``bn1.weight``). The checkpoint side is read through the
    prefix rules that already matched its neighbours (``module.`` ...)."""
    prefixes = {c[:len(c) - len(m)] for c, m in pairs.items() if c.endswith(m) and c != m}
    prefixes.discard("")

    def key_c(c):
        for p in sorted(prefixes, key=len, reverse=True):
            if c.startswith(p):
                c = c[len(p):]
                break
        return layer_of(c)
    groups: dict[tuple, tuple[list, list]] = {}
    for c in fc:
        groups.setdefault((key_c(c), cshape[c]), ([], []))[0].append(c)
    for m in fm:
        groups.setdefault((layer_of(m), mshape[m]), ([], []))[1].append(m)
    return {cs[0]: ms[0] for cs, ms in groups.values() if len(cs) == 1 and len(ms) == 1}


# -- folding repeated layers ----------------------------------------------------------
_NUM = re.compile(r"(?:(?<=^)|(?<=[./]))(\d+)(?=$|[./])")


def _spans(name: str) -> list[tuple[int, int]]:
    return [m.span(1) for m in _NUM.finditer(name)]


def _ranges(nums: list[int]) -> str:
    nums = sorted(set(nums))
    parts, start, prev = [], nums[0], nums[0]
    for n in nums[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else
                     f"{start},{prev}" if prev == start + 1 else f"{start}..{prev}")
        if n is not None:
            start = prev = n
    return "{" + ",".join(parts) + "}"


def _ckpt_template(name: str, span: tuple[int, int], ckpt: str) -> str | None:
    """The checkpoint name with the same number replaced, when both names end alike."""
    if not ckpt:
        return ckpt
    num, tail = name[span[0]:span[1]], name[span[1]:]
    end = len(ckpt) - len(tail)
    start = end - len(num)
    if start < 0 or not ckpt.endswith(tail) or ckpt[start:end] != num:
        return None
    if start > 0 and ckpt[start - 1] not in "./":
        return None
    return ckpt[:start] + "\0" + ckpt[end:]


def fold(cells: list[list]) -> list[list]:
    """Fold rows that differ only by one number in the name (``layers.{0..11}.w``).

    Each cell list is ``[status, name, ckpt_name, *rest]``; numbers folded in the
    name are folded at the same place in the checkpoint name.
    """
    rows = [(c, None) for c in cells]
    for _ in range(8):
        changed = False
        depth = max((len(_spans(c[1])) for c, _ in rows), default=0)
        for pos in range(depth):
            groups: dict[tuple, list] = {}
            order: list[tuple] = []
            for c, _ in rows:
                spans = _spans(c[1])
                if pos >= len(spans):
                    key = ("solo", id(c))
                    num = None
                else:
                    sp = spans[pos]
                    tmpl = c[1][:sp[0]] + "\0" + c[1][sp[1]:]
                    ck = _ckpt_template(c[1], sp, c[2])
                    key = (c[0], tmpl, ck if ck is not None else ("solo", id(c)), *c[3:])
                    num = int(c[1][sp[0]:sp[1]])
                if key not in groups:
                    groups[key] = []
                    order.append(key)
                groups[key].append((c, num))
            new = []
            for key in order:
                members = groups[key]
                if len(members) < 2:
                    new.append(members[0])
                    continue
                changed = True
                label = _ranges([n for _, n in members])
                first = members[0][0]
                folded = [first[0], key[1].replace("\0", label),
                          key[2].replace("\0", label) if first[2] else first[2], *first[3:]]
                new.append((folded, None))
            rows = new
        if not changed:
            break
    return [c for c, _ in rows]

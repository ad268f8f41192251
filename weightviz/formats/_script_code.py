"""Which attributes of a TorchScript module are its parameters and buffers.

A TorchScript archive pickles each module's attributes (``data.pkl``); which of them
are parameters and buffers is written only in the archive's generated code, one
``class X(Module):`` per module type with ``__parameters__ = [...]`` and
``__buffers__ = [...]`` lines (``code/__torch__/torch/nn/modules/linear.py`` defines
``__torch__.torch.nn.modules.linear.Linear``).  Those two lines are read as text, never run,
so a listing holds what ``module.state_dict()`` holds; other tensor attributes of a scripted
module (``self._state = torch.zeros(0)``) are kept apart.
"""
from __future__ import annotations

import re

from ._zip import read_member

CODE_MAX = 16 << 20          # bytes of generated code read per archive, in all
_CLASS = re.compile(r"^class\s+(\w+)\s*\(\s*Module\s*\)\s*:", re.M)
_LIST = re.compile(r"^\s+(__parameters__|__buffers__)\s*=\s*\[([^\]\n]*)\]", re.M)
_NAME = re.compile(r'"([^"\\]*)"')


def state_table(z, names: list[str], prefix: str, path: str) -> dict[str, tuple[str, ...]]:
    """Qualified class name -> its parameter and buffer names, from the archive's code."""
    table: dict[str, tuple[str, ...]] = {}
    budget = CODE_MAX
    root = prefix + "code/"
    for name in names:
        if not (name.startswith(root) and name.endswith(".py")):
            continue
        info = z.getinfo(name)
        if info.file_size > budget:
            break
        budget -= info.file_size
        text = read_member(z, info, CODE_MAX, path).decode("utf-8", "replace")
        module = name[len(root):-3].replace("/", ".")
        starts = [(m.start(), m.group(1)) for m in _CLASS.finditer(text)] + [(len(text), None)]
        for (a, cls), (b, _) in zip(starts, starts[1:]):
            found = {k: _NAME.findall(v) for k, v in _LIST.findall(text[a:b])}
            if found:
                table[f"{module}.{cls}"] = (tuple(found.get("__parameters__", ()))
                                            + tuple(found.get("__buffers__", ())))
    return table


def state_names(obj, table: dict, is_tensor, module_items) -> set[str] | None:
    """Dotted names of every parameter and buffer reachable from the root module ``obj``
    (a module whose class the table lacks keeps all its tensors); None without a table."""
    if not table:
        return None
    keep: set[str] = set()
    stack, seen = [("", obj)], set()
    while stack:
        prefix, mod = stack.pop()
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        items = module_items(mod) or []
        own = table.get(getattr(mod, "classname", None))
        for k, v in items:
            full = f"{prefix}{k}"
            if is_tensor(v):
                if own is None or k in own:
                    keep.add(full)
            elif module_items(v) is not None:
                stack.append((full + ".", v))
    return keep

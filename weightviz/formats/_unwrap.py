"""Finding the model's weights inside whatever a torch file holds.

Training loops save the weights next to counters, configs, schedulers and optimizer
state, under keys of their own choosing.  The model's container is found by structure:
an optimizer's state dict (a mapping with ``state`` and ``param_groups``, under any key,
or a list of them) is never the model; of the other values that hold tensors, a known
wrapper name (:data:`WRAPPERS`) wins, else the only one, else a name that says model or
weights; the search repeats one level deeper (``{"model": {"state_dict": ...}}``).
Everything else is kept apart, described in ``kept_apart``.

Works on both worlds: objects from ``torch.load(weights_only=True)`` and the
stand-ins of the recording unpickler (``is_tensor`` / ``module_children`` say
which). Walks are iterative, bounded, and de-duplicated by ``id()`` so shared
references and deep nesting cannot hang or overflow them.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..errors import CorruptFileError, message

# wrapper keys, most specific first; the first whose value holds tensors is the model
WRAPPERS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "module",
            "state_dict_ema", "model_ema", "ema", "model_ema_state_dict", "ema_state", "params",
            "weights")
_MODEL_WORDS = ("model", "state_dict", "weights", "params", "net", "ema")
from .limits import WALK_MAX_DEPTH as MAX_DEPTH, WALK_MAX_NODES as MAX_NODES  # noqa: E402


def _has_tensor(obj, is_tensor, module_items) -> bool:
    """Whether a tensor is reachable from obj (bounded, id-deduplicated)."""
    stack, seen, n = [obj], set(), 0
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        n += 1
        if n > MAX_NODES:
            return False
        if is_tensor(x):
            return True
        stack.extend(v for _, v in _children(x, module_items))
    return False


def _children(x, module_items):
    if isinstance(x, Mapping):
        return [(str(k), v) for k, v in x.items()]
    if isinstance(x, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(x)]
    items = module_items(x)
    return items if items is not None else []


def is_optimizer_state(x) -> bool:
    """An optimizer's ``state_dict()`` (any torch optimizer), or a list of them (Lightning)."""
    if isinstance(x, (list, tuple)):
        return bool(x) and all(is_optimizer_state(v) for v in x)
    return (isinstance(x, Mapping) and "state" in x and "param_groups" in x
            and isinstance(x["param_groups"], (list, tuple)))


def _count_tensors(obj, is_tensor, module_items) -> int:
    stack, seen, n = [obj], set(), 0
    while stack and len(seen) < MAX_NODES:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if is_tensor(x):
            n += 1
        else:
            stack.extend(v for _, v in _children(x, module_items))
    return n


def describe_extras(extras: dict, is_tensor, module_items=lambda x: None) -> dict:
    """key -> a short description of what was kept apart ("optimizer, 12 tensors")."""
    out = {}
    for k, v in extras.items():
        n = _count_tensors(v, is_tensor, module_items)
        what = "optimizer" if is_optimizer_state(v) else ""
        count = f"{n} tensor{'s' if n != 1 else ''}" if n else ""
        out[str(k)] = ", ".join(x for x in (what, count) if x)
    return out


def _model_key(obj, is_tensor, module_items):
    holders = [k for k, v in obj.items()
               if not is_optimizer_state(v) and _has_tensor(v, is_tensor, module_items)]
    key = next((k for k in WRAPPERS if k in holders), None)
    if key is None and len(holders) == 1:
        key = holders[0]
    if key is None:
        key = next((k for k in holders if any(w in str(k).lower() for w in _MODEL_WORDS)), None)
    return key


def unwrap(obj, is_tensor, module_items=lambda x: None, *, what="file"):
    """Split ``obj`` into (tensors by state-dict name, extras, unwrapped key path or None).

    ``module_items(x)`` returns the (name, value) children of a module-like object
    in state-dict order, or None when x is no module.
    """
    path: list[str] = []
    extras: dict = {}
    for _ in range(MAX_DEPTH):
        if (not isinstance(obj, Mapping) or is_optimizer_state(obj)
                or any(is_tensor(v) for v in obj.values())):
            break
        key = _model_key(obj, is_tensor, module_items)
        if key is None:
            break
        for k, v in obj.items():
            if k != key:
                extras[str(k) if not path else "/".join(path + [str(k)])] = v
        path.append(key)
        obj = obj[key]
    tensors: dict = {}
    leftovers: dict = {}
    _flatten(obj, is_tensor, module_items, tensors, leftovers, what)
    if leftovers:
        extras.setdefault("non_tensor_entries", {}).update(leftovers)
    return tensors, extras, ("/".join(path) or None)


def _flatten(obj, is_tensor, module_items, tensors, leftovers, what):
    if is_tensor(obj):                      # torch.save(tensor): one unnamed tensor
        tensors["tensor"] = obj
        return
    stack = [("", obj, 0)]
    seen: set[int] = set()
    count = 0
    while stack:
        prefix, x, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise CorruptFileError(message(
                f"{what} holds more than {MAX_NODES:,} objects", expected="a checkpoint of ordinary size",
                fix="this looks like a crafted file; do not trust it"))
        if is_tensor(x):
            tensors.setdefault(prefix, x)
            continue
        is_container = isinstance(x, (Mapping, list, tuple)) or module_items(x) is not None
        if not is_container:
            if prefix:
                leftovers[prefix] = x
            continue
        if id(x) in seen:
            continue               # a shared container: its tensors are listed once
        seen.add(id(x))
        if depth >= MAX_DEPTH:
            raise CorruptFileError(message(
                f"{what} nests containers more than {MAX_DEPTH} levels deep",
                expected="a state dict of ordinary depth", fix="this looks like a crafted file"))
        if prefix and not _has_tensor(x, is_tensor, module_items):
            leftovers[prefix] = x
            continue
        for name, v in reversed(_children(x, module_items)):
            stack.append((f"{prefix}.{name}" if prefix else name, v, depth + 1))

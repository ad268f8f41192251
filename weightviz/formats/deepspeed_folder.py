"""DeepSpeed ZeRO checkpoints (stages 1, 2, 3): a ``global_step*`` folder of per-rank model
and optimizer files, or its parent holding a ``latest`` file with the folder's name.

Parameters are listed from the rank-0 ``*model_states.pt`` alone (``param_shapes``,
``module``, ``buffer_names``, ``frozen_param_shapes``, ``shared_params``). Values:

* ZeRO-1/2: the ``module`` state dict in ``mp_rank_00_model_states.pt`` (the weights in
  their training dtype), memory-mapped; ``fp32=True`` reassembles the fp32 master weights
  from ``single_partition_of_fp32_groups`` of every ``*_optim_states.pt`` instead;
* ZeRO-3: the fp32 master weights, reassembled from ``fp32_flat_groups`` (each rank holds
  ceil(numel / world) elements of every parameter, padded) one parameter at a time.

Completeness is checked: the ranks' files against ``dp_world_size`` when the folder is
opened, ``partition_count`` and the partition sizes against the parameters when the
optimizer files are first read (only their pickles; data when a parameter is asked for).
Tensor-parallel (``mp_rank_01``…) and pipeline (``layer_*``) checkpoints are refused with
a clear message. Every file goes through the recording unpickler (:mod:`._deepspeed_states`).
"""
from __future__ import annotations

import os
import re
from functools import partial
from math import prod

from ..checkpoint import Checkpoint, TensorEntry
from ..errors import CorruptFileError, UnknownFormatError, capped, message
from ._deepspeed_states import Partitions, States, enum_value
from ._unpickle import TensorRecord
from .limits import DEEPSPEED_MAX_LATEST

MODEL3 = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt$")
MODEL12 = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")
OPTIM = re.compile(r"^(?:\w+_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
SPECIAL = ("module", "param_shapes", "buffer_names", "frozen_param_shapes",
           "frozen_param_fragments", "shared_params")


def is_step_folder(names) -> bool:
    return any(n.endswith("model_states.pt") for n in names)


def _step_folder(path: str) -> tuple[str, str | None]:
    """(the global_step folder, the tag read from ``latest`` or None)."""
    if is_step_folder(os.listdir(path)):
        return path, None
    latest = os.path.join(path, "latest")
    if os.path.getsize(latest) > DEEPSPEED_MAX_LATEST:
        raise CorruptFileError(message(f"{os.path.basename(path)}/latest is too large",
                                       expected="the name of a global_step folder"))
    with open(latest, "rb") as f:
        tag = f.read().decode("utf-8", "replace").strip()
    step = os.path.join(path, tag)
    if not tag or "/" in tag or "\\" in tag or tag in (".", "..") or not os.path.isdir(step):
        raise CorruptFileError(message(
            f"{os.path.basename(path)}/latest names {tag!r}, which is not a folder beside it",
            expected="the name of a global_step folder in the same folder",
            fix="pass the global_step folder itself", got=capped(sorted(os.listdir(path)))))
    return step, tag


def read(path, *, fp32: bool = False, **options) -> Checkpoint:
    folder, tag = _step_folder(os.path.abspath(os.fspath(path)))
    where = os.path.basename(folder)
    names = sorted(os.listdir(folder))
    if any(n.startswith("layer_") and n.endswith("model_states.pt") for n in names):
        raise UnknownFormatError(message(
            f"{where} is a DeepSpeed pipeline-parallel checkpoint (layer_*-model_states.pt)",
            expected="a ZeRO data-parallel checkpoint (mp_rank_00 / zero_pp_rank_* files)",
            fix="convert it with DeepSpeed's ds_to_universal.py first", got=capped(names)))
    m3 = {int(m.group(1)): n for n in names if (m := MODEL3.match(n)) and int(m.group(2)) == 0}
    m12 = [n for n in names if MODEL12.match(n)]
    optim = {int(m.group(1)): n for n in names if (m := OPTIM.match(n)) and int(m.group(2)) == 0}
    mp = {n for n in names if re.search(r"mp_rank_(?!00_)\d+_", n)}
    if mp:
        raise UnknownFormatError(message(
            f"{where} is a tensor-parallel DeepSpeed checkpoint ({len(mp)} files of mp_rank > 0)",
            expected="a ZeRO checkpoint with one model-parallel rank",
            fix="convert it with DeepSpeed's ds_to_universal.py first", got=capped(sorted(mp))))
    first = m3.get(0) or ("mp_rank_00_model_states.pt" if "mp_rank_00_model_states.pt" in m12 else None)
    if first is None:
        raise CorruptFileError(message(
            f"{where}: the rank-0 model states file is missing",
            expected="mp_rank_00_model_states.pt (ZeRO-1/2) or "
                     "zero_pp_rank_0_mp_rank_00_model_states.pt (ZeRO-3)",
            fix="copy the whole global_step folder", got=capped(names)))
    st = States(os.path.join(folder, first))
    sd = st.obj
    world = sd.get("dp_world_size")
    config = sd.get("ds_config") if isinstance(sd.get("ds_config"), dict) else {}
    zero = config.get("zero_optimization") if isinstance(config.get("zero_optimization"), dict) else {}
    stage = enum_value(zero.get("stage")) if m3.get(0) is None else 3
    if stage is None and optim.get(0):
        stage = enum_value(States(os.path.join(folder, optim[0])).obj.get(
            "optimizer_state_dict", {}).get("zero_stage"))
    if not isinstance(world, int) or world < 1 or stage not in (0, 1, 2, 3):
        raise CorruptFileError(message(f"{where}/{first} does not say its ZeRO stage and world size",
                                       got=f"dp_world_size={world!r}, stage={stage!r}"))
    _complete(where, folder, "optimizer", optim, world, required=stage == 3 or fp32)
    if stage == 3:
        _complete(where, folder, "model states", m3, world, required=True)
    optim_files = [os.path.join(folder, optim[r]) for r in sorted(optim)]
    parts = Partitions(optim_files, stage, world)
    module = sd.get("module") if isinstance(sd.get("module"), dict) else {}
    groups = [g for g in sd.get("param_shapes") or [] if isinstance(g, dict)]
    shapes = {str(k): tuple(v) for g in groups for k, v in g.items()}
    buffers = set(sd.get("buffer_names") or ())
    shared = {str(k): str(v) for k, v in (sd.get("shared_params") or {}).items()}
    frozen = {str(k): tuple(v) for k, v in (sd.get("frozen_param_shapes") or {}).items()}
    entries: dict = {}
    from_fp32 = stage == 3 or fp32
    order = list(map(str, module)) + [n for n in list(shapes) + list(frozen) if n not in module]
    for name in order:
        rec = module.get(name)
        if name in shapes and from_fp32:
            loader = partial(_param, parts, name, shapes, groups)
            entries[name] = TensorEntry(name, shapes[name], "float32", loader=loader)
        elif name in frozen and stage == 3:
            entries[name] = TensorEntry(name, frozen[name], _frozen_dtype(sd, name), loader=partial(
                _frozen3, [os.path.join(folder, m3[r]) for r in sorted(m3)], name, frozen[name]))
        elif name in shared and name not in shapes:
            continue                                        # an alias: after its source
        elif isinstance(rec, TensorRecord) and (prod(rec.size) or name not in shapes):
            entry = _module_entry(st, name, rec)
            if entry is not None:
                entries[name] = entry
    for name, src in shared.items():
        if name not in entries and src in entries:
            e = entries[src]
            entries[name] = TensorEntry(name, e.shape, e.dtype, loader=e._loader, location=e.location)
    entries = {n: entries[n] for n in order + list(shared) if n in entries}
    from .torch_file import _readable_extras
    state = _readable_extras({k: v for k, v in sd.items() if k not in SPECIAL}, st.path, st.locs)
    extras = {"training_state": state}
    kept = {"training_state": ", ".join(f"{k}={v}" if isinstance(v, (int, float, str)) else k
                                        for k, v in list(state.items())[:6])
            + (f", and {len(state) - 6} more" if len(state) > 6 else "")}
    if optim_files:
        extras["optimizer"] = (f"{len(optim_files)} *_optim_states.pt files: ZeRO partitions of the "
                               "fp32 master weights and the optimizer state")
        kept["optimizer"] = f"{len(optim_files)} files, " + ("read for the fp32 weights" if from_fp32
                                                             else "not loaded")
    source = "fp32 master partitions (*_optim_states.pt)" if from_fp32 else f"module weights ({first})"
    meta = {"reader": "recording unpickler (nothing imported or run)", "zero_stage": stage,
            "ranks": world, "files": [first] + sorted(set(m3.values()) - {first})
            + [os.path.basename(p) for p in optim_files], "values_from": source,
            "ds_version": sd.get("ds_version"), "classes": sorted(set(st.classes)),
            "kept_apart": kept}
    if tag:
        meta["latest"] = tag
    if fp32 and stage != 3:
        meta["reopen"] = {"fp32": True}        # Dask workers reopen the folder the same way
    meta["display"] = {"sharding": f"ZeRO-{stage}, {world} rank{'s' * (world != 1)}, "
                                   f"{len(meta['files'])} files" + (f" (latest: {tag})" if tag else ""),
                       "values from": source}
    return Checkpoint(entries, f"deepspeed-zero{stage}", path=folder, metadata=meta, extras=extras)


def _complete(where, folder, what, files: dict, world: int, required: bool) -> None:
    if not files and not required:
        return
    missing = [r for r in range(world) if r not in files]
    extra = sorted(r for r in files if r >= world)
    if missing or extra:
        raise CorruptFileError(message(
            f"{where}: the {what} files of rank{'s' * (len(missing) > 1)} "
            f"{capped(map(str, missing or extra))} are "
            + ("missing" if missing else "beyond the saved world size"),
            expected=f"one {what} file per rank for the {world} ranks (dp_world_size) that saved it",
            fix="copy the whole global_step folder; a checkpoint saved while a rank failed is partial",
            got=f"{len(files)} {what} files: {capped(sorted(files.values()))}"))


def _module_entry(st: States, name, rec):
    from .torch_file import _record_entry
    entry = _record_entry(name, rec, st.path, st.locs)
    return None if isinstance(entry, str) else entry


def _frozen_dtype(sd, name):
    frag = (sd.get("frozen_param_fragments") or {}).get(name)
    return frag.dtype if isinstance(frag, TensorRecord) else "float32"


def _param(parts: Partitions, name, shapes, groups):
    if parts.stage == 3:
        offset, part = parts.layout3(shapes, name)[name]
        return parts.read3(name, shapes[name], offset, part)
    return parts.read2(name, shapes[name], *parts.layout2(groups, name)[name])


def _frozen3(files, name, shape):
    """A frozen ZeRO-3 parameter: the ranks' fragments concatenated, cut to its size."""
    import numpy as np
    pieces = []
    for path in files:
        st = States(path)
        frag = (st.obj.get("frozen_param_fragments") or {}).get(name)
        if not isinstance(frag, TensorRecord):
            raise CorruptFileError(message(f"{os.path.basename(path)}: frozen parameter {name!r} "
                                           "has no fragment", fix="copy the whole folder again"))
        pieces.append(st.values(frag, tensor=name).reshape(-1))
    flat = np.concatenate(pieces)
    if flat.size < prod(shape):
        raise CorruptFileError(message(f"frozen parameter {name!r}: the ranks hold {flat.size:,} "
                                       f"of its {prod(shape):,} elements"))
    return flat[:prod(shape)].reshape(shape)

"""DeepSpeed's ``*_model_states.pt`` and ``*_optim_states.pt``, read by recording only, and
the ZeRO partition arithmetic that puts a parameter back together.

The files are ``torch.save`` archives that DeepSpeed itself reads with
``weights_only=False``: besides tensors they pickle a few of DeepSpeed's own classes
(the ``ZeroStageEnum`` of the optimizer state, ``fragment_address`` records, the loss
scaler). They go through the recording unpickler (nothing imported or called); the calls
of :data:`DATA_CLASSES` (an enum value, a record) are recorded as data, every other call
is refused as for any torch file. Tensors are located in the file and read from disk, one
parameter at a time (``deepspeed/utils/zero_to_fp32.py`` loads every partition at once).
"""
from __future__ import annotations

import os
from functools import partial
from math import ceil, prod

import numpy as np

from .. import dtypes
from ..errors import CorruptFileError, capped, message
from ._torch_span import array, read_span
from ._unpickle import Recorded, RecordingUnpickler, TensorRecord, record

# DeepSpeed classes whose *call* in a checkpoint only builds data: recorded, never imported
DATA_CLASSES = {
    "deepspeed.runtime.zero.config.ZeroStageEnum", "deepspeed.utils.tensor_fragment.fragment_address",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler", "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.offload_config.OffloadDeviceEnum", "deepspeed.runtime.config.DtypeEnum",
}


class _DataMeta(type):
    def __call__(cls, *args, **kwargs):          # REDUCE on a DeepSpeed data class: its arguments
        return cls.__new__(cls, *args)


class _Unpickler(RecordingUnpickler):
    REBUILDS = "tensors, containers and DeepSpeed's own data records"

    def _handler(self, module, name):
        full = f"{module}.{name}"
        if full in DATA_CLASSES:
            if full not in self._stubs:
                self._stubs[full] = _DataMeta(name, (Recorded,), {"_global": full, "_unpickler": self})
            return self._stubs[full]
        return super()._handler(module, name)


def bad(path, what, *, tensor=None, got=None) -> CorruptFileError:
    where = f" (parameter {tensor!r})" if tensor else ""
    return CorruptFileError(message(
        f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}{where}: {what}",
        expected="a complete DeepSpeed ZeRO checkpoint: every rank's model and optimizer files",
        fix="copy the whole global_step folder again; a checkpoint saved while a rank failed "
            "is partial", got=got))


class States:
    """One ``*_states.pt`` file: its recorded object and where its storages lie."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            self.obj, up, self.locs = read_span(fd, path, 0, size,
                                                recorder=partial(record, unpickler=_Unpickler))
        finally:
            os.close(fd)
        self.classes = list(up.classes)
        if not isinstance(self.obj, dict):
            raise bad(path, "it does not hold a dict", got=type(self.obj).__name__)

    def values(self, rec: TensorRecord, tensor=None, dest=None) -> np.ndarray:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return array(fd, self.path, rec, self.locs, tensor=tensor, dest=dest)
        finally:
            os.close(fd)


def enum_value(x):
    """The int of a recorded ``ZeroStageEnum(3)`` (or a plain int)."""
    if isinstance(x, Recorded):
        args = x.__dict__.get("_args") or ()
        return args[0] if args and isinstance(args[0], int) else None
    return x if isinstance(x, int) else None


def _flat(rec, path, what) -> TensorRecord:
    if not isinstance(rec, TensorRecord) or len(rec.size) != 1 or rec.dtype not in dtypes.ITEMSIZE_BITS:
        raise bad(path, f"{what} is not a flat tensor", got=repr(rec)[:100])
    return rec


class Partitions:
    """The fp32 master weights, partitioned over the ranks' ``*_optim_states.pt`` files;
    parsed on first use (the pickles only), then read one parameter at a time."""

    def __init__(self, files: list[str], stage: int, world: int):
        self.files, self.stage, self.world = files, stage, world
        self._ranks = None          # [(States, [flat group records])]
        self._layout = None         # name -> where its elements lie in the partitions

    def __getstate__(self):
        return {**self.__dict__, "_ranks": None, "_layout": None}

    def ranks(self, tensor=None):
        if self._ranks is None:
            out = []
            for path in self.files:
                st = States(path)
                osd = st.obj.get("optimizer_state_dict")
                if not isinstance(osd, dict):
                    raise bad(path, "no optimizer_state_dict", tensor=tensor)
                count = osd.get("partition_count")
                count = max(count) if isinstance(count, list) and count else count
                if count != len(self.files) or count != self.world:
                    raise bad(path, f"partition_count is {count!r} but {len(self.files)} optimizer "
                                    f"files are present for {self.world} ranks", tensor=tensor)
                key = "fp32_flat_groups" if self.stage == 3 else "single_partition_of_fp32_groups"
                groups = osd.get(key)
                if not isinstance(groups, list) or not groups:
                    raise bad(path, f"no {key} (ZeRO-{self.stage} keeps the fp32 weights there)",
                              tensor=tensor)
                out.append((st, [_flat(g, path, f"{key}[{i}]") for i, g in enumerate(groups)]))
            if len({len(g) for _, g in out}) != 1:
                raise bad(self.files[0], "the ranks hold different numbers of parameter groups",
                          tensor=tensor)
            self._ranks = out
        return self._ranks

    # -------------------------------------------------------------- ZeRO-3
    def layout3(self, shapes: dict, tensor=None) -> dict:
        """name -> (offset, partition numel) in every rank's concatenated flat groups."""
        if self._layout is not None:
            return self._layout
        ranks = self.ranks(tensor)
        sizes = [sum(g.size[0] for g in groups) for _, groups in ranks]
        out, offset = {}, 0
        for name, shape in shapes.items():
            part = ceil(prod(shape) / self.world)
            out[name] = (offset, part)
            offset += part
        if any(s != offset for s in sizes):
            raise bad(ranks[0][0].path, f"the parameters need {offset:,} elements per rank but "
                      f"the ranks hold {capped(f'{s:,}' for s in sizes)}", tensor=tensor)
        self._layout = out
        return out

    def read3(self, name, shape, offset, part) -> np.ndarray:
        ranks = self.ranks(name)
        flat = np.empty(part * self.world, dtype=dtypes.numpy_view_dtype(ranks[0][1][0].dtype))
        for r, (st, groups) in enumerate(ranks):
            _copy_range(st, groups, offset, part, flat[r * part:(r + 1) * part], name)
        return flat[:prod(shape)].reshape(shape)

    # -------------------------------------------------------------- ZeRO-1/2
    def layout2(self, groups_shapes: list, tensor=None) -> dict:
        """name -> (group, offset in the group's concatenated partitions, numel)."""
        if self._layout is not None:
            return self._layout
        ranks = self.ranks(tensor)
        paddings = (ranks[0][0].obj.get("optimizer_state_dict") or {}).get("param_alignment_paddings")
        if len(groups_shapes) != len(ranks[0][1]):
            raise bad(ranks[0][0].path, f"{len(groups_shapes)} groups of parameter shapes but "
                      f"{len(ranks[0][1])} fp32 partition groups", tensor=tensor)
        out, align = {}, 2 * self.world
        for g, shapes in enumerate(groups_shapes):
            avail = sum(groups[g].size[0] for _, groups in ranks)
            pads = paddings[g] if isinstance(paddings, list) and g < len(paddings) else None
            offset = 0
            for i, (name, shape) in enumerate(shapes.items()):
                out[name] = (g, offset, prod(shape))
                offset += prod(shape)
                if isinstance(pads, list) and i < len(pads) and isinstance(pads[i], int):
                    offset += pads[i]
            if align * ceil(offset / align) != align * ceil(avail / align) or offset > avail:
                raise bad(ranks[0][0].path, f"group {g}'s parameters need {offset:,} elements but "
                          f"its partitions hold {avail:,}", tensor=tensor)
        self._layout = out
        return out

    def read2(self, name, shape, group, offset, numel) -> np.ndarray:
        ranks = self.ranks(name)
        out = np.empty(numel, dtype=dtypes.numpy_view_dtype(ranks[0][1][group].dtype))
        pos = _gather([(st, groups[group]) for st, groups in ranks], offset, numel, out, name)
        if pos != numel:
            raise bad(ranks[0][0].path, f"the partitions hold {pos:,} of its {numel:,} elements",
                      tensor=name)
        return out.reshape(shape)


def _slice(st: States, rec: TensorRecord, start: int, n: int, name, dest=None) -> np.ndarray:
    sub = TensorRecord(rec.storage, rec.offset + start * rec.stride[0], (n,), rec.stride, rec.dtype)
    return st.values(sub, tensor=name, dest=dest)


def _gather(pieces, offset: int, n: int, dest, name) -> int:
    """Copy elements offset..offset+n of the concatenation of the 1-D ``pieces`` ((states,
    record) pairs) into ``dest``; returns how many elements the pieces held."""
    start = pos = 0
    for st, rec in pieces:
        size = rec.size[0]
        lo, hi = max(offset, start), min(offset + n, start + size)
        if lo < hi:
            _slice(st, rec, lo - start, hi - lo, name, dest[lo - offset:hi - offset])
            pos += hi - lo
        start += size
    return pos


def _copy_range(st, groups, offset, n, dest, name) -> None:
    """Elements offset..offset+n of the concatenation of ``groups`` (one rank) into dest."""
    pos = _gather([(st, rec) for rec in groups], offset, n, dest, name)
    if pos != n:
        raise bad(st.path, f"this rank's partition holds {pos:,} of {n:,} elements", tensor=name)

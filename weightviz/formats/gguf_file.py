"""GGUF files (llama.cpp, Ollama, LM Studio): listed from the header, data read on request.

**Shapes are shown in PyTorch/NumPy order.** GGUF stores a tensor's dimensions as ggml's
``ne``, fastest-varying first (``ne[0]`` is the row length); weightviz lists them reversed,
so a ``Linear(4096 -> 11008)`` weight stored as ne = [4096, 11008] is listed as
(11008, 4096), the model's own ``weight.shape``, and its data reads in C order in that
shape.

**Dtypes.** F32, F16, BF16, F64 and I8-I64 get weightviz's canonical names (``float32``,
``float16``, ``bfloat16``, ...), so they compare with torch and safetensors checkpoints;
their bytes are memory-mapped in place. Block-quantized types keep their GGUF names
(``Q8_0``, ``Q4_0``, ``Q4_K``, ``Q6_K``, ``IQ4_XS``, ...: :data:`weightviz.dtypes.QUANTIZED`),
and ``nbytes`` counts their blocks (``numel / block * block bytes``). ``raw()``, ``numpy()``
and ``torch()`` give such a tensor as float32, dequantized by the ``gguf`` package's own
``gguf.quants.dequantize``; a type it cannot dequantize (Q8_1, Q8_K, ...) is listed and named
in a :class:`WeightvizError` when its data is asked for. ``weightviz.stats`` reads a big
quantized tensor block range by block range (:meth:`QuantizedEntry.streamed`), so the scan
holds one chunk of float32, never the whole tensor, and flags it ``quantized``.

**Metadata.** Every key/value is in ``ckpt.metadata["kv"]``: scalars and strings as they are
(strings over 64 KiB cut), short arrays as lists, long ones (``tokenizer.ggml.tokens``,
scores, merges) as :class:`~._gguf_header.Array` (type, count), never their contents. The
summary (architecture, context length, file type, quantization version, tokenizer counts)
is ``metadata["display"]``, shown by the checkpoint's repr.

**Safety.** The header is parsed by :mod:`._gguf_header`, which checks every 64-bit count,
length and offset against the file before reading or allocating anything. ``gguf.GGUFReader``
is not used to list: it trusts the counts (a declared 2**64-element array loops for ever) and
builds a NumPy view per array element in Python (a 262,144-token vocabulary takes it 9 s,
this parser 0.03 s; 1,000 tensors: 54 ms against 7 ms); tests/test_formats_gguf.py checks
both list the same names, types, shapes, offsets and key/values.
"""
from __future__ import annotations

import os
import types as _types
from collections import Counter
from functools import lru_cache
from math import prod

import numpy as np

from .. import dtypes
from ..checkpoint import Checkpoint, DataLocation, TensorEntry, _empty
from ..errors import WeightvizError, message
from . import _gguf_header as _header
from . import _gguf_split as _split
from . import sniff as _sniff
from . import source as _source

PLAIN = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
         "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}
STREAM_BYTES = 64 << 20     # quantized tensors above this many float32 bytes are scanned in chunks
ROW = 4096                  # elements per row handed to gguf.quants.dequantize
SLAB_ROWS = 64              # rows dequantized per call (one slab: 256 Ki elements)


def sniff(head: bytes, path) -> bool:
    return _sniff.is_gguf(head)


def read(path, *, shards: bool = True, **options) -> Checkpoint:
    """The GGUF file at ``path``; a part of a split model brings all its parts (from the
    same folder: :mod:`._gguf_split`) unless ``shards=False``."""
    path = os.fspath(path)
    h = _header.parse(path, ggml_types())
    split = _split.parts(path, h, ggml_types()) if shards and _split.count(h) > 1 else [(path, h)]
    entries: dict = {}
    for p, ph in split:
        for t in ph.tensors:
            if t.name in entries:
                raise _header.bad(p, f"the tensor name {t.name!r} appears in two parts of the split model")
            entries[t.name] = _entry(p, t, ph.byte_order)
    first = split[0][1]
    meta = _metadata(first, entries)
    if len(split) > 1:
        declared = first.kv.get("split.tensors.count")
        if isinstance(declared, int) and declared != len(entries):
            raise _header.bad(path, f"its parts hold {len(entries):,} tensors, the first part declares "
                                    f"{declared:,}", got="parts of different models or a damaged part")
        meta["shards"] = [os.path.basename(p) for p, _ in split if p != path]    # besides path
        meta["display"]["split"] = (f"{len(split)} files, all read: {os.path.basename(split[0][0])} … "
                                    f"{os.path.basename(split[-1][0])}")
    return Checkpoint(entries, "gguf", path=path, metadata=meta)


@lru_cache(maxsize=1)
def ggml_types() -> dict:
    """ggml type code -> GGMLType(name, block, size), from the gguf package's own tables."""
    import gguf
    return {int(t): _header.GGMLType(t.name, *gguf.GGML_QUANT_SIZES[t])
            for t in gguf.GGMLQuantizationType if t in gguf.GGML_QUANT_SIZES}


@lru_cache(maxsize=None)
def can_dequantize(code: int) -> bool:
    """Whether gguf.quants.dequantize handles ggml type ``code`` (tried on one zero block)."""
    import gguf
    from gguf import quants
    t = ggml_types()[code]
    try:
        quants.dequantize(np.zeros((1, t.size), np.uint8), gguf.GGMLQuantizationType(code))
    except NotImplementedError:
        return False
    return True


def _entry(path: str, t, byte_order: str) -> TensorEntry:
    shape = tuple(reversed(t.ne))
    gt = ggml_types()[t.type]
    if gt.name in PLAIN:
        canon = PLAIN[gt.name]
        view = dtypes.numpy_view_dtype(canon).newbyteorder(byte_order)
        return TensorEntry(t.name, shape, canon, location=DataLocation(path, t.start, view))
    return QuantizedEntry(t.name, shape, gt.name, _Blocks(path, t, gt, byte_order == ">"))


# ---------------------------------------------------------------- quantized data

class _Blocks:
    """The quantized bytes of one tensor, dequantized block range by block range."""

    def __init__(self, path: str, info, gtype, big_endian: bool):
        self.path, self.start, self.code, self.gtype = path, info.start, info.type, gtype
        self.name, self.big_endian = info.name, big_endian
        self.shape = tuple(reversed(info.ne))
        self.numel = prod(info.ne)

    def readable(self) -> bool:
        return not self.big_endian and can_dequantize(self.code)

    def check(self):
        if self.big_endian:
            raise WeightvizError(message(
                f"tensor {self.name!r} is {self.gtype.name} in a big-endian GGUF file, whose blocks "
                "weightviz cannot dequantize", expected="a little-endian GGUF file for quantized data",
                fix="its header is listed; convert the file with llama.cpp's gguf_convert_endian.py "
                    "to read the values", got=f"{self.gtype.name}, big-endian"))
        if not can_dequantize(self.code):
            import importlib.metadata
            ok = sorted({ggml_types()[c].name for c in ggml_types() if can_dequantize(c)})
            raise WeightvizError(message(
                f"tensor {self.name!r} is stored as {self.gtype.name}, which the gguf package "
                f"({importlib.metadata.version('gguf')}) cannot dequantize",
                expected="one of the types gguf.quants.dequantize reads: " + ", ".join(ok),
                fix="its name, shape, type and size are listed; to read its values re-quantize "
                    "the model to a supported type with llama.cpp's llama-quantize, or update gguf",
                got=f"ggml type {self.code} ({self.gtype.name}, blocks of {self.gtype.block})"))

    def full(self) -> np.ndarray:
        """The whole tensor as float32, in its (PyTorch-order) shape."""
        self.check()
        if self.numel == 0:
            return _empty(self.name, self.shape, np.float32)
        out = np.empty(self.numel, np.float32)
        self._into(0, self.numel // self.gtype.block, out)
        return out.reshape(self.shape)

    def elements(self, a: int, b: int) -> np.ndarray:
        """Flat elements ``[a, b)`` as float32 (only the blocks covering them are read)."""
        bs = self.gtype.block
        b0, b1 = a // bs, -(-b // bs)
        out = np.empty((b1 - b0) * bs, np.float32)
        self._into(b0, b1, out)
        return out[a - b0 * bs: b - b0 * bs]

    def _into(self, b0: int, b1: int, out: np.ndarray):
        import gguf
        from gguf import quants
        qtype = gguf.GGMLQuantizationType(self.code)
        bs, ts = self.gtype.block, self.gtype.size
        per_row = max(1, ROW // bs)               # blocks per row given to dequantize
        step = per_row * SLAB_ROWS
        if b1 <= b0:
            return
        mm = _source.memmap(self.path, np.uint8, self.start + b0 * ts, ((b1 - b0) * ts,))
        try:
            for s in range(0, b1 - b0, step):
                e = min(s + step, b1 - b0)
                rows, rest = divmod(e - s, per_row)
                o = s * bs
                if rows:
                    part = mm[s * ts:(s + rows * per_row) * ts].reshape(rows, per_row * ts)
                    out[o:o + rows * per_row * bs] = quants.dequantize(part, qtype).reshape(-1)
                    o += rows * per_row * bs
                if rest:
                    part = mm[(e - rest) * ts:e * ts].reshape(rest, ts)
                    out[o:o + rest * bs] = quants.dequantize(part, qtype).reshape(-1)
        except NotImplementedError as exc:        # can_dequantize said yes: a gguf change
            raise WeightvizError(message(f"gguf could not dequantize tensor {self.name!r}",
                                         got=f"{self.gtype.name}: {exc}")) from exc
        finally:
            del mm


class QuantizedEntry(TensorEntry):
    """A block-quantized GGUF tensor. ``dtype`` is the GGUF type name; ``raw()``,
    ``numpy()`` and ``torch()`` give float32 (dequantized); ``block_size`` elements share
    a scale. :meth:`streamed` is what ``weightviz.stats`` scans."""

    __slots__ = ("blocks",)

    def __init__(self, name: str, shape, dtype: str, blocks: _Blocks):
        super().__init__(name, shape, dtype, loader=blocks.full)
        self.blocks = blocks

    @property
    def block_size(self) -> int:
        return self.blocks.gtype.block

    @property
    def readable(self) -> bool:
        """Whether its values can be read (gguf dequantizes its type)."""
        return self.blocks.readable()

    def numpy(self) -> np.ndarray:
        return self.blocks.full()            # a fresh array already: no second copy

    def streamed(self):
        """The entry as the statistics scan reads it: itself when small, else a view whose
        ``raw()`` slices dequantize only the blocks they cover (memory: one chunk)."""
        if self.numel * 4 <= STREAM_BYTES:
            return self
        self.blocks.check()
        return _ScanView(self)


class _ScanView:
    __slots__ = ("name", "shape", "dtype", "numel", "_flat")

    def __init__(self, entry: QuantizedEntry):
        self.name, self.shape, self.dtype, self.numel = entry.name, entry.shape, entry.dtype, entry.numel
        self._flat = _Flat(entry.blocks)

    def raw(self):
        return self._flat


class _Flat:
    """A flat, read-only float32 sequence of a quantized tensor: ``flat[a:b]`` is an ndarray
    of those elements, dequantized on the spot; anything else materialises the tensor."""

    ndim = 1
    dtype = np.dtype(np.float32)
    flags = _types.SimpleNamespace(c_contiguous=True, f_contiguous=False, writeable=False)

    def __init__(self, blocks: _Blocks):
        self.blocks = blocks
        self.size = blocks.numel
        self.shape = (self.size,)

    def __len__(self) -> int:
        return self.size

    def reshape(self, *shape):
        if shape in ((-1,), ((-1,),), (self.size,), ((self.size,),)):
            return self
        return np.asarray(self).reshape(*shape)

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            a, b, _ = key.indices(self.size)
            return self.blocks.elements(a, max(a, b))
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        arr = self.blocks.full().reshape(-1)
        return arr if dtype is None else arr.astype(dtype)


# ---------------------------------------------------------------- metadata

def _show(v, width: int = 80) -> str:
    """A metadata value for one summary line: no control characters, at most ``width``."""
    if isinstance(v, _header.Array):
        return f"{v.count:,} × {v.type}"
    s = "".join(c if c.isprintable() else "?" for c in str(v))
    return s if len(s) <= width else s[:width - 1] + "…"


def _count(v) -> int:
    return v.count if isinstance(v, _header.Array) else len(v) if isinstance(v, list) else 0


def _file_type(v) -> str:
    import gguf
    try:
        return f"{gguf.LlamaFileType(v).name.removeprefix('MOSTLY_')} ({v})"
    except (ValueError, TypeError):
        return _show(v)


def _metadata(h, entries: dict) -> dict:
    # tokenizer arrays are only ever counted, however short
    kv = {k: _header.Array(h.kv_types[k][6:-1], len(v)) if k.startswith("tokenizer.") and isinstance(v, list)
          else v for k, v in h.kv.items()}
    arch = kv.get("general.architecture")
    show = {"GGUF": f"version {h.version}, {'big' if h.byte_order == '>' else 'little'}-endian, "
                    f"alignment {h.alignment}"}
    for label, key in (("architecture", "general.architecture"), ("model name", "general.name"),
                       ("file type", "general.file_type"),
                       ("quantization version", "general.quantization_version"),
                       ("context length", f"{arch}.context_length"), ("layers", f"{arch}.block_count"),
                       ("embedding length", f"{arch}.embedding_length")):
        if key in kv:
            show[label] = _file_type(kv[key]) if label == "file type" else _show(kv[key])
    if any(k.startswith("tokenizer.") for k in kv):
        bits = [_show(kv.get("tokenizer.ggml.model", "?"), 40)]
        for key, what in (("tokenizer.ggml.tokens", "tokens"), ("tokenizer.ggml.merges", "merges")):
            if key in kv:
                bits.append(f"{_count(kv[key]):,} {what}")
        show["tokenizer"] = ", ".join(bits)
    if "split.count" in kv:
        no = kv.get("split.no")
        show["split"] = (f"part {no + 1 if isinstance(no, int) else '?'} of {_show(kv['split.count'])} "
                         "(this part only)")
    unread = Counter(e.dtype for e in entries.values() if isinstance(e, QuantizedEntry) and not e.readable)
    if unread:
        show["not dequantizable"] = ", ".join(f"{d} ({n})" for d, n in sorted(unread.items()))
    show["metadata keys"] = f"{len(kv)} (in .metadata['kv'])"
    return {"gguf_version": h.version, "byte_order": "big" if h.byte_order == ">" else "little",
            "alignment": h.alignment, "data_offset": h.data_start, "kv": kv, "kv_types": dict(h.kv_types),
            "display": show}

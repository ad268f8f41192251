"""Tensors stored as chunks (one per rank or shard): proving the chunks tile the tensor,
then assembling it, one tensor at a time.

A checkpoint written by many ranks stores each tensor as boxes (``offsets``, ``sizes``)
of its global shape. Before anything is read, :func:`check_tiling` proves from the
metadata alone that the boxes lie inside the tensor, never overlap and cover it whole
(their volumes add up to its size), so an assembled tensor never shows zeros where data
is missing. :func:`assemble` then writes each chunk into its box.
"""
from __future__ import annotations

import os
from math import prod

import numpy as np

from ..errors import CorruptFileError, message

MAX_COMPARISONS = 20_000_000       # chunk pairs compared for overlap, per tensor


def _bad(where, tensor, what, got=None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{where}: the chunks of tensor {tensor!r} {what}",
        expected="chunks that tile the tensor exactly: inside its shape, no overlap, no gap",
        fix="the checkpoint is incomplete or was damaged; copy it again, or save it again",
        got=got))


def box(chunk) -> str:
    return ("[" + ", ".join(f"{o}:{o + s}" for o, s in zip(chunk.offsets, chunk.sizes)) + "]"
            if chunk.offsets else "[] (a scalar)")


def check_tiling(where: str, tensor: str, shape: tuple, chunks: list) -> list:
    """The chunks (exact duplicates dropped) after proving they tile ``shape``; a
    CorruptFileError naming ``where`` and the tensor when they lie outside it, overlap or
    leave part of it uncovered."""
    if len(chunks) == 1 and chunks[0].sizes == tuple(shape) and not any(chunks[0].offsets):
        return list(chunks)                       # one chunk: the whole tensor
    slabs = _slabs(shape, chunks)
    if slabs is not None:
        return slabs
    seen, out, total = set(), [], 0
    for c in chunks:
        if any(o + s > d for o, s, d in zip(c.offsets, c.sizes, shape)):
            raise _bad(where, tensor, "reach outside the tensor",
                       got=f"chunk {box(c)} of a tensor of shape {tuple(shape)}")
        if (c.offsets, c.sizes) in seen:
            continue                       # the same chunk listed twice: one storage key
        seen.add((c.offsets, c.sizes))
        out.append(c)
        total += prod(c.sizes)
    full = [c for c in out if prod(c.sizes)]
    _no_overlap(where, tensor, full)
    numel = prod(shape)
    if total != numel:
        raise _bad(where, tensor, f"cover {total:,} of its {numel:,} elements",
                   got=f"shape {tuple(shape)}, chunks {', '.join(box(c) for c in full[:8])}"
                       + (f" and {len(full) - 8} more" if len(full) > 8 else ""))
    return out


def _slabs(shape, chunks):
    """Chunks that cut the tensor along one dimension only (FSDP's Shard(0), a Shard(1)),
    sorted, when they tile it edge to edge; None for any other layout (checked in full)."""
    shape = tuple(shape)
    if not shape:
        return None
    first = chunks[0]
    dims = [d for d in range(len(shape)) if first.sizes[d] != shape[d]] or [0]
    if len(dims) != 1:
        return None
    d = dims[0]
    for c in chunks:
        if any((c.offsets[j] or c.sizes[j] != shape[j]) for j in range(len(shape)) if j != d):
            return None
    order = sorted(chunks, key=lambda c: (c.offsets[d], c.sizes[d]))
    pos, out = 0, []
    for c in order:
        if c.offsets[d] != pos:
            if out and c.offsets[d] == out[-1].offsets[d] and c.sizes[d] == out[-1].sizes[d]:
                continue                          # the same chunk listed twice
            return None                           # a gap or an overlap: the full check says which
        out.append(c)
        pos += c.sizes[d]
    return out if pos == shape[d] else None


def _no_overlap(where, tensor, chunks) -> None:
    if len(chunks) < 2:
        return
    ndim = len(chunks[0].offsets)
    # sweep along the dimension the chunks are most spread over (FSDP: dim 0)
    dim = max(range(ndim), key=lambda d: len({c.offsets[d] for c in chunks}))
    order = sorted(chunks, key=lambda c: c.offsets[dim])
    active, compared = [], 0
    for c in order:
        start = c.offsets[dim]
        active = [a for a in active if a.offsets[dim] + a.sizes[dim] > start]
        for a in active:
            compared += 1
            if all(max(ao, co) < min(ao + asz, co + csz) for ao, asz, co, csz
                   in zip(a.offsets, a.sizes, c.offsets, c.sizes)):
                raise _bad(where, tensor, "overlap", got=f"chunks {box(a)} and {box(c)}")
        if compared > MAX_COMPARISONS:
            raise _bad(where, tensor, f"are too many to compare ({len(chunks):,} overlapping "
                                      "ranges)")
        active.append(c)


def slices(chunk) -> tuple:
    return tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes))


def assemble(shape: tuple, view_dtype, parts: list) -> np.ndarray:
    """The tensor from ``parts`` = [(chunk, fill)]: ``fill(dest)`` writes the chunk's
    values into ``dest`` (an array of the chunk's shape) and returns it; ``fill(None)``
    returns them (a single chunk holding the whole tensor: maybe a read-only memory map).
    The chunks must have passed :func:`check_tiling`."""
    full = [(c, f) for c, f in parts if prod(c.sizes)]
    if len(full) == 1 and tuple(full[0][0].sizes) == tuple(shape):
        return full[0][1](None)
    if prod(shape) == 0:
        from ..checkpoint import _empty
        return _empty("tensor", shape, view_dtype)
    out = np.empty(shape, dtype=view_dtype)
    for chunk, fill in full:
        fill(out[slices(chunk)])
    return out


def safe_join(folder: str, rel: str, where: str, what: str) -> str:
    """``folder/rel`` for a file name a checkpoint's metadata gives, refused when it is
    absolute, climbs out with ``..`` or resolves (through links) outside the folder."""
    parts = rel.replace("\\", "/").split("/")
    if (not rel or os.path.isabs(rel) or any(p in ("..", "") for p in parts)
            or "\x00" in rel):
        raise CorruptFileError(message(
            f"{where}: {what} names the file {rel!r}, which is not inside the checkpoint folder",
            expected="a plain file name such as __0_0.distcp",
            fix="do not trust this checkpoint: its metadata points elsewhere", got=repr(rel)))
    full = os.path.join(folder, *parts)
    root = os.path.realpath(folder)
    real = os.path.realpath(full)
    if os.path.commonpath([root, real]) != root:
        raise CorruptFileError(message(
            f"{where}: {what} names {rel!r}, a link that leads outside the checkpoint folder",
            expected="files inside the folder", fix="do not trust this checkpoint",
            got=real))
    return full

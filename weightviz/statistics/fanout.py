"""``weightviz.stats(source, client=...)``: the statistics scan fanned out over Dask.

Dask (``dask.distributed``) schedules; weightviz only cuts the work and merges it.
The scan's steps (:mod:`weightviz.statistics.scan`) run where the data is:

1. tensors are grouped by the file that holds them (a shard) into tasks of about
   ``TASK_BYTES``; a large tensor is split into runs of whole :data:`~weightviz.statistics.scan.BLOCK`
   chunks;
2. range tasks: each worker opens the file itself (a path on a shared filesystem, or a URL
   it reads by range: no shared filesystem needed; header only, cached per worker process)
   and returns the finite range of every chunk;
3. the client turns the ranges into one :class:`~weightviz.statistics.scan.Plan` per tensor (fixed
   bin edges, shift, scale: a few numbers);
4. moment tasks: each worker scans its chunks again and returns their sums folded per
   block (a few hundred bytes per 64 MiB);
5. the client folds the blocks in chunk order: the same additions in the same order as
   the local scan, so the table is identical, bit for bit.

Nothing big crosses the network: only paths, ranges, plans and folded sums.  Tasks are
pure, so when a worker dies Dask reruns its tasks elsewhere and the result is unchanged.
"""
from __future__ import annotations

from collections import OrderedDict

from ..errors import WeightvizError, message

TASK_BYTES = 256 << 20          # bytes of tensor data per task
_OPEN: OrderedDict = OrderedDict()   # per worker process: (path, format, size, mtime) -> Checkpoint


def _need_distributed(client) -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise WeightvizError(message(
            "stats(client=...) needs dask.distributed, which is not installed",
            fix="pip install 'weightviz[distributed]' (or conda install dask distributed)",
            got=f"client={type(client).__name__}")) from None
    if not callable(getattr(client, "submit", None)) or not callable(getattr(client, "gather", None)):
        raise WeightvizError(message("client= must be a dask.distributed.Client",
                                     fix="from dask.distributed import Client; client = Client(...)",
                                     got=type(client).__name__))


# ---------------------------------------------------------------- on the workers

def _checkpoint(path: str, fmt: str | None):
    from ..formats import source as _source
    key = (_source.identity(path), fmt)          # a remote path: its URL, size and ETag
    ckpt = _OPEN.get(key)
    if ckpt is None:
        from ..formats import open_checkpoint
        kw = dict(fmt) if isinstance(fmt, tuple) else {"format": fmt}    # reader options (fp32=)
        ckpt = _OPEN[key] = open_checkpoint(path, **kw)
        while len(_OPEN) > 8:
            _OPEN.popitem(last=False)
    _OPEN.move_to_end(key)
    return ckpt


def _chunks(entry, chunk: int):
    from .chunks import Chunks
    return Chunks(entry.raw(), chunk)


def range_task(path: str, fmt: str | None, items: list, chunk: int) -> list:
    """[(name, first chunk, transposed, [(min, max, nonfinite) per chunk])] for items
    (name, first chunk, stop chunk)."""
    import numpy as np

    from .scan import _Buffers, first_pass
    ckpt, buf, out = _checkpoint(path, fmt), _Buffers(chunk), []
    with np.errstate(all="ignore"):
        for name, c0, c1 in items:
            e = ckpt[name]
            src = _chunks(e, chunk)
            bounds = src.bounds()[c0:c1]
            out.append((name, c0, src.transposed,
                        [first_pass(buf, src.flat[a:b], e.dtype) for a, b in bounds]))
    return out


def moment_task(path: str, fmt: str | None, items: list, chunk: int) -> list:
    """[(name, first chunk, folded blocks)] for items (name, first chunk, stop chunk,
    plan, the first pass's ranges of those chunks)."""
    import numpy as np

    from .scan import _Buffers, blocks, second_pass
    ckpt, buf, out = _checkpoint(path, fmt), _Buffers(chunk), []
    with np.errstate(all="ignore"):
        for name, c0, c1, pl, ranges in items:
            e = ckpt[name]
            src = _chunks(e, chunk)
            parts = [second_pass(buf, src.flat[a:b], e.dtype, a, rng, pl)
                     for (a, b), rng in zip(src.bounds()[c0:c1], ranges)]
            out.append((name, c0, blocks(parts)))
    return out


# ---------------------------------------------------------------- on the client

def _file_of(ckpt, entry) -> tuple[str, str | None]:
    """The file a worker opens to reach ``entry``, and the reader to use."""
    if entry.location is not None and entry.location.path != ckpt.path:
        return entry.location.path, None                 # a shard: open it on its own
    from ..formats import source as _source
    if ckpt.path is None or not _source.exists(ckpt.path):
        raise WeightvizError(message(
            "stats(client=...) needs files the workers can open",
            expected="a path (a file, a sharded index, or a Checkpoint opened from one)",
            fix="save the tensors to a file on a filesystem the workers share, or drop client=",
            got=f"tensor {entry.name!r} of a {ckpt.format} source held in memory"))
    reopen = ckpt.metadata.get("reopen") if isinstance(ckpt.metadata, dict) else None
    return ckpt.path, (tuple(sorted(reopen.items())) if reopen else None)


def _tasks(ckpt, chunk: int) -> list[tuple[str, str | None, list]]:
    """(path, format, [(name, first chunk, stop chunk)]) per task, grouped by file."""
    from .scan import BLOCK
    per_file: dict = {}
    for name, e in ckpt.items():
        if e.numel == 0:
            continue
        path, fmt = _file_of(ckpt, e)
        n_chunks = -(-e.numel // chunk)
        per_chunk = chunk * max(e.nbytes // max(e.numel, 1), 1)
        run = max(BLOCK, TASK_BYTES // per_chunk // BLOCK * BLOCK)
        for c0 in range(0, n_chunks, run):
            per_file.setdefault((path, fmt), []).append(
                (name, c0, min(c0 + run, n_chunks), min(run, n_chunks - c0) * per_chunk))
    tasks = []
    for (path, fmt), items in per_file.items():
        batch, size = [], 0
        for name, c0, c1, nbytes in items:
            if batch and size + nbytes > TASK_BYTES:
                tasks.append((path, fmt, batch))
                batch, size = [], 0
            batch.append((name, c0, c1))
            size += nbytes
        if batch:
            tasks.append((path, fmt, batch))
    return tasks


def _run(client, fn, tasks, chunk, bar, weight) -> list:
    from distributed import as_completed
    futures = [client.submit(fn, path, fmt, items, chunk, pure=False) for path, fmt, items in tasks]
    done = {}
    for fut in as_completed(futures):
        i = futures.index(fut)
        done[i] = fut.result()
        if bar is not None:
            bar.update(weight[i])
    return [done[i] for i in range(len(futures))]


def scan(client, ckpt, *, bins: int, axes: dict, show: bool, chunk: int | None = None) -> dict:
    """name -> the scan's raw :class:`~weightviz.statistics.scan.Moments` of every tensor of ``ckpt``,
    computed on ``client``'s workers.  ``axes``: name -> the unit axis of the dead-unit
    search (or None); ``show``: whether to show a progress bar."""
    from . import scan as _scan
    _need_distributed(client)
    chunk = int(chunk or _scan.CHUNK)
    tasks = _tasks(ckpt, chunk)
    weight = [sum(ckpt[n].nbytes * (c1 - c0) // max(-(-ckpt[n].numel // chunk), 1)
                  for n, c0, c1 in items) for _, _, items in tasks]
    total = sum(e.nbytes for e in ckpt.values())
    bar = None
    if show:
        from tqdm.auto import tqdm
        bar = tqdm(total=2 * total, unit="B", unit_scale=True, unit_divisor=1024,
                   desc="weightviz.stats (dask)", leave=False)
    try:
        ranges: dict = {}
        transposed: dict = {}
        for result in _run(client, range_task, tasks, chunk, bar, weight):
            for name, c0, tr, rs in result:
                ranges.setdefault(name, {})[c0] = rs
                transposed[name] = tr
        plans = {}
        for name, e in ckpt.items():
            flat = [r for c0 in sorted(ranges.get(name, {})) for r in ranges[name][c0]]
            plans[name] = _scan.plan(flat, e.numel, e.shape, bins=bins,
                                     unit_axis=axes.get(name),
                                     transposed=transposed.get(name, False), chunk=chunk)
            ranges[name] = flat
        second = [(path, fmt, [(n, c0, c1, plans[n], ranges[n][c0:c1]) for n, c0, c1 in items])
                  for path, fmt, items in tasks]
        folded: dict = {}
        for result in _run(client, moment_task, second, chunk, bar, weight):
            for name, c0, bl in result:
                folded.setdefault(name, {})[c0] = bl
    finally:
        if bar is not None:
            bar.close()
    out = {}
    for name, e in ckpt.items():
        bl = [b for c0 in sorted(folded.get(name, {})) for b in folded[name][c0]]
        out[name] = _scan.merge(bl, e.numel, plans[name], folded=True)
    return out

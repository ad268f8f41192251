"""Benchmark: weightviz.stats on a 1 GiB float32 checkpoint vs a plain NumPy sum pass.

Writes a safetensors file of ~100 float32 tensors (1 GiB, random normal data) to a
temporary directory, then, in this one process and with the file in the page cache:

* baseline: ``np.sum`` over every tensor through ``np.memmap`` (the same bytes);
* weightviz: ``weightviz.stats(ckpt)``: full statistics and 100-bin histograms.

Runs are interleaved (baseline, weightviz, baseline, ...) and the medians compared.
Reports the ratio (target <= 6x, on one thread and on two) and the growth of anonymous memory
(RssAnon from /proc/self/status) across the weightviz scans (target <= 256 MiB).
The temporary file is deleted at the end.

    python benchmarks/bench_stats.py [--gib 1.0] [--tensors 100] [--repeat 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import tempfile
import time

import numpy as np


def rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def write_safetensors(path: str, gib: float, n_tensors: int, seed: int = 0) -> list:
    """A safetensors file of float32 tensors totalling ``gib`` GiB; returns (name, shape, offset)."""
    rng = np.random.default_rng(seed)
    total = int(gib * (1 << 30)) // 4
    # varied shapes: a few big matrices, many mid-size ones, biases
    weights = rng.uniform(0.2, 1.8, n_tensors // 2)
    sizes = (weights / weights.sum() * total).astype(np.int64)
    shapes = []
    for i, s in enumerate(sizes):
        cols = [256, 512, 1024, 3072][i % 4]
        rows = max(int(s) // cols, 1)
        shapes.append((f"layers.{i}.weight", (rows, cols)))
        shapes.append((f"layers.{i}.bias", (rows,)))
    header, off = {}, 0
    for name, shape in shapes:
        nbytes = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    layout = []
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        base = 8 + len(raw)
        for name, shape in shapes:
            n = int(np.prod(shape))
            for a in range(0, n, 1 << 22):
                b = min(a + (1 << 22), n)
                f.write(rng.standard_normal(b - a, dtype=np.float32).tobytes())
            layout.append((name, shape, base + header[name]["data_offsets"][0]))
    return layout


def checkpoint_for(path: str, layout):
    """A Checkpoint over the file: the safetensors reader when present, else DataLocations."""
    try:
        from weightviz.formats import open_checkpoint
        ckpt = open_checkpoint(path)
        if len(ckpt) == len(layout) and all(e.location is not None for e in ckpt.values()):
            return ckpt, "weightviz.formats reader"
    except Exception:  # the reader may not be there yet: fall back to explicit locations
        pass
    from weightviz.checkpoint import Checkpoint, DataLocation, TensorEntry
    entries = {name: TensorEntry(name, shape, "float32",
                                 location=DataLocation(path, off, np.dtype("<f4")))
               for name, shape, off in layout}
    return Checkpoint(entries, format="safetensors", path=path), "explicit DataLocation entries"


def timed(fn):
    """(wall seconds, CPU seconds of this process: user + system, all threads)."""
    c, t = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def numpy_sum_pass(path: str, layout) -> float:
    acc = 0.0
    for _name, shape, off in layout:
        mm = np.memmap(path, dtype="<f4", mode="r", offset=off, shape=shape)
        acc += float(np.sum(mm))
        del mm
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="scan threads for long tensors (default: weightviz's choice)")
    args = ap.parse_args()
    if args.threads:
        import weightviz.statistics.scan
        weightviz.statistics.scan.THREADS = args.threads

    import weightviz
    tmp = tempfile.mkdtemp(prefix="wv_bench_stats_")
    try:
        path = os.path.join(tmp, "model.safetensors")
        t = time.perf_counter()
        layout = write_safetensors(path, args.gib, args.tensors)
        size = os.path.getsize(path)
        print(f"wrote {len(layout)} float32 tensors, {size / 2**30:.3f} GiB in "
              f"{time.perf_counter() - t:.1f} s")
        ckpt, how = checkpoint_for(path, layout)
        print(f"checkpoint: {how}")

        numpy_sum_pass(path, layout)                      # warm the page cache
        weightviz.stats(ckpt, progress=False)              # warm imports and buffers
        anon_before = rss_anon_kib()
        base, ours, anon_peak = [], [], anon_before
        tables = []
        for _ in range(args.repeat):
            base.append(timed(lambda: numpy_sum_pass(path, layout)))
            ours.append(timed(lambda: tables.append(weightviz.stats(ckpt, progress=False))))
            anon_peak = max(anon_peak, rss_anon_kib())
            tables.clear()
        anon_after = rss_anon_kib()
        gib = size / 2**30
        for i, what in enumerate(("wall", "CPU (user+sys)")):
            b = statistics.median(r[i] for r in base)
            o = statistics.median(r[i] for r in ours)
            print(f"{what} time: numpy sum pass (memmap) median {b:.3f} s ({gib / b:.2f} GiB/s), "
                  f"runs {[round(r[i], 3) for r in base]}")
            print(f"{what} time: weightviz.stats         median {o:.3f} s ({gib / o:.2f} GiB/s), "
                  f"runs {[round(r[i], 3) for r in ours]}")
            print(f"{what} ratio: {o / b:.2f}x  (target <= 6x)")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f} "
              "(wall time is what a user waits for; CPU time adds up every scan thread, so with 2 threads "
              "it is above the wall time; on a busy machine compare runs with --threads 1)")
        print(f"anonymous memory: before {anon_before / 1024:.1f} MiB, after {anon_after / 1024:.1f} MiB, "
              f"max growth {(anon_peak - anon_before) / 1024:.1f} MiB (target <= 256 MiB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

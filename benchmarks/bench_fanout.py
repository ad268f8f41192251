"""Benchmark: weightviz.stats on a sharded 1 GiB checkpoint, locally and on a Dask LocalCluster.

Writes four safetensors shards (1 GiB of float32 in all) and their index to a temporary
directory, warms the page cache, then times (median of ``--repeat``):

* ``weightviz.stats(index)``: the local scan (threads as weightviz chooses);
* ``weightviz.stats(index, client=client)``: the same scan on a ``LocalCluster`` of
  ``--workers`` processes (one thread each), tables checked identical.

On one small machine the cluster cannot beat the local scan (the same cores, plus
scheduling); the number says what the fan-out costs.  The temporary files are deleted.

    python benchmarks/bench_fanout.py [--gib 1.0] [--workers 2] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_stats import write_safetensors  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import numpy as np
    from distributed import Client, LocalCluster

    import weightviz
    tmp = tempfile.mkdtemp(prefix="wv_bench_fanout_")
    try:
        wmap = {}
        for i in range(4):
            shard = f"model-{i + 1:05d}-of-00004.safetensors"
            layout = write_safetensors(os.path.join(tmp, shard), args.gib / 4, 24, seed=i)
            wmap.update({f"shard{i}.{name}": shard for name, _, _ in layout})
        # the shards' own tensor names carry no shard prefix: rename them in the files
        for i in range(4):
            _prefix_names(os.path.join(tmp, f"model-{i + 1:05d}-of-00004.safetensors"), f"shard{i}.")
        index = os.path.join(tmp, "model.safetensors.index.json")
        with open(index, "w") as f:
            json.dump({"weight_map": wmap}, f)
        weightviz.stats(index, progress=False)            # page cache, imports
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            weightviz.stats(index, client=client, progress=False)
            local, fanned = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                a = weightviz.stats(index, progress=False)
                local.append(time.perf_counter() - t)
                t = time.perf_counter()
                b = weightviz.stats(index, client=client, progress=False)
                fanned.append(time.perf_counter() - t)
            same = all(a[n].to_dict().keys() == b[n].to_dict().keys()
                       and np.array_equal(a[n].histogram.counts, b[n].histogram.counts)
                       and a[n].mean == b[n].mean and a[n].std == b[n].std for n in a)
        lm, fm = statistics.median(local), statistics.median(fanned)
        print(f"{len(wmap)} tensors in 4 shards, {args.gib:.2f} GiB")
        print(f"local scan: median {lm:.3f} s, runs {[round(x, 3) for x in local]}")
        print(f"LocalCluster ({args.workers} workers): median {fm:.3f} s, runs {[round(x, 3) for x in fanned]}")
        print(f"ratio cluster/local: {fm / lm:.2f}x; tables identical: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prefix_names(path: str, prefix: str) -> None:
    """Rewrite a safetensors header with every tensor name prefixed (data untouched)."""
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header = {(k if k == "__metadata__" else prefix + k): v for k, v in header.items()}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)


if __name__ == "__main__":
    main()

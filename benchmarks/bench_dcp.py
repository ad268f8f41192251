"""Benchmark: a torch.distributed.checkpoint folder of 2,000 tensors written by 8 ranks.

Writes (in a temporary folder, deleted afterwards) a DCP checkpoint with ``dcp.save`` from
``--ranks`` CPU processes in one gloo process group: ``--tensors`` float32 tensors of shape
(``--rows``, ``--cols``), each a DTensor sharded ``Shard(0)`` over the ranks (built with
``DTensor.from_local``: every rank makes only its own rows, from a seed per tensor and rank),
so every tensor has one chunk per rank and each rank writes one ``.distcp`` file. The same
tensors are written as one safetensors file (the rows concatenated in the parent process).
Then, with both in the page cache:

* listing: a fresh process runs ``weightviz.open(folder)`` and lists every name, shape and
  dtype; the time after ``import weightviz`` is reported (target <= 0.5 s), with the whole
  process (imports included) beside it; best of ``--repeat``;
* stats: ``weightviz.stats`` over the DCP folder and over the safetensors file, interleaved,
  in this process, from the path (opening included) and on an opened checkpoint; medians
  compared (target: DCP <= 1.5x safetensors). Each DCP tensor is assembled from its 8 chunks
  (read straight into place, one ``preadv`` per chunk) before it is scanned; the safetensors
  tensors are memory-mapped. The tables must be identical.

    .venv/bin/python benchmarks/bench_dcp.py [--tensors 2000] [--ranks 8] [--rows 512 --cols 512]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r"""
import os, sys, numpy as np, torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard
out, n, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("cpu", (world,))
sd = {}
for i in range(n):
    local = torch.from_numpy(local_rows(i, rank, world, rows, cols))
    sd[f"layers.{i // 8}.w{i % 8}.weight"] = DTensor.from_local(
        local, mesh, [Shard(0)], shape=(rows, cols), stride=(cols, 1), run_check=False)
dcp.save({"model": sd}, checkpoint_id=out)
dist.barrier()
dist.destroy_process_group()
"""

LOCAL_ROWS = r"""
def local_rows(i, rank, world, rows, cols):
    per = rows // world
    rng = np.random.default_rng((i, rank))
    return (rng.standard_normal((per, cols), dtype=np.float32) * 0.02 + 0.001 * (i % 7))
"""


def local_rows(i, rank, world, rows, cols):
    ns: dict = {"np": np}
    exec(LOCAL_ROWS, ns)
    return ns["local_rows"](i, rank, world, rows, cols)


def write_dcp(folder: str, n: int, ranks: int, rows: int, cols: int) -> float:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = LOCAL_ROWS + WORKER
    t = time.perf_counter()
    procs = []
    for r in range(ranks):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        log = tempfile.TemporaryFile()
        procs.append((subprocess.Popen([sys.executable, "-c", script, folder, str(n), str(rows),
                                        str(cols)], env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for p, log in procs:
        p.wait()
        if p.returncode:
            log.seek(0)
            raise RuntimeError(log.read().decode(errors="replace")[-3000:])
    return time.perf_counter() - t


def write_safetensors(path: str, n: int, ranks: int, rows: int, cols: int) -> None:
    from safetensors.numpy import save_file
    tensors = {}
    for i in range(n):
        tensors[f"layers.{i // 8}.w{i % 8}.weight"] = np.concatenate(
            [local_rows(i, r, ranks, rows, cols) for r in range(ranks)])
    save_file(tensors, path)


LISTING = """
import json, sys, time
t0 = time.perf_counter()
import weightviz
t1 = time.perf_counter()
ckpt = weightviz.open(sys.argv[1])
out = [(name, e.shape, e.dtype) for name, e in ckpt.items()]
t2 = time.perf_counter()
print(json.dumps({"listing": t2 - t1, "seconds": t2 - t0, "n": len(out),
                  "chunks": ckpt.metadata.get("chunks"), "ranks": ckpt.metadata.get("ranks")}))
"""


def listing(path: str) -> dict:
    res = subprocess.run([sys.executable, "-c", LISTING, path], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(HERE))
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=2000)
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write the temporary files")
    args = ap.parse_args(argv)
    import weightviz
    tmp = tempfile.mkdtemp(prefix="bench_dcp_", dir=args.dir)
    try:
        folder, st = os.path.join(tmp, "step-1"), os.path.join(tmp, "same.safetensors")
        took = write_dcp(folder, args.tensors, args.ranks, args.rows, args.cols)
        write_safetensors(st, args.tensors, args.ranks, args.rows, args.cols)
        mb = args.tensors * args.rows * args.cols * 4 / 1e6
        print(f"wrote a DCP checkpoint of {args.tensors} float32 tensors ({mb:.0f} MB) from "
              f"{args.ranks} gloo ranks in {took:.1f} s, and the same tensors as one safetensors file")
        for _ in range(2):                        # warm the page cache
            weightviz.stats(folder, progress=False)
            weightviz.stats(st, progress=False)
        runs = [listing(folder) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["listing"])
        print(f"\nlisting (fresh process, warm cache; best of {args.repeat}): {best['n']} tensors, "
              f"{best['chunks']} chunks, {best['ranks']} ranks")
        print(f"  weightviz.open + names/shapes: {best['listing']:.3f} s (target <= 0.5 s); "
              f"whole process with imports: {best['seconds']:.3f} s")
        times: dict = {"dcp": [], "st": [], "dcp_open": [], "st_open": []}
        for _ in range(args.repeat):
            for key, src in (("dcp", folder), ("st", st)):
                t = time.perf_counter()
                table = weightviz.stats(src, progress=False)        # from the path: open included
                times[key].append(time.perf_counter() - t)
                ck = weightviz.open(src)
                t = time.perf_counter()
                weightviz.stats(ck, progress=False)                  # an opened checkpoint
                times[key + "_open"].append(time.perf_counter() - t)
                if key == "dcp":
                    a = table
                else:
                    b = table
        same = all(a[n].to_dict() == b[n].to_dict() for n in b)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\nweightviz.stats, median of {args.repeat} (interleaved):")
        print(f"                                  from the path   opened checkpoint")
        print(f"  DCP folder ({args.ranks} chunks per tensor): {med['dcp']:9.3f} s   {med['dcp_open']:9.3f} s")
        print(f"  one safetensors file:          {med['st']:9.3f} s   {med['st_open']:9.3f} s")
        print(f"  ratio (target <= 1.5x):         {med['dcp'] / med['st']:9.2f}x   "
              f"{med['dcp_open'] / med['st_open']:9.2f}x")
        print(f"  tables identical: {same}; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

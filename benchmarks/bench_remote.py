"""Benchmark: checkpoints read by URL over loopback HTTP.

1. **Listing a 1 TB sharded safetensors checkpoint**: ``--shards`` (200) sparse files of ~5 GB each
   with real headers (``--tensors`` bfloat16 tensors per shard; the data is sparse, nothing of it is
   on disk) and a ``model.safetensors.index.json``, served by ``weightviz.demo.serve`` (a threaded
   Python server with Range support) with ``--delay`` (50 ms) slept before every reply.
   Targets: ``weightviz.open(url)`` under 1 s; bytes transferred <= 1.1 x the header bytes
   (every shard's 8 + N, plus the index) + 4 KiB per file.
   The server runs in its own process (``weightviz.demo.server`` started by ``python -c``), so
   it does not share the client's GIL.
2. **One 1 GiB tensor's statistics** (``--tensor-mib``, float32, random) over the same kind of
   server (with the same delay), against ``curl`` fetching the same byte range side by side:
   ``weightviz.stats(url, names=[...])`` throughput >= 50 % of curl's, run in a fresh process
   whose peak RSS may grow by at most 256 MiB during the scan. The scan reads the tensor while it
   arrives (``TensorEntry.raw(stream=True)``: first pass overlapped with the fetch); the second pass
   needs the whole first pass's range, so the floor is fetch + second pass. The first scan of a
   process also loads the compiled kernels (~0.8 s); ``--warm`` loads them first.

Files go to a temporary directory (deleted at the end; ~1 GiB on disk). Needs ``curl``.

    python benchmarks/bench_remote.py [--shards 200] [--delay 0.05] [--tensor-mib 1024] [--only listing|stats]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

import weightviz as wv

SERVER_CHILD = r"""
import json, sys
from weightviz.demo.server import Server
srv = Server(sys.argv[1], delay=float(sys.argv[2]))
print(srv.server_address[1], flush=True)
for line in sys.stdin:
    if line.strip() == "clear":
        srv.requests.clear()
    print(json.dumps({"requests": len(srv.requests), "bytes": srv.bytes_sent}), flush=True)
srv.close()
"""


class ServerProcess:
    """``weightviz.demo.serve`` in a process of its own (a ThreadingHTTPServer with Range, a
    backlog of 256 and ``delay`` slept before each reply): the client keeps its GIL to itself."""

    def __init__(self, folder: str, delay: float):
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER_CHILD, folder, str(delay)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def clear(self) -> None:
        self._ask("clear")

    def counts(self) -> tuple[int, int]:
        got = self._ask("stats")
        return got["requests"], got["bytes"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(10)


STATS_CHILD = r"""
import json, resource, sys, time
import weightviz as wv
url, name, local, warm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
import numpy, torch  # noqa: F401 - imported before the baseline, as any session has them
if warm:                                           # the compiled kernels loaded (a session's 2nd scan)
    t = time.perf_counter()
    wv.stats(local, names=[name], progress=False)
    warmup = time.perf_counter() - t
t = time.perf_counter()
wv.open(url)[name].raw()                           # the fetch alone (what curl does), its own mirror
fetched = time.perf_counter() - t
ck = wv.open(url)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
table = wv.stats(ck, names=[name], progress=False) # fetch + stats: the scan reads what has arrived
dt = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
wv.stats(local, names=[name], progress=False)       # the same scan of the local file
local = time.perf_counter() - t
print(json.dumps({"seconds": dt, "fetch": fetched, "local": local, "rss_growth_mib": (after - before) / 1024,
                  "mean": table[name].mean, "requests": ck.metadata["remote"]["requests"]}))
"""


def _header(tensors: dict) -> bytes:
    raw = json.dumps(tensors, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_shards(folder: str, shards: int, per_shard: int) -> tuple[int, int]:
    """Sparse shards of ~1 TB in all; returns (header bytes incl. the index, total bytes)."""
    rows, cols = 8192, 2048                           # 32 MiB of bf16 per tensor
    header_bytes = total = 0
    wmap = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors, off = {}, 0
        for t in range(per_shard):
            n = rows * cols * 2
            key = f"model.layers.{s}.block.{t}.weight"
            tensors[key] = {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [off, off + n]}
            off += n
            wmap[key] = name
        head = _header(tensors)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(head)
            f.truncate(len(head) + off)
        header_bytes += len(head)
        total += len(head) + off
    index = json.dumps({"metadata": {"total_size": total}, "weight_map": wmap}).encode()
    with open(os.path.join(folder, "model.safetensors.index.json"), "wb") as f:
        f.write(index)
    return header_bytes + len(index), total + len(index)


def write_tensor(path: str, mib: int) -> str:
    name, n = "big.weight", mib * (1 << 20) // 4
    head = _header({name: {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}})
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(head)
        for start in range(0, n, 1 << 24):
            f.write(rng.standard_normal(min(1 << 24, n - start), dtype=np.float32).tobytes())
    return name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--tensors", type=int, default=160, help="tensors per shard (32 MiB each)")
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--tensor-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("listing", "stats"))
    ap.add_argument("--warm", action="store_true", help="2.: scan a local file first (kernels loaded, as in a "
                    "session's second scan), so the time is not the first scan's one-off compile load")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-remote-")
    try:
        if args.only in (None, "listing"):
            listing(work, args)
        if args.only in (None, "stats"):
            throughput(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def listing(work: str, args) -> None:
    folder = os.path.join(work, "sharded")
    os.makedirs(folder)
    header_bytes, total = write_shards(folder, args.shards, args.tensors)
    print(f"1. listing {args.shards} shards, {total / 1e12:.2f} TB, {header_bytes:,} header bytes "
          f"(index included), {args.delay * 1000:.0f} ms per reply")
    times = []
    with ServerProcess(folder, args.delay) as server:
        for _ in range(args.repeat):
            server.clear()
            t = time.perf_counter()
            ck = wv.open(server.url("model.safetensors.index.json"))
            times.append(time.perf_counter() - t)
            n, sent = server.counts()
    print("   (the server runs in a process of its own)")
    files = args.shards + 1
    budget = 1.1 * header_bytes + 4096 * files
    best = min(times)
    print(f"   weightviz.open: {best:.3f} s (median {sorted(times)[len(times) // 2]:.3f} s), {n} requests, "
          f"{sent:,} bytes ({sent / header_bytes:.3f} x the header bytes)")
    print(f"   {len(ck):,} tensors, {ck.nbytes / 1e12:.2f} TB of weights listed")
    print(f"   target < 1 s: {'met' if best < 1 else 'MISSED'}; bytes <= {budget:,.0f}: "
          f"{'met' if sent <= budget else 'MISSED'}")


def throughput(work: str, args) -> None:
    path = os.path.join(work, "big.safetensors")
    name = write_tensor(path, args.tensor_mib)
    size = os.path.getsize(path)
    if shutil.which("curl") is None:
        print("2. skipped: curl is not installed (apt-get install -y curl)")
        return
    print(f"2. stats of one {args.tensor_mib} MiB float32 tensor over loopback, {args.delay * 1000:.0f} ms per reply")
    rows = []
    with ServerProcess(work, args.delay) as server:
        url = server.url("big.safetensors")
        ck = wv.open(url)
        loc = ck[name].location
        first, last = loc.offset, loc.offset + ck[name].nbytes - 1
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run(["curl", "-s", "-o", "/dev/null", "-r", f"{first}-{last}", url], check=True)
            curl = time.perf_counter() - t
            out = subprocess.run([sys.executable, "-c", STATS_CHILD, url, name, path, "1" if args.warm else "0"],
                                 capture_output=True, text=True, check=True)
            rows.append((curl, json.loads(out.stdout.strip().splitlines()[-1])))
    nbytes = last - first + 1
    for curl, r in rows:
        print(f"   curl {nbytes / curl / 1e6:5.0f} MB/s | weightviz fetch {nbytes / r['fetch'] / 1e6:5.0f} MB/s, "
              f"fetch + stats {nbytes / r['seconds'] / 1e6:5.0f} MB/s (stats of the local file: "
              f"{nbytes / r['local'] / 1e6:5.0f} MB/s), peak RSS +{r['rss_growth_mib']:.0f} MiB")
    fetch_ratio = sorted(c / r["fetch"] for c, r in rows)[len(rows) // 2]
    print(f"   median fetch throughput {fetch_ratio:.0%} of curl's")
    ratio = sorted(c / r["seconds"] for c, r in rows)[len(rows) // 2]
    growth = max(r["rss_growth_mib"] for _, r in rows)
    print(f"   median fetch + stats throughput {ratio:.0%} of curl's (target >= 50 %: {'met' if ratio >= 0.5 else 'MISSED'}); "
          f"peak RSS growth {growth:.0f} MiB (target <= 256: {'met' if growth <= 256 else 'MISSED'}); "
          f"file {size:,} bytes")


if __name__ == "__main__":
    main()

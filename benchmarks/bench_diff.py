"""Benchmark: weightviz.diff of two 1 GiB float32 checkpoints vs one stats pass over both.

Writes two safetensors files of ~100 float32 tensors (1 GiB each; the second is the
first with every other tensor moved by small noise, like a fine-tune) to a temporary directory, then, with both files in
the page cache and in this one process:

* baseline: ``weightviz.stats`` over a, then over b (one full statistics scan of each);
* weightviz: ``weightviz.diff(a, b)``.

Runs are interleaved and the medians compared.  Reports the ratio (target <= 3x) and
the growth of anonymous memory (RssAnon from /proc/self/status, sampled every 5 ms by
a thread) during the diffs (target <= 256 MiB).  The temporary files are deleted.

    python benchmarks/bench_diff.py [--gib 1.0] [--tensors 100] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_stats import rss_anon_kib, timed, write_safetensors  # noqa: E402


class PeakAnon:
    """Largest RssAnon seen while the block runs (sampled by a thread)."""

    def __enter__(self):
        self.peak, self._stop = rss_anon_kib(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_anon_kib())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def fine_tune(src: str, dst: str, layout) -> None:
    """``dst``: a copy of ``src`` where every other tensor moved a little (a fine-tune)."""
    import numpy as np
    shutil.copyfile(src, dst)
    rng = np.random.default_rng(1)
    with open(dst, "r+b") as f:
        for i, (_name, shape, off) in enumerate(layout):
            if i % 2:
                continue
            n = int(np.prod(shape))
            for a in range(0, n, 1 << 22):
                b = min(a + (1 << 22), n)
                f.seek(off + 4 * a)
                x = np.frombuffer(f.read(4 * (b - a)), np.float32)
                f.seek(off + 4 * a)
                f.write((x + rng.normal(0, 1e-3, b - a).astype(np.float32)).tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import weightviz
    tmp = tempfile.mkdtemp(prefix="wv_bench_diff_")
    try:
        pa, pb = os.path.join(tmp, "a.safetensors"), os.path.join(tmp, "b.safetensors")
        t = time.perf_counter()
        layout = write_safetensors(pa, args.gib, args.tensors, seed=0)
        fine_tune(pa, pb, layout)
        gib = (os.path.getsize(pa) + os.path.getsize(pb)) / 2**30
        print(f"wrote two files, {gib:.3f} GiB in all, in {time.perf_counter() - t:.1f} s")
        a, b = weightviz.open(pa), weightviz.open(pb)
        weightviz.stats(a, progress=False)                  # warm the page cache and imports
        weightviz.stats(b, progress=False)
        weightviz.diff(a, b, progress=False)
        anon_before = rss_anon_kib()
        base, ours, peak = [], [], anon_before
        for _ in range(args.repeat):
            base.append(timed(lambda: (weightviz.stats(a, progress=False),
                                       weightviz.stats(b, progress=False))))
            with PeakAnon() as p:
                ours.append(timed(lambda: weightviz.diff(a, b, progress=False)))
            peak = max(peak, p.peak)
        report = weightviz.diff(a, b, progress=False)
        print(f"diff: {report.summary}")
        for i, what in enumerate(("wall", "CPU (user+sys)")):
            bm = statistics.median(r[i] for r in base)
            om = statistics.median(r[i] for r in ours)
            print(f"{what} time: stats(a) + stats(b) median {bm:.3f} s ({gib / bm:.2f} GiB/s), "
                  f"runs {[round(r[i], 3) for r in base]}")
            print(f"{what} time: diff(a, b)          median {om:.3f} s ({gib / om:.2f} GiB/s), "
                  f"runs {[round(r[i], 3) for r in ours]}")
            print(f"{what} ratio: {om / bm:.2f}x  (target <= 3x)")
        print(f"anonymous memory: before {anon_before / 1024:.1f} MiB, max growth during diff "
              f"{(peak - anon_before) / 1024:.1f} MiB (target <= 256 MiB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

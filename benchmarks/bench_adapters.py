"""Benchmark: checking a rank-16 LoRA adapter on every linear layer of a ~1B-parameter bfloat16
base, against one ``weightviz.stats`` pass over the base weights it targets; and ΔW's numbers
from r×r QR cores against forming B @ A densely.

Writes, to a temporary directory (deleted at the end; ~2 GB on disk with the defaults):

* ``base.safetensors``: ``--layers`` (16) transformer layers of Llama-3.2-1B-like shapes
  (hidden 2048, intermediate 8192, 8 KV heads of 64: q/o 2048×2048, k/v 512×2048,
  gate/up 8192×2048, down 2048×8192), bfloat16, N(0, 0.02²) — about 0.97 B parameters;
* ``adapter/``: a PEFT-style adapter (``adapter_config.json`` + ``adapter_model.safetensors``),
  r 16, alpha 32, on all seven linear kinds of every layer (112 modules), float32,
  lora_A ~ N(0, 1/in), lora_B ~ N(0, 0.002²).

Then, files in the page cache, in this one process, runs interleaved, medians compared:

* baseline: ``weightviz.stats`` over the 112 targeted base weights (a Checkpoint of those entries);
* weightviz: ``weightviz.adapters.check_adapter(base, adapter)`` (statuses, ‖ΔW‖/‖W‖, σ,
  effective rank, and the bf16 / fp16 merge loss: every base element read once, ΔW formed
  block by block);  target <= 2x the baseline;
* the r×r path (QR of B and Aᵀ, SVD of the r×r core) against ``torch.linalg.svdvals(B @ A)``,
  for the seven modules of one layer.

Also printed: the growth of anonymous memory during the checks (the merge-loss scan works in
blocks of 2^18 elements; ΔW is never kept).

    python benchmarks/bench_adapters.py [--layers 16] [--repeat 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_diff import PeakAnon  # noqa: E402
from bench_stats import rss_anon_kib, timed  # noqa: E402

HIDDEN, INTER, KV = 2048, 8192, 512
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (KV, HIDDEN),
          "self_attn.v_proj": (KV, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}


def write(path: str, tensors: list, dtype: str, fill) -> None:
    """A safetensors file written tensor by tensor (never all in memory)."""
    itemsize = {"BF16": 2, "F32": 4}[dtype]
    header, off = {}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in tensors:
            f.write(fill(name, shape))


def bf16_normal(rng, shape, std):
    x = (rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * np.float32(std)).view(np.uint32)
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16).astype(np.uint16).tobytes()     # round to nearest even


def make(tmp: str, layers: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    names = [(f"model.layers.{i}.{k}", s) for i in range(layers) for k, s in SHAPES.items()]
    base = os.path.join(tmp, "base.safetensors")
    write(base, [(n + ".weight", s) for n, s in names], "BF16", lambda n, s: bf16_normal(rng, s, 0.02))
    ad = os.path.join(tmp, "adapter")
    os.mkdir(ad)
    lora = []
    for n, (out, inn) in names:
        lora += [(f"base_model.model.{n}.lora_A.weight", (16, inn)), (f"base_model.model.{n}.lora_B.weight", (out, 16))]

    def fill(name, shape):
        std = 1 / np.sqrt(shape[1]) if ".lora_A." in name else 0.002
        return (rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * np.float32(std)).tobytes()
    write(os.path.join(ad, "adapter_model.safetensors"), lora, "F32", fill)
    with open(os.path.join(ad, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": sorted(
            k.split(".")[1] for k in SHAPES)}, f)
    return base, ad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    import torch
    import weightviz
    from weightviz.adapters import check_adapter
    from weightviz.adapters.delta import factors, spectrum
    from weightviz.checkpoint import Checkpoint
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="wv_bench_adapters_")
    try:
        t = time.perf_counter()
        base_path, ad_path = make(tmp, args.layers)
        gib = os.path.getsize(base_path) / 2**30
        print(f"wrote a {gib:.2f} GiB bf16 base ({args.layers} layers) and a rank-16 adapter on "
              f"{7 * args.layers} modules in {time.perf_counter() - t:.1f} s; torch threads "
              f"{torch.get_num_threads()}")
        base = weightviz.open(base_path)
        targeted = Checkpoint(dict(base.entries), format=base.format, path=base.path)
        weightviz.stats(targeted, progress=False)                      # warm the cache and imports
        rep = check_adapter(base, ad_path)
        print(f"check: {rep.verdict}")
        stats_t, check_t = [], []
        anon_before = peak = rss_anon_kib()
        for _ in range(args.repeat):
            stats_t.append(timed(lambda: weightviz.stats(targeted, progress=False)))
            with PeakAnon() as p:
                check_t.append(timed(lambda: check_adapter(base, ad_path)))
            peak = max(peak, p.peak)
        for i, what in enumerate(("wall", "CPU (user+sys)")):
            sm = statistics.median(r[i] for r in stats_t)
            cm = statistics.median(r[i] for r in check_t)
            print(f"{what}: stats over the targeted weights median {sm:.2f} s, runs "
                  f"{[round(r[i], 2) for r in stats_t]}")
            print(f"{what}: check_adapter                      median {cm:.2f} s, runs "
                  f"{[round(r[i], 2) for r in check_t]}")
            print(f"{what} ratio: {cm / sm:.2f}x  (target <= 2x)")
        print(f"anonymous memory: max growth during check {(peak - anon_before) / 1024:.1f} MiB")
        ad = weightviz.open(ad_path)
        fs = []
        for k in SHAPES:
            n = f"base_model.model.model.layers.0.{k}"
            fs.append(factors(ad[n + ".lora_A.weight"].torch(), ad[n + ".lora_B.weight"].torch(), 2.0,
                              transposed=False))
        small = min(timed(lambda: [spectrum(f) for f in fs])[0] for _ in range(3))
        dense = min(timed(lambda: [torch.linalg.svdvals(f.B2 @ f.A2 * 2.0) for f in fs])[0]
                    for _ in range(2))
        print(f"ΔW spectrum of one layer's 7 modules: r×r QR cores {small * 1e3:.1f} ms, "
              f"dense B @ A + svdvals {dense:.2f} s ({dense / small:,.0f}x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

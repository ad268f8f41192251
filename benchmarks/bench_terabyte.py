"""A terabyte, listed: a sharded safetensors checkpoint of 1 TB apparent size, made of sparse
files (a real header, then ``truncate`` to the size the header declares: no disk used).

Measures, in a fresh process (imports included, and after ``import weightviz``):

* ``weightviz.open(index)``, every tensor's name/shape/dtype, and the checkpoint's summary
  (``repr``) — target < 2 s;
* the layer browser on it (thousands of tensors): opening, typing a filter, clearing it, and
  selecting tensors — target < 100 ms per filter and per select.  The first visit of a large
  tensor starts its statistics scan in the background (the card shows the header at once);
  ``browser.wait()`` is timed separately.

    .venv/bin/python benchmarks/bench_terabyte.py [--tb 1.0] [--shards 100] [--layers 48] [--experts 32]

Imported by ``bench_listing.py`` (its last row).  The shards are deleted at the end.
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

# a mixture-of-experts block (Mixtral/DeepSeek-like): attention, a router and ``experts`` MLPs
def block(h: int, m: int, experts: int) -> list:
    out = [("input_layernorm.weight", (h,)), ("self_attn.q_proj.weight", (h, h)),
           ("self_attn.k_proj.weight", (h // 8, h)), ("self_attn.v_proj.weight", (h // 8, h)),
           ("self_attn.o_proj.weight", (h, h)), ("post_attention_layernorm.weight", (h,)),
           ("mlp.gate.weight", (experts, h))]
    for e in range(experts):
        out += [(f"mlp.experts.{e}.gate_proj.weight", (m, h)), (f"mlp.experts.{e}.up_proj.weight", (m, h)),
                (f"mlp.experts.{e}.down_proj.weight", (h, m))]
    return out


def _model(h: int, layers: int, experts: int) -> list:
    m = h // 2
    return ([("model.embed_tokens.weight", (128256, h))]
            + [(f"model.layers.{i}.{n}", s) for i in range(layers) for n, s in block(h, m, experts)]
            + [("model.norm.weight", (h,)), ("lm_head.weight", (128256, h))])


def _nbytes(shape) -> int:
    n = 2                                   # bf16
    for d in shape:
        n *= d
    return n


def write_sparse_checkpoint(folder: str, tb: float, shards: int, layers: int,
                            experts: int = 32) -> tuple[str, int, int]:
    """(index path, tensors, apparent bytes): the bf16 tensors of a ``layers``-block
    mixture-of-experts model whose hidden size makes the whole ``tb`` TB, spread over
    ``shards`` sparse safetensors files (written in well under a second)."""
    h = 512
    while sum(_nbytes(s) for _, s in _model(h + 512, layers, experts)) <= tb * 1e12:
        h += 512
    tensors = _model(h, layers, experts)
    per = -(-len(tensors) // shards)
    wmap, total = {}, 0
    for s in range(shards):
        part = tensors[s * per:(s + 1) * per]
        if not part:
            break
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in part:
            nbytes = _nbytes(shape)
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            wmap[name] = fname
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        path = os.path.join(folder, fname)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
        os.truncate(path, 8 + len(raw) + offset)
        total += 8 + len(raw) + offset
    index = os.path.join(folder, "model.safetensors.index.json")
    with open(index, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f)
    return index, len(tensors), total


CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import weightviz
t1 = time.perf_counter()
ckpt = weightviz.open(sys.argv[1])
rows = [(name, e.shape, e.dtype) for name, e in ckpt.items()]
summary = repr(ckpt)
t2 = time.perf_counter()
out = {"tensors": len(rows), "import_s": t1 - t0, "list_s": t2 - t1, "total_s": t2 - t0,
       "summary_head": summary.splitlines()[:3]}
if "--browser" in sys.argv:
    import matplotlib.pyplot  # noqa: F401  (a notebook has it already: %matplotlib inline)
    from weightviz.widgets import LayerBrowser
    t = time.perf_counter()
    b = LayerBrowser(ckpt)
    out["browser_open_s"] = time.perf_counter() - t
    times = {}
    for term in ("layers.4", "layers.47.mlp.experts.1", "down_proj", ""):
        t = time.perf_counter()
        b.filter.value = term
        times.setdefault("filter", []).append(time.perf_counter() - t)
    b.wait()
    for name in ("model.layers.3.input_layernorm.weight", "model.layers.10.mlp.experts.3.up_proj.weight",
                 "model.layers.11.self_attn.k_proj.weight", "model.norm.weight"):
        t = time.perf_counter()
        b.select(name)
        times.setdefault("select", []).append(time.perf_counter() - t)
        t = time.perf_counter()
        b.wait()
        times.setdefault("wait", []).append(time.perf_counter() - t)
    t = time.perf_counter()
    b.select("model.layers.10.mlp.experts.3.up_proj.weight")      # again: cached
    times["reselect"] = [time.perf_counter() - t]
    out["browser"] = {k: [round(x, 4) for x in v] for k, v in times.items()}
print(json.dumps(out))
"""


def measure(index: str, browser: bool = True) -> dict:
    args = [sys.executable, "-c", CHILD, index] + (["--browser"] if browser else [])
    # bytecode cached, as an installed package has it (pip compiles it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    res = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    if res.returncode:
        raise RuntimeError(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tb", type=float, default=1.0)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="wv-tb-", dir=args.dir)
    try:
        index, n, total = write_sparse_checkpoint(folder, args.tb, args.shards, args.layers,
                                                   args.experts)
        used = sum(os.stat(os.path.join(folder, f)).st_blocks * 512 for f in os.listdir(folder))
        print(f"{n} tensors in {args.shards} shards, apparent size {total / 1e12:.2f} TB, "
              f"on disk {used / 2**20:.1f} MiB")
        runs = [measure(index, browser=False) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total_s"])
        print(f"open + list {best['tensors']} tensors + summary: {best['total_s']:.2f} s whole process "
              f"(import weightviz {best['import_s']:.2f} s, listing {best['list_s']:.2f} s); target < 2 s")
        print("  " + "\n  ".join(best["summary_head"]))
        r = measure(index, browser=True)
        b = r["browser"]
        print(f"layer browser: open {r['browser_open_s'] * 1000:.0f} ms; filter "
              f"{', '.join(f'{x * 1000:.0f}' for x in b['filter'])} ms; select "
              f"{', '.join(f'{x * 1000:.0f}' for x in b['select'])} ms (background scan "
              f"{', '.join(f'{x * 1000:.0f}' for x in b['wait'])} ms); reselect "
              f"{b['reselect'][0] * 1000:.0f} ms; target < 100 ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

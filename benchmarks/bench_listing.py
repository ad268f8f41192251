"""Listing a large checkpoint: weightviz.open + names/shapes vs each format library's own listing.

Writes (in a temporary folder, deleted afterwards) one checkpoint of ``--tensors``
float32 tensors totalling ``--size-mb`` MB as safetensors, a torch.save zip, an
uncompressed .npz and an .h5, then for each file runs, in fresh subprocesses
(warm page cache), weightviz and the library's own listing:

* safetensors: ``safe_open(framework="np")`` keys + ``get_slice(k).get_shape()``
* torch:       ``torch.load(mmap=True, weights_only=True, map_location="cpu")`` keys + shapes
* npz:         ``np.load`` keys (no shapes: NpzFile gives none without loading members)
* npz+shapes:  ``zipfile`` + ``np.lib.format`` header of every member (what a listing needs)
* h5:          ``h5py`` ``visititems`` shapes
* keras-h5:    the same, on a Keras weights file laid out as Keras 3's legacy ``.h5`` writer
               does (one group per layer, ``layer_names`` / ``weight_names`` as variable-length
               string attributes, which weightviz reads in its helper process)
* gguf:        ``gguf.GGUFReader(PATH, "r")`` (llama.cpp's own reader) names + shapes, on F32
               tensors written by ``gguf.GGUFWriter`` with a few llama metadata keys
* gguf-vocab:  the same with a ``--gguf-vocab`` token vocabulary (tokens, scores, token types:
               what every real GGUF carries; GGUFReader walks each array element in Python)
* onnx:        ``onnx.load(PATH, load_external_data=False)`` initializer names + dims, on a
               model whose tensors are initializers with inline ``raw_data`` (``onnx.save``;
               one Identity node per tensor), the layout of a torch export under 2 GB

Times are wall-clock from before the first import to the end of the listing (imports
included: weightviz pays for torch only on torch files), and of the listing alone after
the top-level import; library and weightviz runs are interleaved, the best of
``--repeat`` runs is shown (the ratio of medians too);
memory is the child's peak RSS (``VmHWM`` in ``/proc/self/status``; ``ru_maxrss``
would include the parent's peak, inherited across fork + exec). The "extra"
column is weightviz's peak RSS minus the library's.

    .venv/bin/python benchmarks/bench_listing.py --size-mb 1024 --tensors 1000

It ends with the terabyte row of ``bench_terabyte.py`` (sparse shards, no disk used).
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

CHILD_PRELUDE = """
import json, resource, sys, time
t0 = time.perf_counter()
"""
CHILD_EPILOGUE = """
t2 = time.perf_counter()
# VmHWM (peak RSS of this process image): ru_maxrss would carry the parent's peak across fork+exec
with open("/proc/self/status") as fh:
    rss = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
print(json.dumps({"seconds": t2 - t0, "listing": t2 - t1, "rss_mb": rss, "n": len(out),
                  "torch": "torch" in sys.modules}))
"""

# (imports, listing): the listing's own time is measured after the imports
LISTINGS = {
    "weightviz": ("import weightviz", """
ckpt = weightviz.open(PATH)
out = [(name, e.shape, e.dtype) for name, e in ckpt.items()]
"""),
    "safetensors": ("from safetensors import safe_open", """
with safe_open(PATH, framework="np") as f:
    out = [(k, f.get_slice(k).get_shape()) for k in f.keys()]
"""),
    "torch": ("import torch", """
sd = torch.load(PATH, mmap=True, weights_only=True, map_location="cpu")
out = [(k, tuple(v.shape)) for k, v in sd.items()]
"""),
    "npz": ("import numpy as np", """
with np.load(PATH) as z:
    out = list(z.keys())
"""),
    "npz+shapes": ("import numpy as np, zipfile", """
out = []
with zipfile.ZipFile(PATH) as z:
    for name in z.namelist():
        with z.open(name) as m:
            version = np.lib.format.read_magic(m)
            read = np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0
            out.append((name[:-4], read(m)[0]))
"""),
    "h5": ("import h5py", """
out = []
with h5py.File(PATH, "r") as f:
    f.visititems(lambda n, o: out.append((n, o.shape)) if isinstance(o, h5py.Dataset) else None)
"""),
}
LISTINGS["keras-h5"] = LISTINGS["h5"]
LISTINGS["gguf"] = ("import gguf", """
r = gguf.GGUFReader(PATH, "r")
out = [(t.name, tuple(reversed(t.shape.tolist()))) for t in r.tensors]
""")
LISTINGS["gguf-vocab"] = LISTINGS["gguf"]
LISTINGS["onnx"] = ("import onnx", """
m = onnx.load(PATH, load_external_data=False)
out = [(t.name, tuple(t.dims)) for t in m.graph.initializer]
""")
FILES = {"safetensors": "ckpt.safetensors", "torch": "ckpt.pt", "npz": "ckpt.npz", "h5": "ckpt.h5",
         "keras-h5": "keras.h5", "gguf": "ckpt.gguf", "gguf-vocab": "vocab.gguf", "onnx": "ckpt.onnx"}


def write_onnx(path: str, arrays: dict):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    nodes = [helper.make_node("Identity", [k], [f"out{i}"]) for i, k in enumerate(arrays)]
    outs = [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, v.shape) for i, v in enumerate(arrays.values())]
    onnx.save(helper.make_model(helper.make_graph(nodes, "bench", [], outs, inits)), path)


def write_gguf(path: str, arrays: dict, vocab: int = 0):
    import gguf
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(4096)
    w.add_block_count(len(arrays))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if vocab:
        w.add_tokenizer_model("llama")
        w.add_token_list([f"tok{i}" for i in range(vocab)])
        w.add_token_scores([0.0] * vocab)
        w.add_token_types([1] * vocab)
    for k, v in arrays.items():
        w.add_tensor(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_files(folder: str, size_mb: int, n: int, vocab: int = 32000) -> dict[str, str]:
    import h5py
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    per = size_mb * 2**20 // (4 * n)
    rng = np.random.default_rng(0)
    block = rng.standard_normal(per, dtype=np.float32)
    arrays = {f"layers.{i:04d}.weight": (block + i).reshape(-1, 64) if per % 64 == 0 else block + i
              for i in range(n)}
    paths = {k: os.path.join(folder, v) for k, v in FILES.items()}
    save_file(arrays, paths["safetensors"])
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, paths["torch"])
    np.savez(paths["npz"], **arrays)
    with h5py.File(paths["h5"], "w") as f:
        for k, v in arrays.items():
            f[k] = v
    vstr = h5py.string_dtype()
    with h5py.File(paths["keras-h5"], "w") as f:      # Keras 3 `model.save_weights("x.h5")` layout
        layers = [f"dense_{i}" for i in range(n)]
        f.attrs.create("layer_names", layers, dtype=vstr)
        f.attrs.create("backend", "torch", dtype=vstr)
        f.attrs.create("keras_version", "3.15.1", dtype=vstr)
        for layer, v in zip(layers, arrays.values()):
            g = f.create_group(layer)
            g.attrs.create("weight_names", [f"{layer}/kernel"], dtype=vstr)
            g[f"{layer}/kernel"] = v
    write_gguf(paths["gguf"], arrays)
    write_gguf(paths["gguf-vocab"], arrays, vocab)
    write_onnx(paths["onnx"], arrays)
    return paths


def run(code: tuple[str, str], path: str) -> dict:
    imports, listing = code
    src = (CHILD_PRELUDE + f"PATH = {path!r}\n" + imports + "\nt1 = time.perf_counter()\n"
           + listing + CHILD_EPILOGUE)
    # bytecode cached, as an installed package has it (pip compiles it; numpy and h5py have theirs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=600, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_pair(lib_code: tuple[str, str], path: str, repeat: int) -> tuple[dict, dict]:
    """Library and weightviz runs interleaved (the machine's load hits both alike);
    the best time of each (noise only ever adds), the median peak RSS."""
    lib, wv = [], []
    for _ in range(repeat):
        lib.append(run(lib_code, path))
        wv.append(run(LISTINGS["weightviz"], path))

    def summary(runs):
        return {"seconds": min(r["seconds"] for r in runs),
                "listing": min(r["listing"] for r in runs),
                "median_s": statistics.median(r["seconds"] for r in runs),
                "rss_mb": statistics.median(r["rss_mb"] for r in runs),
                "n": runs[0]["n"], "torch": runs[0]["torch"]}
    return summary(lib), summary(wv)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--tensors", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write the temporary files")
    ap.add_argument("--gguf-vocab", type=int, default=32000, help="tokens in the gguf-vocab file "
                    "(Llama 2: 32,000; Llama 3: 128,256; Gemma 3: 262,144)")
    args = ap.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="wv-bench-", dir=args.dir)
    try:
        t = time.perf_counter()
        paths = write_files(folder, args.size_mb, args.tensors, args.gguf_vocab)
        sizes = {k: os.path.getsize(p) / 2**20 for k, p in paths.items()}
        print(f"wrote {len(paths)} files of ~{args.size_mb} MB, {args.tensors} tensors each "
              f"in {time.perf_counter() - t:.0f} s")
        for k, p in paths.items():          # warm the page cache for every run alike
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        rows = []
        cases = [(fmt, path) for fmt, path in paths.items()]
        cases.insert(3, ("npz+shapes", paths["npz"]))
        for fmt, path in cases:
            lib, wv = measure_pair(LISTINGS[fmt], path, args.repeat)
            if wv["n"] != args.tensors:
                raise RuntimeError(f"weightviz listed {wv['n']} tensors in {fmt}")
            rows.append((fmt, sizes[fmt.split("+")[0]], lib, wv))
        head = (f"{'format':<12} {'file MB':>8} | {'library s':>9} {'weightviz s':>11} {'ratio':>5} "
                f"{'median':>6} | {'lib list s':>10} {'wv open s':>9} | {'library MB':>10} "
                f"{'weightviz MB':>12} {'extra MB':>8} {'torch':>6}")
        print(head)
        print("-" * len(head))
        for fmt, size, lib, wv in rows:
            print(f"{fmt:<12} {size:>8.0f} | {lib['seconds']:>9.3f} {wv['seconds']:>11.3f} "
                  f"{wv['seconds'] / lib['seconds']:>5.2f} {wv['median_s'] / lib['median_s']:>6.2f} | "
                  f"{lib['listing']:>10.3f} {wv['listing']:>9.3f} | {lib['rss_mb']:>10.0f} "
                  f"{wv['rss_mb']:>12.0f} {wv['rss_mb'] - lib['rss_mb']:>8.0f} {str(wv['torch']):>6}")
        print("whole process (imports + listing), best of runs; 'median' = ratio of medians;\n"
              "'lib list s' = the library's listing after its import; 'wv open s' = weightviz.open +\n"
              "names/shapes after `import weightviz` (includes importing numpy, the reader and, for\n"
              "torch files, torch itself). Peak RSS = VmHWM of the child process.")
        print("\nA terabyte (benchmarks/bench_terabyte.py):")
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_terabyte
        bench_terabyte.main(["--repeat", str(args.repeat)] + (["--dir", args.dir] if args.dir else []))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""How fast does the LayerBrowser switch layers? (target: <= 100 ms for a 1M-parameter tensor)

Drives the widget from Python, as a click in the list does: ``browser.select(name)``
runs the same observer a front-end click runs, which computes the tensor's statistics
(first visit only; cached after), redraws the histograms into one reused Figure and
renders it to PNG bytes, then shows the heatmap / kernel grid (its block-averaged array
coloured straight to a palette PNG, with an HTML caption and colour scale: no
matplotlib drawing).

Also compares two ways of getting a Figure to the page: PNG bytes into an
``ipywidgets.Image`` (what the widgets do) versus ``display(fig)`` into an ``Output``
(IPython's inline formatter: ``print_figure(fig, 'png', bbox_inches='tight')``).

Run: ``.venv/bin/python benchmarks/bench_widgets.py [--repeat N]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def make_checkpoint(folder: str) -> str:
    """safetensors file: three ~1M-parameter linear layers (+ biases), two 1M-parameter convs."""
    from safetensors.numpy import save_file
    rng = np.random.default_rng(0)
    tensors = {
        "fc1.weight": rng.normal(0, 0.02, (1024, 1024)).astype(np.float32),
        "fc1.bias": rng.normal(0, 0.01, 1024).astype(np.float32),
        "fc2.weight": rng.standard_t(3, (1000, 1000)).astype(np.float32) * 0.05,
        "fc2.bias": np.zeros(1000, np.float32),
        "conv.weight": rng.normal(0, 0.1, (256, 256, 4, 4)).astype(np.float32),
        "conv.bias": rng.normal(0, 0.1, 256).astype(np.float32),
        "fc3.weight": rng.uniform(-0.05, 0.05, (512, 2048)).astype(np.float32),
        "fc3.bias": rng.normal(0, 0.01, 512).astype(np.float32),
        "conv2.weight": rng.normal(0, 0.05, (128, 512, 4, 4)).astype(np.float32),
    }
    path = os.path.join(folder, "big.safetensors")
    save_file(tensors, path)
    return path


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.1f} ms"


CPU: list[float] = []     # process CPU time of every timed() call, in order


def timed(fn) -> float:
    """Wall time of ``fn()``; its CPU time is appended to CPU (on a busy machine the CPU
    time is what the same call costs when it has a core to itself)."""
    c, t = time.process_time(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    CPU.append(time.process_time() - c)
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="rounds over the tensors (default 5)")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import weightviz as wv
    from weightviz.widgets import LayerBrowser

    with tempfile.TemporaryDirectory() as tmp:
        path = make_checkpoint(tmp)
        ckpt = wv.open(path)
        big = [n for n in ckpt if ckpt[n].numel >= 1_000_000]
        print(f"checkpoint: {len(ckpt)} tensors, {ckpt.num_params:,} parameters; "
              f"1M-parameter tensors: {', '.join(big)}")

        # warm matplotlib up once (first render in a process costs extra, see performance.md)
        LayerBrowser(wv.open(path), eager=False)

        t_open_lazy = timed(lambda: LayerBrowser(wv.open(path), eager=False))
        t_open_eager = timed(lambda: LayerBrowser(wv.open(path), eager=True))
        print(f"open browser (lazy, stats of the first tensor only): {ms(t_open_lazy)}")
        print(f"open browser (eager, every tensor scanned up front): {ms(t_open_eager)}")

        med = statistics.median
        order = big + [n for n in ckpt if n not in big]
        results = {}
        for label, cache in (("PNG cache on (default)", 32), ("PNG cache off", 0)):
            b = LayerBrowser(wv.open(path), eager=False, cache=cache)
            first, again, cfirst, cagain, toggles, ctoggles = [], [], [], [], [], []
            sent: list[float] = []      # when the histogram PNG went to the front end
            b.hist_canvas.image.observe(lambda _c: sent.append(time.perf_counter()), names="value")
            hist_first: list[float] = []
            for r in range(args.repeat):
                for name in order:
                    if b.selected == name:
                        continue
                    sent.clear()
                    start = time.perf_counter()
                    dt = timed(lambda: b.select(name))
                    assert b.last_error is None, b.last_error
                    if name in big and r == 0 and sent:
                        hist_first.append(sent[0] - start)
                    if name in big:
                        (first if r == 0 else again).append(dt)
                        (cfirst if r == 0 else cagain).append(CPU[-1])
                for _ in range(2):         # on and off again: revisits see the same toggles
                    toggles.append(timed(lambda: setattr(b.log_toggle, "value", not b.log_toggle.value)))
                    ctoggles.append(CPU[-1])
            print(f"-- {label}")
            rows = (("first visit (stats computed, drawn)", first, cfirst),
                    ("revisit (" + ("PNG from cache)    " if cache else "stats cached, redrawn)"),
                     again, cagain),
                    ("toggle log counts on/off", toggles, ctoggles))
            for what, wall, cpu in rows:
                print(f"   {what:<36} median wall {ms(med(wall))}, CPU {ms(med(cpu))}"
                      f"  (max wall {ms(max(wall)).strip()}, n={len(wall)})")
            if hist_first:
                results[label + " hist"] = med(hist_first)
                print(f"   {'first visit: card + histograms sent':<36} median wall "
                      f"{ms(med(hist_first))} (the heatmap / kernel grid follows)")
            results[label] = (med(first), med(cfirst), med(again), med(cagain))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        f_wall, f_cpu, r_wall, r_cpu = results["PNG cache on (default)"]
        h_wall = results.get("PNG cache on (default) hist", float("nan"))
        ok = lambda t: "meets" if t <= 0.1 else "MISSES"  # noqa: E731
        print(f"=> target 100 ms: revisit {ok(r_wall)} it ({ms(r_wall).strip()}); first visit: "
              f"card + histograms {ok(h_wall)} it ({ms(h_wall).strip()}), complete view incl. "
              f"heatmap/kernel grid {ok(f_wall)} it ({ms(f_wall).strip()}, CPU {ms(f_cpu).strip()}); "
              f"load average {load:.1f} on {os.cpu_count()} CPUs")

        # the renderers, on the histogram figure of the last selection
        import io
        from IPython.core.pylabtools import print_figure
        fig = b.last_figure
        png_times, output_times = [], []
        for _ in range(max(args.repeat, 5)):
            buf = io.BytesIO()
            png_times.append(timed(lambda: fig.canvas.print_png(buf)))
            output_times.append(timed(lambda: print_figure(fig, "png", bbox_inches="tight")))
        print(f"render histogram figure: Image widget PNG (canvas.print_png) median "
              f"{ms(statistics.median(png_times))}; Output + display(fig) (inline formatter, "
              f"bbox_inches='tight') median {ms(statistics.median(output_times))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

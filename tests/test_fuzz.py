"""Fuzzing every reader: random bytes, truncations and bit flips of small valid files of
every format must end in success or a WeightvizError, nothing else (no raw h5py / zip /
pickle / json exception, no RecursionError, no MemoryError, no hang).

Each file is opened in a long-lived child process (tests/hostile/worker.py), so a crash or
hang of a C library fails the example instead of killing pytest. A fixed, derandomised budget keeps CI reproducible and the module under ~60 s; raise it
locally with ``WEIGHTVIZ_FUZZ_EXAMPLES=2000`` (and ``WEIGHTVIZ_FUZZ_RANDOM=1`` for fresh
seeds). Success means the whole listing works too: names, reprs, HTML, the data of every
tensor up to 16 MiB, and the statistics table.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightviz as wv

from tests.hostile.cases_code import FIXTURES
from tests.hostile.cases_misc import VALID
from tests.hostile.worker import Worker

EXAMPLES = int(os.environ.get("WEIGHTVIZ_FUZZ_EXAMPLES", 300))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("WEIGHTVIZ_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FORCED = ("torch", "torchscript", "safetensors", "numpy", "hdf5", "keras-h5", "keras", "keras-json")
MAGICS = (b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00",
          b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", b"\x10\x00\x00\x00\x00\x00\x00\x00{",
          b"{\"class_name\": ", b"\x80\x02}q\x00")


def _npz_deflated(p: Path):
    import numpy as np
    np.savez_compressed(p, w=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.ones(2, dtype=np.float32))


def _torchscript(p: Path):
    import torch
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(p))


def _index(p: Path):
    import json
    VALID["safetensors"][1](p.parent / "model-1.safetensors")
    p.write_text(json.dumps({"metadata": {"total_size": 32},
                             "weight_map": {"fc.weight": "model-1.safetensors", "fc.bias": "model-1.safetensors"}}))


SEEDS = dict({k: v for k, v in VALID.items()}, **{
    "npz-deflated": ("weights_z.npz", _npz_deflated),
    "torchscript": ("scripted.pt", _torchscript),
    "safetensors-index": ("model.safetensors.index.json", _index),
    "keras-weights-h5": ("model_weights.h5", lambda p: shutil.copy(FIXTURES / "k2_weights.h5", p)),
    "keras-lambda-h5": ("lambda.h5", lambda p: shutil.copy(FIXTURES / "k2_lambda.h5", p)),
    "keras-lambda": ("lambda.keras", lambda p: shutil.copy(FIXTURES / "k3_lambda.keras", p)),
})


@pytest.fixture(scope="module")
def seeds():
    """name -> (file name, bytes) of one small valid file per format."""
    d = Path(tempfile.mkdtemp(prefix="wv-fuzz-seeds-"))
    try:
        out = {}
        for name, (fname, writer) in SEEDS.items():
            sub = d / name
            sub.mkdir()
            writer(sub / fname)
            out[name] = (fname, (sub / fname).read_bytes(), sub)
        for name, (fname, data, sub) in out.items():   # every seed must really open
            wv.open(sub / fname)
        yield out
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="wv-fuzz-"))
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def check(worker: Worker, path: Path, fmt: str | None = None) -> None:
    """Success or a WeightvizError; a raw exception, a crash or a hang fails (with the input kept
    by hypothesis for shrinking)."""
    res = worker.exercise(path, fmt)
    assert res["status"] in ("ok", "weightviz"), \
        f"{path.name} (format={fmt}): {res['status']}: {res.get('cls', '')} {res['message']}\n{res.get('traceback', '')}"


def _write(scratch: Path, fname: str, data: bytes, seed_dir: Path | None = None) -> Path:
    """Write the mutated bytes next to copies of the seed's companions (index shards)."""
    d = scratch / "case"
    if d.exists():
        shutil.rmtree(d)
    if seed_dir is not None:
        shutil.copytree(seed_dir, d)
    else:
        d.mkdir()
    p = d / fname
    p.write_bytes(data)
    return p


NAMES = st.sampled_from(sorted(SEEDS))


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from([v[0] for v in SEEDS.values()] + ["x.bin"]))
def test_random_bytes(worker, scratch, data, fname):
    check(worker, _write(scratch, fname, data))


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=2048), st.sampled_from(FORCED + (None,)))
def test_magic_then_random(worker, scratch, magic, tail, fmt):
    check(worker, _write(scratch, "weights.bin", magic + tail), fmt)


@FUZZ
@given(NAMES, st.floats(0, 1, exclude_max=True))
def test_truncated(worker, seeds, scratch, name, frac):
    fname, data, sub = seeds[name]
    check(worker, _write(scratch, fname, data[: int(len(data) * frac)], sub))


@FUZZ
@given(NAMES, st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7), st.booleans()),
                       min_size=1, max_size=8))
def test_bit_flips(worker, seeds, scratch, name, flips):
    """Flips land anywhere, or (flag set) in the first/last 512 bytes where headers and zip
    directories live."""
    fname, data, sub = seeds[name]
    buf = bytearray(data)
    for frac, bit, edge in flips:
        if edge:
            span = min(512, len(buf))
            i = int(frac * 2 * span)
            i = i if i < span else len(buf) - 1 - (i - span)
        else:
            i = int(frac * len(buf))
        buf[i] ^= 1 << bit
    check(worker, _write(scratch, fname, bytes(buf), sub))


@FUZZ
@given(NAMES, st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=64))
def test_overwritten_span(worker, seeds, scratch, name, frac, junk):
    fname, data, sub = seeds[name]
    i = int(frac * len(data))
    check(worker, _write(scratch, fname, data[:i] + junk + data[i + len(junk):], sub))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_truncation_sweep(worker, seeds, scratch, name):
    """Deterministic: every byte of the first 64, then 48 evenly spread cut points."""
    fname, data, sub = seeds[name]
    n = len(data)
    cuts = sorted(set(range(min(64, n))) | {n * k // 48 for k in range(48)} | {n - 1})
    for cut in cuts:
        check(worker, _write(scratch, fname, data[:cut], sub))

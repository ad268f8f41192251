"""Keras 3 ``.weights.h5`` of a *subclassed* ``keras.Model``: its attribute layers (``block1``,
``dsn1``, ...) and its own variables (``vars``) sit at the top level of the file, with no
``layers/`` group. It is read as Keras 3 weights (format ``keras-h5``, layout
``keras-weights-h5``, as a Functional model's file), under the names the same groups get
below ``layers/``; a plain HDF5 file with a top-level group named ``vars`` stays plain HDF5.

Fixture: tests/fixtures/keras_io/k3sub.weights.h5 and k3sub_expected.npz (``get_weights()`` as
``w0``, ``w1``, ... and ``paths``, Keras's ``w.path`` of each), written by
tests/fixtures/make_keras_io_fixtures.py (``build_subclassed``) with Keras 3.15, torch backend.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import weightviz as wv
from weightviz.formats import detect, keras_h5

FIX = Path(__file__).resolve().parent / "fixtures" / "keras_io"
PATH = FIX / "k3sub.weights.h5"
# Keras's variable path -> weightviz's name (no config: each vars/i under the layer's real name)
NAMES = {"detector/temperature": "detector/vars/0",
         "detector/block1/conv/kernel": "block1/conv/vars/0", "detector/block1/conv/bias": "block1/conv/vars/1",
         "detector/block1/bn/gamma": "block1/bn/vars/0", "detector/block1/bn/beta": "block1/bn/vars/1",
         "detector/block1/bn/moving_mean": "block1/bn/vars/2",
         "detector/block1/bn/moving_variance": "block1/bn/vars/3",
         "detector/dsn1/kernel": "dsn1/vars/0", "detector/dsn1/bias": "dsn1/vars/1",
         "detector/fuse/gain": "fuse/vars/0", "detector/head/kernel": "head/vars/0"}


def _expected() -> dict[str, np.ndarray]:
    with np.load(FIX / "k3sub_expected.npz", allow_pickle=False) as z:
        return {str(p): z[f"w{i}"] for i, p in enumerate(z["paths"])}


def test_the_fixture_has_no_layers_group():
    with h5py.File(PATH, "r", locking=False) as f:
        assert "layers" not in f and dict(f.attrs) == {}
        assert sorted(f) == ["avgpool", "block1", "dsn1", "fuse", "head", "vars"]
        assert list(f["vars"]) == ["0"]


def test_subclassed_model_weights_are_keras3_weights():
    want = _expected()
    assert sorted(want) == sorted(NAMES)
    assert detect(str(PATH)) == "keras-h5"
    ck = wv.open(PATH)
    normal = wv.open(FIX / "k3more.weights.h5")          # a Functional model's .weights.h5
    assert ck.format == normal.format == "keras-h5"
    assert ck.metadata["layout"] == normal.metadata["layout"] == "keras-weights-h5"
    assert ck.metadata["keras_major"] == 3 and ck.metadata["naming"] == "vars name attributes"
    assert sorted(ck) == sorted(NAMES.values())
    for path, arr in want.items():
        e = ck[NAMES[path]]
        assert e.shape == arr.shape and e.dtype == arr.dtype.name, path
        np.testing.assert_allclose(e.numpy(), arr, rtol=1e-6, atol=1e-7, err_msg=path)
    assert ck.groups == {"block1": [NAMES[p] for p in want if p.startswith("detector/block1/")],
                         "dsn1": ["dsn1/vars/0", "dsn1/vars/1"], "fuse": ["fuse/vars/0"],
                         "head": ["head/vars/0"], "detector": ["detector/vars/0"]}
    assert ck.num_params == sum(a.size for a in want.values())
    assert "keras" in repr(ck) and keras_h5.sniff(PATH.read_bytes()[:4096], str(PATH))


def test_same_names_as_under_layers(tmp_path):
    """The same groups moved below ``layers/`` (a Functional model's place) read the same."""
    moved = tmp_path / "moved.weights.h5"
    with h5py.File(PATH, "r", locking=False) as src, h5py.File(moved, "w") as dst:
        for k in src:
            src.copy(src[k], dst, name=k if k == "vars" else f"layers/{k}")
    a, b = wv.open(PATH), wv.open(moved)
    assert sorted(a) == sorted(b)
    for n in a:
        np.testing.assert_array_equal(a[n].numpy(), b[n].numpy())


def _plain(path: Path, build) -> Path:
    with h5py.File(path, "w") as f:
        build(f)
    return path


@pytest.mark.parametrize("kind", ["named_datasets", "root_dataset", "group_without_vars", "soft_link"])
def test_plain_hdf5_with_a_vars_group_stays_plain(tmp_path, kind):
    def build(f):
        if kind == "named_datasets":              # vars/<words>, not Keras's vars/0, vars/1
            f["vars/weights"] = np.arange(6, dtype=np.float32).reshape(2, 3)
            f["vars/bias"] = np.ones(3, np.float64)
            f["enc/vars/0"] = np.zeros(2, np.float32)
        else:
            f["vars/0"] = np.arange(4, dtype=np.float32)
            f["vars/1"] = np.ones(2, np.int64)
            if kind == "root_dataset":
                f["data"] = np.zeros((2, 2), np.float32)
            elif kind == "group_without_vars":
                f["results/loss"] = np.ones(5, np.float32)
            else:
                f["enc/vars/0"] = np.zeros(2, np.float32)
                f["alias"] = h5py.SoftLink("/enc")
    p = _plain(tmp_path / "data.h5", build)
    assert detect(str(p)) == "hdf5"
    ck = wv.open(p)
    assert ck.format == "hdf5"
    with h5py.File(p, "r", locking=False) as f:
        datasets = []
        f.visititems(lambda n, o: datasets.append(n) if isinstance(o, h5py.Dataset) else None)
    assert sorted(ck) == sorted(datasets)
    for n in ck:
        with h5py.File(p, "r", locking=False) as f:
            np.testing.assert_array_equal(ck[n].numpy(), f[n][()])


def test_keras_shaped_plain_file_still_lists_every_dataset(tmp_path):
    """A file that does look like a subclassed model's store (``vars/0``, ``enc/vars/0``)
    is read as one, and every dataset is still listed with its values."""
    def build(f):
        f["vars/0"] = np.arange(4, dtype=np.float32)
        f["enc/vars/0"] = np.full((2, 2), 3.0, np.float32)
    p = _plain(tmp_path / "looks_keras.h5", build)
    ck = wv.open(p)
    assert ck.format == "keras-h5" and sorted(ck) == ["enc/vars/0", "model/vars/0"]
    np.testing.assert_array_equal(ck["enc/vars/0"].numpy(), np.full((2, 2), 3.0, np.float32))
    plain = wv.open(p, format="hdf5")
    assert sorted(plain) == ["enc/vars/0", "vars/0"]

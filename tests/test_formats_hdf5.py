"""Plain HDF5 trees: paths as names, nothing read from outside the file, sizes checked."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import weightviz as wv
from weightviz.errors import CorruptFileError, UnsafeCheckpointError


def test_tree_of_datasets(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["enc/layer0/w"] = a
        f.create_dataset("enc/layer0/b", data=np.ones(3), compression="gzip", chunks=(3,))
        f["note"] = "a string"
        f["alias"] = h5py.SoftLink("/enc/layer0/w")
        f["scalar"] = np.int32(4)
    ckpt = wv.open(tmp_path / "t.h5")
    assert ckpt.format == "hdf5"
    assert sorted(ckpt) == ["enc/layer0/b", "enc/layer0/w", "scalar"]
    assert ckpt["enc/layer0/w"].location is not None          # contiguous: memory-mappable
    assert ckpt["enc/layer0/b"].location is None               # compressed: read through h5py
    np.testing.assert_array_equal(ckpt["enc/layer0/w"].numpy(), a)
    np.testing.assert_array_equal(ckpt["enc/layer0/b"].numpy(), np.ones(3))
    assert ckpt["scalar"].shape == () and ckpt["scalar"].numpy() == 4
    assert ckpt.extras["soft_links"] == {"alias": "/enc/layer0/w"}
    assert "note" in ckpt.extras["skipped_datasets"]


def test_user_block_offsets(tmp_path):
    with h5py.File(tmp_path / "u.h5", "w", userblock_size=4096) as f:
        f["x"] = np.arange(5.0)
    ckpt = wv.open(tmp_path / "u.h5")
    assert ckpt.format == "hdf5"
    np.testing.assert_array_equal(ckpt["x"].numpy(), np.arange(5.0))


def test_external_link_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["secret"] = np.arange(3.0)
    with h5py.File(tmp_path / "ext.h5", "w") as f:
        f["w"] = np.ones(2)
        f["grp/leak"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/secret")
    with pytest.raises(UnsafeCheckpointError, match="external link"):
        wv.open(tmp_path / "ext.h5")


def test_external_storage_refused(tmp_path):
    (tmp_path / "raw.bin").write_bytes(b"SECRET!!" * 4)
    with h5py.File(tmp_path / "es.h5", "w") as f:
        f.create_dataset("w", shape=(4,), dtype="<f8", external=[(str(tmp_path / "raw.bin"), 0, 32)])
    with pytest.raises(UnsafeCheckpointError, match="external files"):
        wv.open(tmp_path / "es.h5")


def test_virtual_dataset_refused(tmp_path):
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f["d"] = np.arange(4.0)
    layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(tmp_path / "src.h5"), "d", shape=(4,))
    with h5py.File(tmp_path / "vds.h5", "w") as f:
        f.create_virtual_dataset("v", layout)
    with pytest.raises(UnsafeCheckpointError, match="virtual"):
        wv.open(tmp_path / "vds.h5")


def test_hard_link_cycle_terminates(tmp_path):
    with h5py.File(tmp_path / "cyc.h5", "w") as f:
        g = f.create_group("a")
        g["w"] = np.ones(2)
        g["loop"] = g                      # hard link back to itself
    ckpt = wv.open(tmp_path / "cyc.h5")
    assert "a/w" in ckpt


def test_huge_declared_shape_is_corrupt(tmp_path):
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("w", shape=(2**40,), dtype="f4", chunks=(1024,), compression="gzip")
        f.create_dataset("v", shape=(2**36,), dtype="f4")
    with pytest.raises(CorruptFileError, match="declares"):
        wv.open(tmp_path / "big.h5")


def test_truncated_hdf5(tmp_path, model_files):
    path, _ = model_files["h5"]
    data = open(path, "rb").read()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError):
        wv.open(tmp_path / "cut.h5")

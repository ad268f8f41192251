"""NumPy .npy/.npz: plain, Fortran, big-endian, object arrays without running pickle code."""
from __future__ import annotations

import os
import struct
import zipfile

import numpy as np
import pytest

import weightviz as wv
from weightviz.errors import CorruptFileError, UnknownFormatError, UnsafeCheckpointError


class SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_npy_named_after_the_file(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "weights.npy", a)
    ckpt = wv.open(tmp_path / "weights.npy")
    assert list(ckpt) == ["weights"]
    assert ckpt["weights"].location is not None
    np.testing.assert_array_equal(ckpt["weights"].numpy(), a)


@pytest.mark.parametrize("arr", [
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.arange(5, dtype=">i4"),
    np.array(3.5, dtype=np.float16),
    np.zeros((0, 3), dtype=np.int64),
    np.array([True, False]),
], ids=["fortran", "big_endian", "scalar", "empty", "bool"])
def test_layouts_round_trip(tmp_path, arr):
    np.save(tmp_path / "a.npy", arr)
    e = wv.open(tmp_path / "a.npy")["a"]
    assert e.shape == arr.shape
    got = e.numpy()
    np.testing.assert_array_equal(got, arr)
    assert got.dtype == arr.dtype.newbyteorder("=")
    np.testing.assert_array_equal(e.torch().numpy(), arr)


def test_object_array_of_arrays(tmp_path):
    arrays = [np.ones((2, 3), np.float32), np.arange(4.0), np.zeros(1, np.int8)]
    np.save(tmp_path / "list.npy", np.array(arrays, dtype=object), allow_pickle=True)
    ckpt = wv.open(tmp_path / "list.npy")
    assert list(ckpt) == ["0", "1", "2"]
    assert ckpt.metadata["object_array"] is True
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(ckpt[str(i)].numpy(), a)
        assert ckpt[str(i)].dtype == a.dtype.name


def test_object_dict_and_non_array_items_kept_apart(tmp_path):
    np.save(tmp_path / "d.npy", {"w": np.ones(3), "meta": {"lr": 0.1}, "n": 3}, allow_pickle=True)
    ckpt = wv.open(tmp_path / "d.npy")
    assert list(ckpt) == ["w"]
    assert ckpt.extras["n"] == 3 and ckpt.extras["meta.lr"] == 0.1


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_malicious_object_array_never_runs(tmp_path, container):
    marker = tmp_path / "MARKER"
    evil = np.array([np.ones(2), SystemPayload(str(marker))], dtype=object)
    if container == "npy":
        path = tmp_path / "evil.npy"
        np.save(path, evil, allow_pickle=True)
    else:
        path = tmp_path / "evil.npz"
        np.savez(path, ok=np.ones(2), evil=evil)
    with pytest.raises(UnsafeCheckpointError) as err:
        wv.open(path)
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert err.value.needs and err.value.needs[0] in ("posix.system", "os.system")
    assert not marker.exists()


def test_npz_stored_members_are_mapped_and_deflated_ones_read(tmp_path):
    a, b = np.arange(6.0).reshape(2, 3), np.ones(4, np.float32)
    np.savez(tmp_path / "s.npz", a, b=b)
    np.savez_compressed(tmp_path / "c.npz", a, b=b)
    s, c = wv.open(tmp_path / "s.npz"), wv.open(tmp_path / "c.npz")
    with np.load(tmp_path / "s.npz") as z:
        assert list(s) == list(c) == list(z.keys())      # the archive's own order
    assert sorted(s) == ["arr_0", "b"]
    assert all(e.location is not None for e in s.values())
    assert all(e.location is None for e in c.values())
    for ck in (s, c):
        np.testing.assert_array_equal(ck["arr_0"].numpy(), a)
        np.testing.assert_array_equal(ck["b"].numpy(), b)


def test_npz_compressed_all_zeros_tensor_is_read_not_taken_for_a_bomb(tmp_path):
    # 16 MiB of zeros deflates about 1000:1, like a zip bomb; a freshly initialised
    # buffer or optimizer state looks exactly like this
    zeros, w = np.zeros((2048, 2048), np.float32), np.random.default_rng(0).standard_normal(8)
    np.savez_compressed(tmp_path / "z.npz", zeros=zeros, w=w)
    import zipfile
    with zipfile.ZipFile(tmp_path / "z.npz") as z:
        info = z.getinfo("zeros.npy")
        assert info.file_size > 200 * info.compress_size + (1 << 20)    # the old limit refused it
    ck = wv.open(tmp_path / "z.npz")
    assert ck["zeros"].shape == (2048, 2048)
    np.testing.assert_array_equal(ck["zeros"].numpy(), zeros)
    s = wv.stats(ck, progress=False)["zeros"]
    assert s.zeros == 1.0 and "all_zero" in s.flags


def _npy_header(shape, descr="<f4"):
    h = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    h += b" " * (-(len(h) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h


def test_huge_declared_shape_in_tiny_file_is_corrupt(tmp_path):
    p = tmp_path / "huge.npy"
    p.write_bytes(_npy_header((2**40, 2**20)) + b"\0" * 16)
    with pytest.raises(CorruptFileError, match="declares"):
        wv.open(p)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("w.npy", _npy_header((2**40,)) + b"\0" * 16)
    with pytest.raises(CorruptFileError, match="declares"):
        wv.open(tmp_path / "huge.npz")


def test_bad_headers(tmp_path):
    p = tmp_path / "bad.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 20) + b"{'descr': __import__")
    with pytest.raises(CorruptFileError):
        wv.open(p)
    p.write_bytes(b"\x93NUMPY\x09\x00abc")
    with pytest.raises(CorruptFileError, match="version"):
        wv.open(p)
    p.write_bytes(_npy_header((2,), descr="<U3") + b"\0" * 24)
    with pytest.raises(UnknownFormatError, match="not numeric"):
        wv.open(p)


def test_npz_duplicate_members_refused(tmp_path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(tmp_path / "dup.npz", "w") as z:
            z.writestr("w.npy", _npy_header((1,)) + b"\0" * 4)
            z.writestr("w.npy", _npy_header((1,)) + b"\1" * 4)
    with pytest.raises(UnsafeCheckpointError, match="two members"):
        wv.open(tmp_path / "dup.npz")

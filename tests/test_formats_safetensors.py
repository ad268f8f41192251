"""safetensors: header validation like the Rust reader, sharded indexes, bf16/fp8."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file

import weightviz as wv
from weightviz.errors import CorruptFileError, UnknownFormatError


def craft(path, header: dict, data: bytes, *, raw_header: bytes | None = None, pad=True):
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
                                   torch.float16, torch.int8, torch.bool, torch.float64])
def test_dtypes_round_trip(tmp_path, dtype):
    t = (torch.randn(3, 5) * 3).to(dtype)
    save_file({"t": t, "s": torch.tensor(2.5)}, tmp_path / "x.safetensors")
    ckpt = wv.open(tmp_path / "x.safetensors")
    e = ckpt["t"]
    assert e.dtype == str(dtype).removeprefix("torch.")
    got = e.torch()
    assert got.dtype == dtype and torch.equal(got.view(torch.uint8) if dtype.itemsize == 1 else got,
                                              t.view(torch.uint8) if dtype.itemsize == 1 else t)
    np.testing.assert_array_equal(e.numpy(), t.float().numpy() if dtype.is_floating_point else t.numpy())
    assert ckpt["s"].shape == () and ckpt["s"].numpy() == 2.5


def test_order_is_byte_order_and_metadata_kept(tmp_path):
    save_np({"b": np.zeros(2, np.float32), "a": np.zeros(3, np.float64)}, tmp_path / "m.safetensors",
            metadata={"format": "np"})
    ckpt = wv.open(tmp_path / "m.safetensors")
    offsets = [e.location.offset for e in ckpt.values()]
    assert offsets == sorted(offsets)
    assert ckpt.metadata["safetensors_metadata"] == {"format": "np"}


BAD_HEADERS = {
    "overlap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12),
    "gap": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8),
    "size_mismatch": ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8),
    "huge_shape": ({"a": {"dtype": "F32", "shape": [2**40, 2**20], "data_offsets": [0, 2**62]}}, 8),
    "past_end": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8),
    "trailing_bytes": ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 12),
    "bad_dtype": ({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, 4),
    "negative": ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4),
    "metadata_not_str": ({"__metadata__": {"k": 1}}, 0),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_headers_are_corrupt(tmp_path, case):
    header, nbytes = BAD_HEADERS[case]
    p = craft(tmp_path / "bad.safetensors", header, b"\0" * nbytes)
    with pytest.raises(CorruptFileError):
        wv.open(p)


def test_duplicate_names_and_non_json(tmp_path):
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' \
          b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    with pytest.raises(CorruptFileError, match="duplicate"):
        wv.open(craft(tmp_path / "dup.safetensors", {}, b"\0" * 8, raw_header=raw))
    with pytest.raises(CorruptFileError):
        wv.open(craft(tmp_path / "nj.safetensors", {}, b"", raw_header=b"{not json"), format="safetensors")


def test_declared_header_too_long(tmp_path):
    p = tmp_path / "long.safetensors"
    p.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises((CorruptFileError, UnknownFormatError)):
        wv.open(p)
    with pytest.raises(CorruptFileError, match="100 MB"):
        wv.open(p, format="safetensors")


def test_sharded_index(model_files, tmp_path):
    path, expected = model_files["sharded"]
    ckpt = wv.open(path)
    assert len(ckpt.metadata["shards"]) == 2
    assert ckpt.metadata["index_metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in expected.values())
    # the folder opens through its one index
    assert set(wv.open(os.path.dirname(path))) == set(expected)


def _index(tmp_path, weight_map, shards):
    for name, tensors in shards.items():
        save_file(tensors, tmp_path / name)
    p = tmp_path / "model.safetensors.index.json"
    p.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return p


def test_sharded_index_problems(tmp_path):
    t = {"a": torch.ones(2)}
    p = _index(tmp_path, {"a": "s1.safetensors", "b": "s2.safetensors"}, {"s1.safetensors": t})
    with pytest.raises(CorruptFileError, match="missing"):
        wv.open(p)
    p = _index(tmp_path, {"a": "../evil.safetensors"}, {})
    with pytest.raises(CorruptFileError, match="outside"):
        wv.open(p)
    p = _index(tmp_path, {"a": "s1.safetensors", "b": "s1.safetensors"}, {"s1.safetensors": t})
    with pytest.raises(CorruptFileError, match="not in their shards"):
        wv.open(p)
    p.write_text("{broken")
    with pytest.raises(CorruptFileError):
        wv.open(p)

"""Keras 3 sharded weights (``save_weights("x.weights.json", max_shard_size=...)``) against
files written by real Keras 3.15 (tests/fixtures/make_keras_sharded.py; no Keras here).

The fixture model's LSTM cells have their variables split over two shards each, and the
index maps some groups to one name (a string), others to a list, as Keras writes them.
"""
from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightviz
from weightviz.errors import CorruptFileError, UnknownFormatError, UnsafeCheckpointError, WeightvizError
from weightviz.formats import detect, keras_sharded

D = os.path.join(os.path.dirname(__file__), "fixtures", "keras_sharded")
INDEX, FLAT, ARCH = (os.path.join(D, n) for n in ("sharded.weights.json", "sharded.weights.h5", "sharded.json"))
LAYERS = ["conv", "bn", "bilstm", "inner", "head"]


def io_data():
    with np.load(os.path.join(D, "sharded_io.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_same(a, b):
    assert list(a) == list(b)
    assert a.groups == b.groups
    for name in a:
        ea, eb = a[name], b[name]
        assert (ea.name, ea.shape, ea.dtype) == (eb.name, eb.shape, eb.dtype)
        np.testing.assert_array_equal(ea.numpy(), eb.numpy())
    assert a.num_params == b.num_params == 823


@pytest.mark.parametrize("with_arch", [False, True])
def test_listing_equals_the_unsharded_file(with_arch):
    kw = {"architecture": ARCH} if with_arch else {}
    sharded, flat = weightviz.open(INDEX, **kw), weightviz.open(FLAT, **kw)
    assert len(sharded.metadata["shards"]) == 5
    assert_same(sharded, flat)
    assert list(sharded.groups) == LAYERS
    if with_arch:          # the split LSTM cell's second shard has no name attribute: named all the same
        assert list(sharded.groups["bilstm"]) == [
            f"bilstm/{d}_lstm/lstm_cell/{w}" for d in ("forward", "backward")
            for w in ("kernel", "recurrent_kernel", "bias")]


def test_per_layer_weights_are_keras_own():
    ck, data = weightviz.open(INDEX), io_data()
    for layer in LAYERS:
        got = [e.numpy() for e in ck.layer_weights(layer)]
        want = [data[f"w:{layer}:{i}"] for i in range(len(got))]
        assert f"w:{layer}:{len(got)}" not in data
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_format_metadata_and_detection():
    ck = weightviz.open(INDEX)
    assert detect(INDEX) == "keras-sharded"
    assert ck.format == "keras-h5" and ck.path == INDEX
    assert ck.metadata["layout"] == "keras-weights-sharded"
    assert ck.metadata["keras_major"] == 3 and ck.metadata["index_metadata"]["total_size"] == 4 * 823
    assert list(weightviz.open(INDEX, format="keras-sharded")) == list(ck)
    assert detect(ARCH) == "keras-json" and len(weightviz.open(ARCH)) == 0
    assert "Checkpoint (keras-h5)" in repr(ck) and "<table" in ck._repr_html_()


def test_a_folder_with_one_keras_index_opens_it(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(D, d, ignore=shutil.ignore_patterns("sharded.weights.h5"))
    assert list(weightviz.open(str(d))) == list(weightviz.open(INDEX))


def test_listing_is_lazy_and_each_entry_reads_its_own_shard(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("tensor data read while listing")
    monkeypatch.setattr(h5py.Dataset, "__getitem__", boom)
    monkeypatch.setattr(h5py.Dataset, "read_direct", boom)
    ck = weightviz.open(INDEX)
    monkeypatch.undo()
    shards = {os.path.basename(e.location.path) for e in ck.values()}
    assert shards == set(ck.metadata["shards"])
    flat = weightviz.open(FLAT)
    for name, e in ck.items():           # the loader (not the memory map) reads from the shard too
        np.testing.assert_array_equal(e._loader(), flat[name].numpy())


def test_safetensors_index_is_not_claimed(tmp_path):
    p = tmp_path / "model.safetensors.index.json"
    p.write_text(json.dumps({"metadata": {}, "weight_map": {"fc.weight": "model-00001.safetensors"}}))
    assert not keras_sharded.sniff(p.read_bytes(), str(p))
    assert detect(str(p)) == "safetensors"


# --------------------------------------------------------------------------- building

torch = pytest.importorskip("torch")


def max_error(model):
    data = io_data()
    with torch.no_grad():
        y = model(torch.from_numpy(data["x0"]))
    return float(np.abs(y.numpy().astype(np.float64) - data["y0"]).max())


@pytest.mark.parametrize("form", ["paths", "checkpoints"])
def test_built_model_predicts_like_keras(form):
    if form == "paths":
        model = weightviz.build(ARCH, weights=INDEX)
    else:
        model = weightviz.build(weightviz.open(ARCH), weights=weightviz.open(INDEX))
    assert max_error(model) <= 1e-5


def test_load_into_the_built_model_fits():
    model = weightviz.build(ARCH, weights=FLAT)
    report = weightviz.check(model, weightviz.open(INDEX, architecture=ARCH))
    flat = weightviz.check(model, weightviz.open(FLAT, architecture=ARCH))
    assert repr(report) == repr(flat).replace(FLAT, INDEX)


# --------------------------------------------------------------------------- hostile indexes and shards

@pytest.fixture
def copy(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(D, d)
    return d


def index_of(d):
    return json.loads((d / "sharded.weights.json").read_text())


def write_index(d, index):
    (d / "sharded.weights.json").write_text(json.dumps(index))
    return str(d / "sharded.weights.json")


def with_shard(d, old, new):
    index = index_of(d)
    for k, v in index["weight_map"].items():
        if v == old:
            index["weight_map"][k] = new
        elif isinstance(v, list):
            index["weight_map"][k] = [new if s == old else s for s in v]
    return write_index(d, index)


@pytest.mark.parametrize("name", ["../sharded_00000.weights.h5", "sub/sharded_00000.weights.h5",
                                  "..", "", "a\\b.weights.h5"])
def test_shard_names_with_paths_are_unsafe(copy, name):
    path = with_shard(copy, "sharded_00000.weights.h5", name)
    with pytest.raises(UnsafeCheckpointError, match="outside its own folder"):
        weightviz.open(path)


def test_absolute_shard_path_is_unsafe(copy):
    path = with_shard(copy, "sharded_00000.weights.h5", str(copy / "sharded_00000.weights.h5"))
    with pytest.raises(UnsafeCheckpointError):
        weightviz.open(path)


def test_a_shard_linking_out_of_the_folder_is_unsafe(copy, tmp_path):
    outside = tmp_path / "elsewhere.weights.h5"
    shutil.move(copy / "sharded_00002.weights.h5", outside)
    os.symlink(outside, copy / "sharded_00002.weights.h5")
    with pytest.raises(UnsafeCheckpointError, match="link out of its folder"):
        weightviz.open(str(copy / "sharded.weights.json"))


def test_a_link_inside_the_folder_is_fine(copy):
    shutil.move(copy / "sharded_00002.weights.h5", copy / "real.h5")
    os.symlink("real.h5", copy / "sharded_00002.weights.h5")
    assert_same(weightviz.open(str(copy / "sharded.weights.json")), weightviz.open(FLAT))


def test_a_hugging_face_cache_layout_opens(tmp_path):
    """snapshots/<rev>/ holds links into blobs/ for the index and every shard."""
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snap.mkdir(parents=True)
    for i, name in enumerate(sorted(os.listdir(D))):
        shutil.copy(os.path.join(D, name), blobs / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", snap / name)
    assert_same(weightviz.open(str(snap / "sharded.weights.json")), weightviz.open(FLAT))
    other = tmp_path / "other"
    other.mkdir()
    blob = os.readlink(snap / "sharded_00001.weights.h5").rsplit("/", 1)[1]
    shutil.move(blobs / blob, other / blob)                 # sharded_00001 now links elsewhere
    os.remove(snap / "sharded_00001.weights.h5")
    os.symlink(f"../../other/{blob}", snap / "sharded_00001.weights.h5")
    with pytest.raises(UnsafeCheckpointError, match="link out"):
        weightviz.open(str(snap / "sharded.weights.json"))


def test_missing_shard_is_named(copy):
    os.remove(copy / "sharded_00003.weights.h5")
    with pytest.raises(CorruptFileError, match="shard sharded_00003.weights.h5 .* is missing"):
        weightviz.open(str(copy / "sharded.weights.json"))


@pytest.mark.parametrize("content", [b"not an hdf5 file\n" * 10, b"\x89HDF\r\n\x1a\n" + b"\0" * 200])
def test_a_shard_that_is_not_hdf5_is_corrupt(copy, content):
    (copy / "sharded_00001.weights.h5").write_bytes(content)
    with pytest.raises(CorruptFileError, match="sharded_00001"):
        weightviz.open(str(copy / "sharded.weights.json"))


def test_a_truncated_shard_is_corrupt(copy):
    p = copy / "sharded_00004.weights.h5"
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(CorruptFileError):
        weightviz.open(str(copy / "sharded.weights.json"))


def test_a_directory_as_shard_is_corrupt(copy):
    path = with_shard(copy, "sharded_00001.weights.h5", "adir")
    (copy / "adir").mkdir()
    with pytest.raises(CorruptFileError, match="not a regular file"):
        weightviz.open(path)


def test_a_huge_index_is_refused_before_reading(tmp_path):
    p = tmp_path / "big.weights.json"
    with open(p, "wb") as f:
        f.write(b'{"weight_map": {"/layers/dense/vars": "a.weights.h5"')
        f.truncate(65 * 2**20)           # sparse: nothing is written, nothing may be read
    assert detect(str(p)) == "keras-sharded"
    with pytest.raises(CorruptFileError, match="too large"):
        weightviz.open(str(p))


@pytest.mark.parametrize("index", [[1, 2], {"weight_map": 3}, {"weight_map": {"/layers/d/vars": 7}},
                                   {"weight_map": {"layers/d": "sharded_00000.weights.h5"}},
                                   {"weight_map": {"/layers/d/vars": []}}, "not json {"])
def test_malformed_indexes_are_corrupt(tmp_path, index):
    p = tmp_path / "m.weights.json"
    p.write_text(index if isinstance(index, str) else json.dumps(index))
    with pytest.raises(CorruptFileError):
        weightviz.open(str(p))


def test_an_architecture_json_named_weights_json_says_so(tmp_path):
    p = tmp_path / "arch.weights.json"
    shutil.copy(ARCH, p)
    assert detect(str(p)) == "keras-json"          # content first
    with pytest.raises(CorruptFileError, match="format='keras-json'"):
        weightviz.open(str(p), format="keras-sharded")


def test_variables_the_index_does_not_map_are_refused(copy):
    index = index_of(copy)
    del index["weight_map"]["/layers/dense/vars"]
    with pytest.raises(CorruptFileError, match="does not map to it"):
        weightviz.open(write_index(copy, index))


def test_a_group_mapped_to_the_wrong_shard_is_refused(copy):
    index = index_of(copy)
    index["weight_map"]["/layers/conv1d/vars"] = ["sharded_00000.weights.h5", "sharded_00001.weights.h5"]
    with pytest.raises(CorruptFileError, match="holds no variables there"):
        weightviz.open(write_index(copy, index))


def test_a_variable_in_two_shards_is_refused(copy):
    with h5py.File(copy / "sharded_00004.weights.h5", "a") as f:
        f.create_dataset("layers/conv1d/vars/0", data=np.zeros((3, 4, 8), "float32"))
    index = index_of(copy)
    index["weight_map"]["/layers/conv1d/vars"] = ["sharded_00000.weights.h5", "sharded_00004.weights.h5"]
    with pytest.raises(CorruptFileError, match="stored in two shards"):
        weightviz.open(write_index(copy, index))


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_links_inside_a_shard_are_refused(copy, kind):
    with h5py.File(copy / "sharded_00004.weights.h5", "a") as f:
        g = f["layers/dense/vars"]
        del g["1"]
        g["1"] = (h5py.ExternalLink("/etc/passwd", "/x") if kind == "external"
                  else h5py.SoftLink("/layers/dense/vars/0"))
    with pytest.raises(UnsafeCheckpointError):
        weightviz.open(str(copy / "sharded.weights.json"))


def test_an_lfs_pointer_shard_is_named(copy):
    (copy / "sharded_00000.weights.h5").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 22384\n")
    with pytest.raises(UnknownFormatError, match="Git LFS pointer"):
        weightviz.open(str(copy / "sharded.weights.json"))


def test_an_empty_weight_map_is_an_empty_checkpoint(tmp_path):
    p = tmp_path / "none.weights.json"
    p.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": {}}))
    ck = weightviz.open(str(p))
    assert len(ck) == 0 and ck.format == "keras-h5"


def test_every_error_is_a_weightviz_error(copy):
    (copy / "sharded_00002.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(3000))
    with pytest.raises(WeightvizError):
        weightviz.open(str(copy / "sharded.weights.json"))


INDEX_BYTES = open(INDEX, "rb").read()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(INDEX_BYTES)), flips=st.lists(st.tuples(st.integers(0, len(INDEX_BYTES) - 1),
                                                                      st.integers(0, 255)), max_size=4))
def test_damaged_indexes_open_or_raise_a_weightviz_error(copy, cut, flips):
    data = bytearray(INDEX_BYTES)
    for i, b in flips:
        data[i] = b
    p = copy / "sharded.weights.json"
    p.write_bytes(bytes(data[:cut] if cut < len(data) else data))
    try:
        ck = weightviz.open(str(p))
    except WeightvizError:
        return
    assert all(os.path.dirname(e.location.path) == str(copy) for e in ck.values())

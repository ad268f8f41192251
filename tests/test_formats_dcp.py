"""torch.distributed.checkpoint folders: written by torch itself (one process, two gloo ranks
with FSDP2 and DTensors, HuggingFaceStorageWriter), read back exactly, and hostile
``.metadata`` files refused before anything runs or is read."""
from __future__ import annotations

import importlib.util
import io
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import weightviz as wv
from tests.hostile.catalog import damaged_folder_reads_cleanly
from weightviz.errors import CorruptFileError, UnsafeCheckpointError, WeightvizError
from weightviz.formats import _dcp_metadata

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("make_dcp_fixtures", ROOT / "tools" / "make_dcp_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcp")
    _tool().write(str(out), ("dcp-single", "dcp-2ranks", "dcp-hf"))
    return out


def _expected(fx, kind):
    return torch.load(fx / f"{kind}-expected.pt", weights_only=True)


def _copy(fx, kind, tmp_path) -> Path:
    dst = tmp_path / kind
    shutil.copytree(fx / kind, dst)
    return dst


# ---------------------------------------------------------------- written by torch, read exactly
def test_one_process_save_lists_the_model_and_keeps_the_rest_apart(fx):
    ck = wv.open(fx / "dcp-single")
    exp = _expected(fx, "dcp-single")
    assert ck.format == "dcp" and list(ck) == list(exp["model"])
    for name, t in exp["model"].items():
        assert ck[name].shape == tuple(t.shape) and ck[name].dtype == "float32"
        assert torch.equal(ck[name].torch(), t)
    assert ck.metadata["unwrapped"] == "model"
    assert set(ck.extras) == {"optim", "step", "rng", "extra"}
    assert "pickled object" in ck.extras["step"] and "not loaded" in ck.extras["step"]
    assert set(ck.extras["rng"]) == {"torch", "note"}
    assert np.array_equal(ck.extras["extra"]["nested"]["t"].numpy(), np.arange(6).reshape(2, 3))
    state = ck.extras["optim"]["state"]
    exp_state = exp["optim"]["state"]
    assert torch.equal(state["0"]["exp_avg"].torch(), exp_state[0]["exp_avg"])   # DCP keys are strings
    assert isinstance(ck.extras["optim"]["param_groups"], list)
    assert ck.metadata["kept_apart"]["optim"].startswith("optimizer, 24 tensors")
    text = repr(ck)
    assert "weights from  model" in text and "1 rank, 1 file" in text


def test_two_gloo_ranks_with_fsdp2_are_assembled_exactly(fx):
    ck = wv.open(fx / "dcp-2ranks")
    exp = _expected(fx, "dcp-2ranks")["model"]
    assert list(ck) == list(exp)
    for name, t in exp.items():
        assert ck[name].shape == tuple(t.shape)
        assert torch.equal(ck[name].torch(), t), name
        assert np.array_equal(ck[name].numpy(), t.numpy())
    assert ck.metadata["ranks"] == 2 and ck.metadata["files"] == ["__0_0.distcp", "__1_0.distcp"]
    assert "2 ranks, 2 files" in ck.metadata["display"]["sharding"]
    cols = ck.extras["extra"]["cols"]            # a DTensor Shard(1): chunks side by side
    assert np.array_equal(cols.numpy(), np.arange(15.0).reshape(5, 3))
    assert np.array_equal(ck.extras["extra"]["rep"].numpy(), np.ones(3))
    assert np.array_equal(ck.extras["extra"]["rows"].numpy(), np.arange(14.0).reshape(7, 2))
    assert "optim" in ck.extras and "model.embed.weight" not in ck


def test_the_metadata_file_itself_opens_the_folder(fx):
    ck = wv.open(fx / "dcp-2ranks" / ".metadata")
    assert ck.format == "dcp" and ck.path == str(fx / "dcp-2ranks")


def test_hf_flavoured_dcp_shards_are_assembled(fx):
    ck = wv.open(fx / "dcp-hf")
    exp = _expected(fx, "dcp-hf")["model"]
    assert ck.format == "dcp-safetensors" and set(ck) == set(exp)
    for name, t in exp.items():
        assert torch.equal(ck[name].torch(), t), name
    assert ck.metadata["ranks"] == 2


def test_verbs_work_on_the_folder(fx, capsys):
    tool = _tool()
    report = wv.check(tool.Net(), fx / "dcp-2ranks")
    assert report.fits and report.counts == {"ok": 8}
    model = tool.Net()
    wv.load(model, fx / "dcp-2ranks")
    exp = _expected(fx, "dcp-2ranks")["model"]
    assert all(torch.equal(v, exp[k]) for k, v in model.state_dict().items())
    table = wv.stats(fx / "dcp-2ranks")
    assert table["embed.weight"].numel == exp["embed.weight"].numel()
    assert table["embed.weight"].max == pytest.approx(float(exp["embed.weight"].max()))
    d = wv.diff(fx / "dcp-2ranks", fx / "dcp-2ranks" / ".metadata")
    assert len(d) == 8 and all(r.status == "same" for r in d)
    from weightviz.cli import main
    assert main(["inspect", str(fx / "dcp-2ranks")]) in (0, None)
    assert "2 ranks, 2 files" in capsys.readouterr().out


def test_browse_lists_the_folder(fx):
    pytest.importorskip("ipywidgets")
    b = wv.browse(fx / "dcp-2ranks")
    assert repr(b) == "LayerBrowser(8 tensors, selected='embed.weight')"


def test_the_loaders_pickle_and_read_one_tensor_at_a_time(fx):
    ck = wv.open(fx / "dcp-2ranks")
    e = pickle.loads(pickle.dumps(ck["layers.0.weight"]._loader))
    assert np.array_equal(e(), ck["layers.0.weight"].raw())


def test_dask_workers_give_the_local_table(fx):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        local = wv.stats(fx / "dcp-2ranks")
        remote = wv.stats(fx / "dcp-2ranks", client=client)
    assert list(local) == list(remote)
    for name in local:
        assert local[name].to_dict() == remote[name].to_dict()


# ---------------------------------------------------------------- hostile .metadata
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rewrite(folder: Path, change):
    """Load our own (trusted) .metadata with torch's classes, change it, write it back."""
    md = pickle.loads((folder / ".metadata").read_bytes())
    change(md)
    (folder / ".metadata").write_bytes(pickle.dumps(md))


def _tensor(md, name):
    return md.state_dict_metadata[name]


def _storage(md, name, offsets):
    return next(v for k, v in md.storage_data.items() if k.fqn == name and tuple(k.offset or ()) == offsets)


def test_a_reduce_payload_is_refused_and_never_runs(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)
    marker = tmp_path / "pwned"

    def inject(md):
        md.storage_meta = _Evil(marker)
    _rewrite(folder, inject)
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system") as err:
        wv.open(folder)
    assert "posix.system" in err.value.needs or "os.system" in err.value.needs
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    b"\x80\x04cbuiltins\neval\n(S'1+1'\ntR.",
    b"\x80\x04cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.",
    b"cos\nsystem\n(S'true'\ntR.",
])
def test_any_global_outside_the_allowlist_is_named(tmp_path, payload):
    (tmp_path / ".metadata").write_bytes(payload)
    with pytest.raises(UnsafeCheckpointError, match="names"):
        wv.open(tmp_path)


def test_huge_sizes_need_the_bytes_to_back_them(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)

    def huge(md):
        t = _tensor(md, "model.head.weight")
        t.size = torch.Size([2 ** 40, 6])
        t.chunks = [type(t.chunks[0])(torch.Size([0, 0]), torch.Size([2 ** 39, 6])),
                    type(t.chunks[0])(torch.Size([2 ** 39, 0]), torch.Size([2 ** 39, 6]))]
        for k in [k for k in md.storage_data if k.fqn == "model.head.weight"]:
            info = md.storage_data.pop(k)
            md.storage_data[type(k)(k.fqn, [0, 0] if k.offset[0] == 0 else [2 ** 39, 0])] = info
    _rewrite(folder, huge)
    with pytest.raises(CorruptFileError, match="needs .* bytes but its span holds"):
        wv.open(folder)


def _chunk_edit(name, edit):
    def change(md):
        t = _tensor(md, name)
        edit(md, t, type(t.chunks[0]))
    return change


@pytest.mark.parametrize("edit,match", [
    (lambda md, t, C: t.chunks.__setitem__(1, C(torch.Size([9, 0]), t.chunks[1].sizes)),
     "reach outside the tensor"),
    (lambda md, t, C: t.chunks.__setitem__(1, C(torch.Size([2, 0]), torch.Size([4, 6]))), "overlap"),
    (lambda md, t, C: t.chunks.pop(), r"cover 18 of its 36 elements"),
])
def test_chunks_that_do_not_tile_the_tensor_are_refused(fx, tmp_path, edit, match):
    folder = _copy(fx, "dcp-2ranks", tmp_path)
    _rewrite(folder, _chunk_edit("model.layers.0.weight", edit))
    with pytest.raises(CorruptFileError, match=match) as err:
        wv.open(folder)
    assert "model.layers.0.weight" in str(err.value)


def test_a_span_past_the_end_of_its_file(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)

    def long(md):
        _storage(md, "model.head.weight", (3, 0)).length = 10 ** 9
    _rewrite(folder, long)
    with pytest.raises(CorruptFileError, match="runs past the end") as err:
        wv.open(folder)
    assert "__1_0.distcp" in str(err.value) and "model.head.weight" in str(err.value)


def test_a_missing_rank_file_is_named(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)
    (folder / "__1_0.distcp").unlink()
    with pytest.raises(CorruptFileError, match=r"__1_0\.distcp is missing; it holds '"):
        wv.open(folder)


def test_a_file_name_outside_the_folder_is_refused(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)

    def escape(md):
        _storage(md, "model.head.weight", (0, 0)).relative_path = "../../etc/passwd"
    _rewrite(folder, escape)
    with pytest.raises(CorruptFileError, match="not inside the checkpoint folder"):
        wv.open(folder)


def test_a_file_truncated_after_opening_never_reads_as_zeros(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)
    ck = wv.open(folder)
    with open(folder / "__1_0.distcp", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptFileError, match="__1_0.distcp"):
        ck["layers.0.weight"].numpy()


def test_a_chunk_whose_pickle_asks_to_run_code_is_refused_when_read(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Evil(marker), buf)
    path = folder / "__1_0.distcp"
    start = path.stat().st_size
    path.write_bytes(path.read_bytes() + buf.getvalue())

    def point(md):
        info = _storage(md, "model.head.weight", (3, 0))
        info.offset, info.length = start, len(buf.getvalue())
    _rewrite(folder, point)
    ck = wv.open(folder)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        ck["head.weight"].numpy()
    assert not marker.exists()


def test_a_chunk_of_another_dtype_or_shape_is_refused(fx, tmp_path):
    folder = _copy(fx, "dcp-2ranks", tmp_path)

    def swap(md):      # point head.weight's first chunk at norm.weight's bytes
        _storage(md, "model.head.weight", (0, 0)).offset = _storage(md, "model.norm.weight", (0,)).offset
        _storage(md, "model.head.weight", (0, 0)).length = _storage(md, "model.norm.weight", (0,)).length
    _rewrite(folder, swap)
    ck = wv.open(folder)
    with pytest.raises(CorruptFileError, match="holds a float32 tensor of shape"):
        ck["head.weight"].numpy()


def test_the_allowlist_is_documented():
    assert "torch.distributed.checkpoint.metadata.Metadata" in _dcp_metadata.ALLOWED
    assert all(not name.startswith(("os.", "posix.", "subprocess")) for name in _dcp_metadata.ALLOWED)


def test_random_bytes_as_metadata_raise_weightviz_errors_only(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=150, deadline=None, database=None)
    @hypothesis.given(st.binary(max_size=300))
    def run(data):
        (tmp_path / ".metadata").write_bytes(b"\x80\x04" + data)
        try:
            wv.open(tmp_path)
        except WeightvizError:
            pass
    run()


def test_damaged_chunk_files_raise_weightviz_errors_only(fx, tmp_path):
    pytest.importorskip("hypothesis")
    folder = _copy(fx, "dcp-2ranks", tmp_path)
    target = folder / "__1_0.distcp"
    damaged_folder_reads_cleanly(folder, target, examples=60, max_flips=8)

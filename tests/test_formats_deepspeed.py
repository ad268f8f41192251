"""DeepSpeed ZeRO 1/2/3 checkpoints written by DeepSpeed itself (two CPU ranks, gloo), read
back equal to the model's own state_dict and to DeepSpeed's zero_to_fp32, and incomplete or
hostile folders refused with the file and the parameter named."""
from __future__ import annotations

import importlib.util
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import weightviz as wv
from weightviz.errors import CorruptFileError, UnknownFormatError, UnsafeCheckpointError

pytest.importorskip("deepspeed")
ROOT = Path(__file__).resolve().parents[1]
STEP = "global_step1"


def _tool():
    spec = importlib.util.spec_from_file_location("make_dcp_fixtures", ROOT / "tools" / "make_dcp_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    out = tmp_path_factory.mktemp("deepspeed")
    _tool().write(str(out), ("deepspeed",))
    return out


def _expected(fx, stage):
    return torch.load(fx / f"zero{stage}-expected.pt", weights_only=True)


def _zero_to_fp32(folder):
    import contextlib
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    with contextlib.redirect_stdout(io.StringIO()):
        sd = get_fp32_state_dict_from_zero_checkpoint(str(folder))
    return {k: v.detach().float() if hasattr(v, "detach") else v.contiguous().float() for k, v in sd.items()}


def _copy(fx, stage, tmp_path) -> Path:
    dst = tmp_path / f"zero{stage}"
    shutil.copytree(fx / f"zero{stage}", dst)
    return dst


# ---------------------------------------------------------------- written by DeepSpeed, read exactly
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_module_order_and_values_equal_the_models_state_dict(fx, stage):
    ck = wv.open(fx / f"zero{stage}")
    exp = _expected(fx, stage)
    assert ck.format == f"deepspeed-zero{stage}" and list(ck) == list(exp)
    for name, t in exp.items():
        assert ck[name].shape == tuple(t.shape)
        if stage == 2 and name != "scale":       # bf16 training: the module holds bf16
            assert ck[name].dtype == "bfloat16"
        assert torch.equal(ck[name].torch(), t), name
    assert ck.metadata["zero_stage"] == stage and ck.metadata["ranks"] == 2
    assert ck.metadata["latest"] == STEP
    assert f"ZeRO-{stage}, 2 ranks" in repr(ck)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_fp32_weights_equal_deepspeeds_own_zero_to_fp32(fx, stage):
    ck = wv.open(fx / f"zero{stage}" / STEP, fp32=True)
    ref = _zero_to_fp32(fx / f"zero{stage}")
    assert set(ref) <= set(ck)
    for name, t in ref.items():
        assert torch.equal(ck[name].torch().float(), t), name
    assert ck.metadata["values_from"].startswith("fp32 master partitions")
    assert ck["proj.weight"].shape == ck["embed.weight"].shape          # tied: shared_params
    assert np.array_equal(ck["proj.weight"].numpy(), ck["embed.weight"].numpy())


def test_listing_reads_no_optimizer_file(fx, monkeypatch):
    from weightviz.formats import _deepspeed_states
    opened = []
    real = _deepspeed_states.States.__init__

    def spy(self, path):
        opened.append(os.path.basename(path))
        real(self, path)
    monkeypatch.setattr(_deepspeed_states.States, "__init__", spy)
    ck = wv.open(fx / "zero3")
    assert opened == ["zero_pp_rank_0_mp_rank_00_model_states.pt"]
    ck["fc.weight"].numpy()
    assert sum("optim_states" in n for n in opened) == 2       # the pickles, once


def test_verbs_work_on_the_folder(fx):
    tool = _tool()
    report = wv.check(tool.DsNet(), fx / "zero3")
    assert report.fits
    table = wv.stats(fx / "zero3")
    assert table["fc.weight"].numel == 56
    d = wv.diff(fx / "zero1", fx / "zero3")
    assert len(d) == 10


def test_dask_workers_reopen_the_folder_the_same_way(fx):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        for kw in ({}, {"fp32": True}):
            ck = wv.open(fx / "zero2", **kw)
            local, remote = wv.stats(ck), wv.stats(ck, client=client)
            for name in local:
                assert local[name].to_dict() == remote[name].to_dict(), (kw, name)


# ---------------------------------------------------------------- incomplete and hostile folders
def test_a_missing_optimizer_rank_is_named(fx, tmp_path):
    folder = _copy(fx, 3, tmp_path)
    (folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(CorruptFileError, match="optimizer files of rank 1 are missing"):
        wv.open(folder)


def test_a_missing_model_states_rank_is_named(fx, tmp_path):
    folder = _copy(fx, 3, tmp_path)
    (folder / STEP / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    with pytest.raises(CorruptFileError, match="model states files of rank 1 are missing"):
        wv.open(folder)


def _rewrite(path: Path, change):
    """Our own (trusted) DeepSpeed file, loaded with DeepSpeed's classes, changed, saved."""
    import deepspeed  # noqa: F401 - its classes are in the pickle
    sd = torch.load(path, weights_only=False)
    change(sd)
    torch.save(sd, path)


def test_a_partition_count_that_disagrees_with_the_files(fx, tmp_path):
    folder = _copy(fx, 3, tmp_path)
    path = folder / STEP / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    _rewrite(path, lambda sd: sd["optimizer_state_dict"].__setitem__("partition_count", 3))
    ck = wv.open(folder)
    with pytest.raises(CorruptFileError, match="partition_count is 3 but 2 optimizer files") as err:
        ck["fc.weight"].numpy()
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in str(err.value)
    assert "fc.weight" in str(err.value)


def test_partitions_too_small_for_the_parameters(fx, tmp_path):
    folder = _copy(fx, 3, tmp_path)
    path = folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt"

    def shrink(sd):
        groups = sd["optimizer_state_dict"]["fp32_flat_groups"]
        groups[-1] = groups[-1][:-5].clone()
    _rewrite(path, shrink)
    with pytest.raises(CorruptFileError, match="elements per rank"):
        wv.open(folder)["fc.weight"].numpy()


def test_a_truncated_partition_never_reads_as_zeros(fx, tmp_path):
    folder = _copy(fx, 3, tmp_path)
    ck = wv.open(folder)
    path = folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(CorruptFileError):
        ck["fc.weight"].numpy()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_call_hidden_in_the_model_states_is_refused(fx, tmp_path):
    folder = _copy(fx, 1, tmp_path)
    marker = tmp_path / "pwned"
    _rewrite(folder / STEP / "mp_rank_00_model_states.pt",
             lambda sd: sd.__setitem__("lr_scheduler", _Evil(marker)))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        wv.open(folder)
    assert not marker.exists()


def test_deepspeeds_own_records_are_listed_not_imported(fx):
    ck = wv.open(fx / "zero1", fp32=True)
    ck["fc.weight"].numpy()
    from weightviz.formats._deepspeed_states import DATA_CLASSES
    assert "deepspeed.runtime.zero.config.ZeroStageEnum" in DATA_CLASSES


def test_latest_must_name_a_folder_beside_it(fx, tmp_path):
    folder = _copy(fx, 1, tmp_path)
    (folder / "latest").write_text("../../etc")
    with pytest.raises(CorruptFileError, match="not a folder beside it"):
        wv.open(folder)


def test_tensor_parallel_checkpoints_are_refused_clearly(fx, tmp_path):
    folder = _copy(fx, 1, tmp_path)
    shutil.copy(folder / STEP / "mp_rank_00_model_states.pt", folder / STEP / "mp_rank_01_model_states.pt")
    with pytest.raises(UnknownFormatError, match="tensor-parallel"):
        wv.open(folder)


@pytest.mark.parametrize("name", ["zero_pp_rank_0_mp_rank_00_model_states.pt",
                                  "zero_pp_rank_1_mp_rank_00_optim_states.pt"])
def test_damaged_files_raise_weightviz_errors_only(fx, tmp_path, name):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st
    from weightviz.errors import WeightvizError
    folder = _copy(fx, 3, tmp_path)
    target = folder / STEP / name
    original = target.read_bytes()

    @hypothesis.settings(max_examples=40, deadline=None, database=None)
    @hypothesis.given(st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)),
                               min_size=1, max_size=6),
                      st.integers(len(original) // 2, len(original)))
    def run(flips, keep):
        data = bytearray(original[:keep])
        for pos, x in flips:
            if pos < len(data):
                data[pos] ^= x
        target.write_bytes(bytes(data))
        try:
            ck = wv.open(folder)
            for n in ck:
                ck[n].numpy()
        except WeightvizError:
            pass
    run()

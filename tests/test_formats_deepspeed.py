"""DeepSpeed ZeRO 1/2/3 checkpoints written by DeepSpeed itself (two CPU ranks, gloo; committed
in tests/fixtures/deepspeed/ by tools/make_deepspeed_fixtures.py with the model's own
state_dict and DeepSpeed's own zero_to_fp32 beside them), read back exactly, and incomplete or
hostile copies refused with the file and the parameter named.

DeepSpeed is not needed to run these: the copies are damaged without it (its classes in the
pickles are stood in for by ``craft.resave_torch``). Only the live tests, which write a
checkpoint or read one with DeepSpeed itself, skip without it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import weightviz as wv
from tests.hostile.catalog import damaged_folder_reads_cleanly
from tests.hostile import craft
from weightviz.errors import CorruptFileError, UnknownFormatError, UnsafeCheckpointError

ROOT = Path(__file__).resolve().parents[1]
FX = ROOT / "tests" / "fixtures" / "deepspeed"
STEP = "global_step1"
STAGES = [1, 2, 3]


def _tool(name="make_dcp_fixtures"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ck(stage, root=FX) -> Path:
    return root / f"zero{stage}" / "checkpoint"


def _expected(stage, which="module", root=FX) -> dict:
    """expected_{which}.safetensors, in the order it was saved (kept in its metadata)."""
    from safetensors import safe_open
    with safe_open(str(root / f"zero{stage}" / f"expected_{which}.safetensors"), "pt") as f:
        order = json.loads(f.metadata()["fixture"])["order"]
        return {n: f.get_tensor(n) for n in order}


def _copy(stage, tmp_path) -> Path:
    dst = tmp_path / f"zero{stage}"
    shutil.copytree(_ck(stage), dst)
    return dst


def _zero_to_fp32(folder) -> dict:
    """DeepSpeed's own reassembly (live tests only)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        sd = get_fp32_state_dict_from_zero_checkpoint(str(folder))
    return {k: v.detach().float() if hasattr(v, "detach") else v.contiguous().float() for k, v in sd.items()}


def test_the_committed_folders_are_small_and_complete():
    files = [p for p in FX.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 600_000
    for stage in STAGES:
        step = _ck(stage) / STEP
        assert (_ck(stage) / "latest").read_text().strip() == STEP
        assert len([n for n in os.listdir(step) if n.endswith("optim_states.pt")]) == 2
        assert not list(_ck(stage).glob("*.py"))         # DeepSpeed's zero_to_fp32.py is not kept


# ---------------------------------------------------------------- written by DeepSpeed, read exactly
@pytest.mark.parametrize("stage", STAGES)
def test_module_order_and_values_equal_the_models_state_dict(stage):
    ck = wv.open(_ck(stage))
    exp = _expected(stage)
    assert ck.format == f"deepspeed-zero{stage}" and list(ck) == list(exp)
    for name, t in exp.items():
        assert ck[name].shape == tuple(t.shape)
        if stage == 2 and name != "scale":       # bf16 training: the module holds bf16
            assert ck[name].dtype == "bfloat16"
        assert torch.equal(ck[name].torch(), t), name
    assert ck.metadata["zero_stage"] == stage and ck.metadata["ranks"] == 2
    assert ck.metadata["latest"] == STEP
    assert f"ZeRO-{stage}, 2 ranks" in repr(ck)


@pytest.mark.parametrize("stage", STAGES)
def test_fp32_weights_equal_deepspeeds_own_zero_to_fp32(stage):
    ck = wv.open(_ck(stage) / STEP, fp32=True)
    ref = _expected(stage, "fp32")
    assert set(ref) <= set(ck)
    for name, t in ref.items():
        assert torch.equal(ck[name].torch().float(), t.float()), name
    assert ck.metadata["values_from"].startswith("fp32 master partitions")
    assert ck["proj.weight"].shape == ck["embed.weight"].shape          # tied: shared_params
    assert np.array_equal(ck["proj.weight"].numpy(), ck["embed.weight"].numpy())
    assert not any(np.isnan(ck[n].numpy()).any() for n in ck)          # the NaN padding is cut


def test_listing_reads_no_optimizer_file(monkeypatch):
    from weightviz.formats import _deepspeed_states
    opened = []
    real = _deepspeed_states.States.__init__

    def spy(self, path):
        opened.append(os.path.basename(path))
        real(self, path)
    monkeypatch.setattr(_deepspeed_states.States, "__init__", spy)
    ck = wv.open(_ck(3))
    assert opened == ["zero_pp_rank_0_mp_rank_00_model_states.pt"]
    ck["fc.weight"].numpy()
    assert sum("optim_states" in n for n in opened) == 2       # the pickles, once


def test_verbs_work_on_the_folder():
    report = wv.check(_tool().DsNet(), _ck(3))
    assert report.fits
    table = wv.stats(_ck(3))
    assert table["fc.weight"].numel == 56
    d = wv.diff(_ck(1), _ck(3))
    assert len(d) == 10


def test_browse_and_the_cli_take_the_folder(capsys):
    pytest.importorskip("ipywidgets")
    b = wv.browse(_ck(2))
    assert "LayerBrowser" in type(b).__name__
    from weightviz.cli import main
    assert main(["inspect", str(_ck(3))]) in (0, None)
    out = capsys.readouterr().out
    assert "deepspeed-zero3" in out and "ZeRO-3, 2 ranks" in out and "fc" in out


def test_format_names_the_folder_reader():
    assert wv.open(_ck(1), format="deepspeed").format == "deepspeed-zero1"
    assert wv.open(_ck(3) / STEP, format="deepspeed").format == "deepspeed-zero3"
    from weightviz.formats import detect
    assert detect(str(_ck(2))) == detect(str(_ck(2) / STEP)) == "deepspeed"
    with pytest.raises(UnknownFormatError, match="it is a 'deepspeed' checkpoint") as err:
        wv.open(_ck(1), format="dcp")
    assert "format='deepspeed'" in str(err.value)
    with pytest.raises(UnknownFormatError, match="is a file, not a local folder"):
        wv.open(_ck(1) / STEP / "mp_rank_00_model_states.pt", format="deepspeed")


def test_dask_workers_reopen_the_folder_the_same_way():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        for kw in ({}, {"fp32": True}):
            ck = wv.open(_ck(2), **kw)
            local, remote = wv.stats(ck), wv.stats(ck, client=client)
            for name in local:
                assert local[name].to_dict() == remote[name].to_dict(), (kw, name)


# ---------------------------------------------------------------- incomplete and hostile copies
def test_a_missing_optimizer_rank_is_named(tmp_path):
    folder = _copy(3, tmp_path)
    (folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(CorruptFileError, match="optimizer files of rank 1 are missing"):
        wv.open(folder)


def test_a_missing_model_states_rank_is_named(tmp_path):
    folder = _copy(3, tmp_path)
    (folder / STEP / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    with pytest.raises(CorruptFileError, match="model states files of rank 1 are missing"):
        wv.open(folder)


def test_a_missing_rank_of_a_zero_1_folder_is_named_too(tmp_path):
    folder = _copy(1, tmp_path)                # the module weights are all in rank 0's file,
    (folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()    # but it is partial
    for kw in ({}, {"fp32": True}):
        with pytest.raises(CorruptFileError, match="optimizer files of rank 1 are missing"):
            wv.open(folder, **kw)


def test_the_edits_need_no_deepspeed_and_keep_the_file_readable(tmp_path):
    """craft.resave_torch rewrites a file with stand-ins for DeepSpeed's classes: unchanged,
    it reads back to the same values and the same recorded DeepSpeed records."""
    folder = _copy(1, tmp_path)
    for path in sorted((folder / STEP).iterdir()):
        craft.resave_torch(path, lambda sd: None)
    a, b = wv.open(folder, fp32=True), wv.open(_ck(1), fp32=True)
    for name in b:
        assert np.array_equal(a[name].numpy(), b[name].numpy()), name
    from weightviz.formats._deepspeed_states import States
    classes = States(str(folder / STEP / "zero_pp_rank_0_mp_rank_00_optim_states.pt")).classes
    assert "deepspeed.runtime.zero.config.ZeroStageEnum" in set(classes)


def test_a_partition_count_that_disagrees_with_the_files(tmp_path):
    folder = _copy(3, tmp_path)
    path = folder / STEP / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    craft.resave_torch(path, lambda sd: sd["optimizer_state_dict"].__setitem__("partition_count", 3))
    ck = wv.open(folder)
    with pytest.raises(CorruptFileError, match="partition_count is 3 but 2 optimizer files") as err:
        ck["fc.weight"].numpy()
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in str(err.value)
    assert "fc.weight" in str(err.value)


def test_a_partition_count_list_in_zero_2(tmp_path):
    folder = _copy(2, tmp_path)
    path = folder / STEP / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    craft.resave_torch(path, lambda sd: sd["optimizer_state_dict"].__setitem__("partition_count", [2, 4]))
    ck = wv.open(folder, fp32=True)
    with pytest.raises(CorruptFileError, match="partition_count is 4 but 2 optimizer files"):
        ck["fc.weight"].numpy()


def _shrink(key):
    def change(sd):
        groups = sd["optimizer_state_dict"][key]
        groups[-1] = groups[-1][:-5].clone()
    return change


def test_partitions_too_small_for_the_parameters(tmp_path):
    folder = _copy(3, tmp_path)
    craft.resave_torch(folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt", _shrink("fp32_flat_groups"))
    with pytest.raises(CorruptFileError, match="elements per rank"):
        wv.open(folder)["fc.weight"].numpy()


def test_a_short_zero_1_partition_is_named(tmp_path):
    folder = _copy(1, tmp_path)
    path = folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    craft.resave_torch(path, _shrink("single_partition_of_fp32_groups"))
    with pytest.raises(CorruptFileError, match="need .* elements but its partitions hold") as err:
        wv.open(folder, fp32=True)["fc.weight"].numpy()
    assert "fc.weight" in str(err.value)


def test_a_truncated_partition_never_reads_as_zeros(tmp_path):
    folder = _copy(3, tmp_path)
    ck = wv.open(folder)
    path = folder / STEP / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(CorruptFileError):
        ck["fc.weight"].numpy()


@pytest.mark.parametrize("stage,name", [(1, "mp_rank_00_model_states.pt"),
                                        (3, "zero_pp_rank_1_mp_rank_00_optim_states.pt")])
def test_a_call_hidden_in_a_states_file_is_refused(tmp_path, stage, name):
    folder = _copy(stage, tmp_path)
    marker = tmp_path / craft.MARKER
    craft.resave_torch(folder / STEP / name, lambda sd: sd.__setitem__("lr_scheduler", craft.system_payload(marker)))
    with pytest.raises(UnsafeCheckpointError, match="system") as err:
        ck = wv.open(folder)
        for n in ck:
            ck[n].numpy()
    assert "DeepSpeed's own data records" in str(err.value)
    assert not marker.exists()


def test_deepspeeds_own_records_are_listed_not_imported():
    import sys
    before = sys.modules.get("deepspeed") is not None          # a live test may have imported it
    ck = wv.open(_ck(1), fp32=True)
    ck["fc.weight"].numpy()
    from weightviz.formats._deepspeed_states import DATA_CLASSES, States
    assert "deepspeed.runtime.zero.config.ZeroStageEnum" in DATA_CLASSES
    classes = States(str(_ck(1) / STEP / "zero_pp_rank_0_mp_rank_00_optim_states.pt")).classes
    assert "deepspeed.runtime.zero.config.ZeroStageEnum" in classes
    assert before or sys.modules.get("deepspeed") is None


@pytest.mark.parametrize("tag", ["../../etc", "/etc", "global_step9", ""])
def test_latest_must_name_a_folder_beside_it(tmp_path, tag):
    folder = _copy(1, tmp_path)
    (folder / "latest").write_text(tag)
    with pytest.raises(CorruptFileError, match="not a folder beside it"):
        wv.open(folder)


def test_tensor_parallel_checkpoints_are_refused_clearly(tmp_path):
    folder = _copy(1, tmp_path)
    shutil.copy(folder / STEP / "mp_rank_00_model_states.pt", folder / STEP / "mp_rank_01_model_states.pt")
    with pytest.raises(UnknownFormatError, match="tensor-parallel"):
        wv.open(folder)


@pytest.mark.parametrize("name", ["zero_pp_rank_0_mp_rank_00_model_states.pt",
                                  "zero_pp_rank_1_mp_rank_00_optim_states.pt"])
def test_damaged_files_raise_weightviz_errors_only(tmp_path, name):
    pytest.importorskip("hypothesis")
    folder = _copy(3, tmp_path)
    target = folder / STEP / name
    damaged_folder_reads_cleanly(folder, target, examples=40, max_flips=6)


# ---------------------------------------------------------------- live: DeepSpeed itself
@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """The three stages written again by DeepSpeed now (two ranks, ~15 s)."""
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("deepspeed-fresh") / "deepspeed"
    _tool("make_deepspeed_fixtures").write(str(out))
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_live_a_fresh_write_reads_like_the_committed_one(fresh, stage):
    ck, committed = wv.open(_ck(stage, fresh)), wv.open(_ck(stage))
    assert [(n, e.shape, e.dtype) for n, e in ck.items()] == \
        [(n, e.shape, e.dtype) for n, e in committed.items()]
    for name, t in _expected(stage, root=fresh).items():
        assert torch.equal(ck[name].torch(), t), name
    fp32, ref = wv.open(_ck(stage, fresh), fp32=True), _zero_to_fp32(_ck(stage, fresh))
    for name, t in ref.items():
        assert torch.equal(fp32[name].torch().float(), t), name


@pytest.mark.parametrize("stage", STAGES)
def test_live_the_committed_fp32_values_are_deepspeeds_own(stage):
    pytest.importorskip("deepspeed")
    ref, exp = _zero_to_fp32(_ck(stage)), _expected(stage, "fp32")
    assert list(ref) == list(exp)
    for name, t in ref.items():
        assert torch.equal(exp[name].float(), t), name


def test_live_deepspeed_loads_a_file_the_stand_ins_rewrote(tmp_path):
    pytest.importorskip("deepspeed")
    folder = _copy(3, tmp_path)
    path = folder / STEP / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    craft.resave_torch(path, lambda sd: None)
    sd = torch.load(path, weights_only=False)
    from deepspeed.runtime.zero.config import ZeroStageEnum
    assert sd["optimizer_state_dict"]["zero_stage"] is ZeroStageEnum.weights

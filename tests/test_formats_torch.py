"""torch files: wrappers, safety of every pickle path, TorchScript without running it, damage."""
from __future__ import annotations

import builtins
import os
import shutil
import zipfile

import pytest
import torch

import weightviz as wv
from weightviz.errors import CorruptFileError, UnsafeCheckpointError, WeightvizError


class SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ExecPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('pwned')",))


PAYLOADS = {"os.system": SystemPayload, "builtins.exec": ExecPayload}


@pytest.fixture
def sd(tiny_model):
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_malicious_pickle_never_runs(tmp_path, monkeypatch, sd, legacy, payload):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": sd, "x": PAYLOADS[payload](str(marker))}, path,
               _use_new_zipfile_serialization=not legacy)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeCheckpointError) as err:
        wv.open(path)
    needed = {"os.system": ("posix.system", "os.system"), "builtins.exec": ("builtins.exec",)}[payload]
    assert any(n in str(err.value) for n in needed)
    assert any(n in err.value.needs for n in needed)
    assert not marker.exists()


def test_torch_load_is_always_called_safely(tmp_path, monkeypatch, sd):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.save(sd, tmp_path / "a.pt")
    torch.save(sd, tmp_path / "b.pt", _use_new_zipfile_serialization=False)
    wv.open(tmp_path / "a.pt")
    sd32 = {k: v for k, v in sd.items() if v.dtype.itemsize > 1}   # legacy torch.load cannot do fp8
    torch.save(sd32, tmp_path / "c.pt", _use_new_zipfile_serialization=False)
    assert wv.open(tmp_path / "c.pt").metadata["reader"] == "torch.load(weights_only=True)"
    assert calls[0] == {"map_location": "cpu", "weights_only": True, "mmap": True}
    assert calls[1] == {"map_location": "cpu", "weights_only": True, "mmap": False}


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model", "net", "module",
                                 "state_dict_ema", "model_ema"])
def test_training_checkpoint_is_unwrapped(tmp_path, sd, key):
    opt = {"state": {0: {"exp_avg": torch.ones(3), "step": torch.tensor(4.0)}},
           "param_groups": [{"lr": 0.1, "params": [0]}]}
    torch.save({key: sd, "optimizer": opt, "epoch": 5, "loss": 0.25}, tmp_path / "ckpt.pth")
    ckpt = wv.open(tmp_path / "ckpt.pth")
    assert list(ckpt) == list(sd)
    assert ckpt.metadata["unwrapped"] == key
    assert ckpt.extras["epoch"] == 5 and ckpt.extras["loss"] == 0.25
    assert torch.equal(ckpt.extras["optimizer"]["state"][0]["exp_avg"], torch.ones(3))
    assert ckpt.num_params == sum(t.numel() for t in sd.values())


def test_nested_wrappers_and_ema_kept_apart(tmp_path, sd):
    ema = {k: v + 1 if v.is_floating_point() and v.dtype.itemsize > 1 else v for k, v in sd.items()}
    torch.save({"model": {"state_dict": sd}, "state_dict_ema": ema, "epoch": 1}, tmp_path / "n.pt")
    ckpt = wv.open(tmp_path / "n.pt")
    assert ckpt.metadata["unwrapped"] == "model/state_dict"
    assert list(ckpt) == list(sd)
    assert set(ckpt.extras) == {"state_dict_ema", "epoch"}
    torch.save({"state_dict": sd, "state_dict_ema": ema}, tmp_path / "e.pt")
    ckpt = wv.open(tmp_path / "e.pt")
    assert ckpt.metadata["unwrapped"] == "state_dict"
    assert set(ckpt.extras) == {"state_dict_ema"}
    assert torch.equal(ckpt["fc.weight"].torch(), sd["fc.weight"])


def test_torchscript_listed_without_running_it(model_files, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.jit.load must not be called")
    monkeypatch.setattr(torch.jit, "load", refuse)
    path, expected = model_files["torchscript"]
    ckpt = wv.open(path)
    assert ckpt.format == "torchscript"
    assert ckpt.metadata["torchscript"] is True
    assert "__torch__._model_formats.Tiny" in ckpt.metadata["classes"]
    assert list(ckpt) == list(expected)
    assert wv.open(path, format="torchscript").format == "torchscript"


@pytest.mark.parametrize("label", ["whole_model"])
def test_whole_pickled_model_listed_by_recording(model_files, label, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load on a whole model"))
    path, expected = model_files[label]
    ckpt = wv.open(path)
    assert ckpt.metadata["pickled_model"] == "_model_formats.Tiny"
    assert "torch.nn.modules.conv.Conv2d" in ckpt.metadata["classes"]
    assert list(ckpt) == list(expected)


def test_whole_model_legacy_and_non_persistent_buffers(tmp_path, tiny_model):
    tiny_model.register_buffer("scratch", torch.zeros(2), persistent=False)
    try:
        torch.save(tiny_model, tmp_path / "w.pt", _use_new_zipfile_serialization=False)
    finally:
        del tiny_model._buffers["scratch"]
        tiny_model._non_persistent_buffers_set.discard("scratch")
    ckpt = wv.open(tmp_path / "w.pt")
    assert list(ckpt) == list(tiny_model.state_dict())
    assert torch.equal(ckpt["conv.weight"].torch(), tiny_model.conv.weight.detach())


def test_shared_dag_and_views(tmp_path):
    t = torch.arange(12.0)
    x = [t]
    for _ in range(40):
        x = [x, x]                       # 2**40 paths, one tensor
    torch.save({"dag": x, "w": t.view(3, 4).t()}, tmp_path / "d.pt")
    ckpt = wv.open(tmp_path / "d.pt")
    assert len(ckpt) == 2
    assert torch.equal(ckpt["w"].torch(), t.view(3, 4).t())


def test_non_contiguous_view_from_recording(tmp_path, tiny_model):
    tiny_model.register_buffer("tview", torch.arange(12.0).view(3, 4).t())
    try:
        torch.save(tiny_model, tmp_path / "m.pt")
    finally:
        del tiny_model._buffers["tview"]
    ckpt = wv.open(tmp_path / "m.pt")
    assert ckpt["tview"].location is None
    assert torch.equal(ckpt["tview"].torch(), torch.arange(12.0).view(3, 4).t())


def test_too_deep_nesting_is_an_error(tmp_path):
    d = {"w": torch.ones(1)}
    for _ in range(200):
        d = {"a": d, "b": 1}
    torch.save(d, tmp_path / "deep.pt")
    with pytest.raises(CorruptFileError):
        wv.open(tmp_path / "deep.pt")


def test_sparse_tensors_are_not_listed(tmp_path):
    s = torch.sparse_coo_tensor([[0, 1], [1, 0]], [1.0, 2.0], (2, 2))
    torch.save({"w": torch.ones(2), "s": s}, tmp_path / "s.pt")
    ckpt = wv.open(tmp_path / "s.pt")
    assert list(ckpt) == ["w"]


def _rewrite_zip(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)


def test_short_storage_record_is_corrupt(tmp_path, sd):
    torch.save(sd, tmp_path / "ok.pt")
    _rewrite_zip(tmp_path / "ok.pt", tmp_path / "short.pt",
                 lambda n, d: d[:4] if n.endswith("data/0") else d)
    with pytest.raises(CorruptFileError, match="data/0"):
        wv.open(tmp_path / "short.pt")
    _rewrite_zip(tmp_path / "ok.pt", tmp_path / "missing.pt",
                 lambda n, d: None if n.endswith("data/1") else d)
    with pytest.raises(CorruptFileError, match="missing"):
        wv.open(tmp_path / "missing.pt")


@pytest.mark.parametrize("label", ["pt", "pt_legacy", "torchscript", "whole_model"])
def test_truncated_torch_files(tmp_path, model_files, label):
    path, _ = model_files[label]
    data = open(path, "rb").read()
    for cut in (len(data) // 3, len(data) - 40, 50):
        p = tmp_path / f"cut{cut}.pt"
        p.write_bytes(data[:cut])
        with pytest.raises(WeightvizError):
            wv.open(p)


def test_renamed_prefix_and_odd_names(tmp_path, sd):
    """The zip prefix is not hard-coded: it follows the file name."""
    torch.save(sd, tmp_path / "my.model.v2.bin")
    shutil.copy(tmp_path / "my.model.v2.bin", tmp_path / "renamed.ckpt")
    assert list(wv.open(tmp_path / "renamed.ckpt")) == list(sd)


def test_recorded_extras_are_lazy_entries_and_expanded_views_unlisted(tmp_path, tiny_model):
    """A checkpoint the weights_only loader refuses (a whole model inside) is listed from the
    recording: optimizer tensors in extras stay readable, a stride-0 view is not listed."""
    tiny_model.register_buffer("wide", torch.ones(1).expand(10**6))
    try:
        torch.save({"model": tiny_model, "optimizer": {"exp_avg": torch.arange(3.0)}, "epoch": 2},
                   tmp_path / "c.pt")
    finally:
        del tiny_model._buffers["wide"]
    ckpt = wv.open(tmp_path / "c.pt")
    assert ckpt.metadata["unwrapped"] == "model"
    assert "wide" not in ckpt and "wide" in ckpt.extras["unlisted_tensors"]
    assert list(ckpt) == list(tiny_model.state_dict())
    assert ckpt.extras["epoch"] == 2
    assert torch.equal(ckpt.extras["optimizer"]["exp_avg"].torch(), torch.arange(3.0))


def test_allocation_gadgets_are_refused(tmp_path):
    """bytearray(huge) is admitted by torch's allowlist; the recording pass refuses it first."""
    import pickletools  # noqa: F401 - documents the opcodes below
    payload = (b"\x80\x02}q\x00X\x01\x00\x00\x00bq\x01c__builtin__\nbytearray\nq\x02"
               b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85q\x03Rq\x04s.")   # {'b': bytearray(2**40)}
    with zipfile.ZipFile(tmp_path / "big.pt", "w") as z:
        z.writestr("big/data.pkl", payload)
        z.writestr("big/version", "3\n")
    with pytest.raises(CorruptFileError, match="bytearray"):
        wv.open(tmp_path / "big.pt")


def _torch_shards(folder, shards: dict, wmap=None):
    import json
    for fname, tensors in shards.items():
        torch.save(tensors, folder / fname)
    wmap = wmap or {n: f for f, ts in shards.items() for n in ts}
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": wmap}))
    return folder / "pytorch_model.bin.index.json"


def test_sharded_torch_checkpoint_reads_through_its_index(tmp_path):
    """Hugging Face's pytorch_model.bin.index.json: listed from every shard, values lazy,
    the folder opens too; a tensor the weight_map does not list, or a shard outside the
    folder, is refused."""
    a, b, c = torch.randn(3, 4), torch.randn(4), torch.arange(6.0).reshape(2, 3)
    index = _torch_shards(tmp_path, {"pytorch_model-00001-of-00002.bin": {"fc.weight": a, "fc.bias": b},
                                     "pytorch_model-00002-of-00002.bin": {"head.weight": c}})
    for source in (index, tmp_path):
        ckpt = wv.open(source)
        assert ckpt.format == "torch" and sorted(ckpt) == ["fc.bias", "fc.weight", "head.weight"]
        assert ckpt.metadata["shards"] == ["pytorch_model-00001-of-00002.bin",
                                           "pytorch_model-00002-of-00002.bin"]
        assert torch.equal(ckpt["head.weight"].torch(), c) and ckpt["fc.weight"].shape == (3, 4)
    (tmp_path / "outside").mkdir()
    bad = _torch_shards(tmp_path / "outside", {"s.bin": {"w": a}}, wmap={"w": "../s.bin"})
    with pytest.raises(CorruptFileError, match="outside its own folder"):
        wv.open(bad)
    (tmp_path / "extra").mkdir()
    bad = _torch_shards(tmp_path / "extra", {"s.bin": {"w": a, "v": b}}, wmap={"w": "s.bin"})
    with pytest.raises(WeightvizError, match="v"):
        wv.open(bad)


def _trained():
    """A small model after one Adam step and a scheduler step, all written by torch."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    model(torch.randn(6, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt.state_dict(), sched.state_dict()


def _containers(sd, opt, sched):
    lightning_sd = {f"model.{k}": v for k, v in sd.items()}
    return {
        "the issue's loop": ({"step": 3, "model_state": sd, "optimizer_state": opt}, "model_state"),
        "plain loop": ({"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": opt, "loss": 0.5},
                       "model_state_dict"),
        "lightning": ({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.4.0",
                       "state_dict": lightning_sd, "loops": {"fit_loop": {"epoch_progress": {"current": 1}}},
                       "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {
                           "best_model_score": torch.tensor(0.25)}},
                       "optimizer_states": [opt], "lr_schedulers": [sched],
                       "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.1}}, "state_dict"),
        "timm": ({"epoch": 5, "arch": "mlp", "state_dict": sd, "optimizer": opt, "version": 2,
                  "args": {"lr": 0.1}, "metric": 0.7,
                  "state_dict_ema": {k: v.clone() for k, v in sd.items()}}, "state_dict"),
        "fairseq": ({"args": None, "cfg": {"model": {"_name": "mlp"}}, "model": sd,
                     "optimizer_history": [{"criterion_name": "CrossEntropyCriterion",
                                            "optimizer_name": "Adam", "lr_scheduler_state": {"best": 1.0},
                                            "num_updates": 100}],
                     "extra_state": {"epoch": 2}, "last_optimizer_state": opt}, "model"),
        "net + opt": ({"net": sd, "opt": opt, "iteration": 7}, "net"),
        "weights + scheduler": ({"weights": sd, "scheduler": sched, "step": 5}, "weights"),
        "ema_state": ({"ema_state": sd, "optimizer": opt, "step": 1}, "ema_state"),
        "nested one deeper": ({"model": {"state_dict": sd, "config": {"hidden": 3}}, "optimizer": opt},
                              "model/state_dict"),
        "a key of its own": ({"my_weights_v2": sd, "optim": opt, "step": 2}, "my_weights_v2"),
    }


@pytest.mark.parametrize("case", list(_containers({}, {}, {})))
def test_training_checkpoints_give_the_model_weights_by_structure(tmp_path, case):
    """Whatever the loop calls its keys, the listing is the model's state dict; the
    optimizer (found by its state/param_groups shape) and the counters are kept apart,
    and a strict load fits."""
    model, opt, sched = _trained()
    sd = model.state_dict()
    obj, where = _containers(sd, opt, sched)[case]
    torch.save(obj, tmp_path / "ckpt.pt")
    ckpt = wv.open(tmp_path / "ckpt.pt")
    prefix = "model." if case == "lightning" else ""
    assert list(ckpt) == [prefix + k for k in sd]
    assert ckpt.metadata["unwrapped"] == where
    text = repr(ckpt)
    assert f"weights from  {where}" in text
    kept = ckpt.metadata["kept_apart"]
    optimizer_keys = [k for k, v in kept.items() if v.startswith("optimizer")]
    assert len(optimizer_keys) == (0 if case == "weights + scheduler" else 1), kept
    if optimizer_keys:
        assert f"{optimizer_keys[0]} (optimizer, 18 tensors)" in text       # 6 params x 3
    if not prefix:
        fresh, _, _ = _trained()
        with torch.no_grad():
            for p in fresh.parameters():
                p.zero_()
        wv.load(fresh, tmp_path / "ckpt.pt")              # strict: every name, every shape
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), sd.values()))


def test_an_optimizer_state_alone_says_so(tmp_path):
    _, opt, _ = _trained()
    torch.save(opt, tmp_path / "optimizer.pt")            # what HF Trainer writes beside the model
    ckpt = wv.open(tmp_path / "optimizer.pt")
    assert "not model weights" in ckpt.metadata["note"] and "note" in repr(ckpt)
    assert len(ckpt) == 18


def test_a_training_checkpoint_torch_refuses_to_load_safely_is_unwrapped_the_same(tmp_path):
    """timm saves argparse.Namespace args: weights_only refuses, the recording reads it."""
    import argparse
    model, opt, _ = _trained()
    torch.save({"epoch": 5, "state_dict": model.state_dict(), "optimizer": opt,
                "args": argparse.Namespace(lr=0.1)}, tmp_path / "timm.pt")
    ckpt = wv.open(tmp_path / "timm.pt")
    assert ckpt.metadata["reader"].startswith("recording") and list(ckpt) == list(model.state_dict())
    assert ckpt.metadata["kept_apart"]["optimizer"] == "optimizer, 18 tensors"


class _WithAttributes(torch.nn.Module):
    """A module whose scripted form carries tensor attributes that are no state."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.register_buffer("running", torch.ones(2))
        self._state = torch.zeros(0)
        self._context = torch.zeros(0)
        self.inner = torch.nn.Sequential(torch.nn.Linear(2, 2))

    def forward(self, x):
        return self.inner(self.fc(x) + self.running)


def test_torchscript_lists_what_state_dict_lists(tmp_path):
    """The archive's code says which attributes are parameters and buffers (read as text,
    never run); other tensor attributes are kept apart, not listed as layers."""
    scripted = torch.jit.script(_WithAttributes())
    scripted.save(str(tmp_path / "s.pt"))
    ckpt = wv.open(tmp_path / "s.pt")
    assert ckpt.format == "torchscript"
    assert list(ckpt) == list(scripted.state_dict())
    assert sorted(ckpt.extras["tensor_attributes"]) == ["_context", "_state"]
    assert "tensor_attributes (2 tensors)" in repr(ckpt)
    traced = torch.jit.trace(_WithAttributes().eval(), torch.randn(1, 3))
    traced.save(str(tmp_path / "t.pt"))
    assert list(wv.open(tmp_path / "t.pt")) == list(traced.state_dict())

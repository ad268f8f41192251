"""stats(client=...): the scan on a Dask LocalCluster gives the local table, bit for bit."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import weightviz
from weightviz.statistics import scan as _scan, fanout
from weightviz import demo
from weightviz.errors import WeightvizError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 512 elements (runs of 64 chunks: 32768 elements) and tasks of 64 KiB:
    large tensors split across tasks."""
    monkeypatch.setattr(_scan, "CHUNK", 512)
    monkeypatch.setattr(fanout, "TASK_BYTES", 64 << 10)


def _tensors():
    rng = np.random.default_rng(0)
    t = {f"layers.{i}.weight": rng.normal(size=(64, 300)).astype(np.float32) for i in range(4)}
    t["embed.weight"] = (rng.standard_t(3, size=(700, 96)) * 3).astype(np.float32)   # 3 runs
    t["big.bias"] = rng.normal(size=(300_000,)).astype(np.float16)
    t["odd"] = np.array([1, np.nan, np.inf, 0, -2], np.float32)
    t["empty"] = np.zeros((0, 7), np.float32)
    t["dead.weight"] = np.where(rng.random((50, 40)) < 0.5, 0, 1).astype(np.float32)
    t["dead.weight"][3] = 0
    return t


def _sharded_safetensors(folder, tensors):
    from safetensors.numpy import save_file
    names = list(tensors)
    halves = {f"model-0000{i + 1}-of-00002.safetensors": names[i::2] for i in range(2)}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, str(folder / shard))
    wmap = {k: shard for shard, keys in halves.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    return str(folder / "model.safetensors.index.json")


def _sharded_torch(folder, tensors):
    names = list(tensors)
    halves = {f"pytorch_model-0000{i + 1}-of-00002.bin": names[i::2] for i in range(2)}
    for shard, keys in halves.items():
        torch.save({k: torch.from_numpy(tensors[k]) for k in keys}, str(folder / shard))
    wmap = {k: shard for shard, keys in halves.items() for k in keys}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wmap}))
    return str(folder / "pytorch_model.bin.index.json")


def _assert_identical(local, remote):
    assert list(local) == list(remote)
    for name in local:
        a, b = local[name].to_dict(), remote[name].to_dict()
        for k, v in a.items():
            w = b[k]
            if isinstance(v, float) and v != v:
                assert w != w, (name, k)
            else:
                assert np.array_equal(v, w), (name, k, v, w)     # bit for bit, no tolerance
        assert np.array_equal(local[name].histogram.counts, remote[name].histogram.counts)
        assert np.array_equal(local[name].histogram.edges, remote[name].histogram.edges)


@pytest.mark.parametrize("layout", [_sharded_safetensors, _sharded_torch])
def test_the_cluster_gives_the_local_table(client, small_chunks, tmp_path, layout):
    path = layout(tmp_path, _tensors())
    ckpt = weightviz.open(path)
    tasks = fanout._tasks(ckpt, _scan.CHUNK)
    assert len(tasks) > 10
    runs = [(c0, c1) for _, _, items in tasks for n, c0, c1 in items if n == "embed.weight"]
    assert runs == [(0, 64), (64, 128), (128, 132)]          # one tensor over three tasks
    local = weightviz.stats(path)
    remote = weightviz.stats(path, client=client)
    _assert_identical(local, remote)
    assert "dead_units" in remote["dead.weight"].flags and remote["odd"].nan == 1


def test_safetensors_shards_are_opened_by_the_workers_one_by_one(small_chunks, tmp_path):
    path = _sharded_safetensors(tmp_path, _tensors())
    files = {os.path.basename(p) for p, _, _ in fanout._tasks(weightviz.open(path), _scan.CHUNK)}
    assert files == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


def test_a_worker_killed_mid_scan_changes_nothing(client, small_chunks, tmp_path):
    path = _sharded_safetensors(tmp_path, _tensors())
    local = weightviz.stats(path)
    result, error = {}, []

    def run():
        try:
            result["t"] = weightviz.stats(path, client=client)
        except Exception as exc:  # noqa: BLE001 - reported below
            error.append(exc)
    victim = sorted(client.run(os.getpid).items())[0][1]
    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 30
    while time.time() < deadline and not any(client.processing().values()):
        time.sleep(0.002)
    os.kill(victim, signal.SIGKILL)                          # the nanny starts a new one
    t.join(120)
    assert not error, error
    _assert_identical(local, result["t"])
    client.wait_for_workers(2, timeout=60)


def test_clear_errors_for_what_the_cluster_cannot_do(client, monkeypatch):
    with pytest.raises(WeightvizError, match="needs files the workers can open"):
        weightviz.stats({"w": np.ones(3, np.float32)}, client=client)
    with pytest.raises(WeightvizError, match="must be a dask.distributed.Client"):
        weightviz.stats(demo.path("cnn.safetensors"), client="tcp://somewhere:8786")
    import sys
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(WeightvizError, match=r"(?i)pip install 'weightviz\[distributed\]'"):
        weightviz.stats(demo.path("cnn.safetensors"), client=client)

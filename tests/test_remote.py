"""Checkpoints opened by URL list, read and compute statistics exactly as the local files do,
by ranged reads from a real HTTP server (nginx on 127.0.0.1); what a hostile or naive server
does is refused with a clear error."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import weightviz as wv
from weightviz import demo
from weightviz.errors import CorruptFileError, WeightvizError

from _http_servers import COMMIT, LINKED_ETAG, nginx, nginx_path, plain_http, redirecting

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
DEMO = os.path.dirname(demo.path("cnn.pth"))
REMOTE_ROWS = ("source", "listing read")

# (file under the served root, where it comes from)
FILES = {
    "cnn.safetensors": os.path.join(DEMO, "cnn.safetensors"),
    "mlp.safetensors": os.path.join(DEMO, "mlp.safetensors"),
    "cnn_sharded": os.path.join(DEMO, "cnn_sharded"),
    "keras_sharded": os.path.join(FIXTURES, "keras_sharded"),
    **{n: os.path.join(DEMO, n) for n in (
        "cnn.pth", "cnn_training.pth", "mlp.pth", "mlp.npz", "keras2_predictions.npz", "mlp_weights.npy",
        "cnn_q8_0.gguf", "cnn_q4_0.gguf", "cnn.onnx", "keras_model.h5", "keras_model.weights.h5",
        "keras_model.keras", "keras2_model.h5", "keras2_model_weights.h5")},
    **{f"{d}/{n}": os.path.join(FIXTURES, d, n) for d, n in (
        ("gguf", "tiny-f16.gguf"), ("gguf", "tiny-be.gguf"), ("gguf", "tiny-mixed.gguf"),
        ("onnx", "external.onnx"), ("onnx", "external.onnx.data"), ("onnx", "constants.onnx"),
        ("onnx", "typed.onnx"), ("keras_io", "k3_model.keras"), ("keras_io", "k2_model.h5"))},
}
# every format weightviz reads, by URL (the ONNX external data rides along with its model)
FORMATS = sorted(n for n in FILES if n not in ("cnn_sharded", "keras_sharded", "onnx/external.onnx.data"))


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """nginx serving a folder of every format's fixtures; skipped without nginx."""
    if nginx_path() is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx): the remote tests need a real "
                    "HTTP server with Range support")
    root = tmp_path_factory.mktemp("www")
    for name, src in FILES.items():
        os.makedirs(os.path.dirname(root / name), exist_ok=True)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, root / name)
    _hostile(root)
    os.makedirs(root / "private")
    shutil.copy(FILES["mlp.safetensors"], root / "private" / "mlp.safetensors")
    os.chmod(root, 0o755)
    with nginx(str(root), str(tmp_path_factory.mktemp("nginx"))) as server:
        server.root_path = root
        yield server


def _hostile(root):
    """Indexes naming shards outside their folder, and a truncated file."""
    shard = "model-00001-of-00003.safetensors"
    os.makedirs(root / "evil" / "sub")
    shutil.copy(os.path.join(FILES["cnn_sharded"], shard), root / "evil" / shard)
    for i, bad in enumerate(["../cnn.safetensors", "/etc/passwd", "http://other.example/x.safetensors",
                             "sub/" + shard, "..", "%2e%2e/cnn.safetensors", "C:x.safetensors"]):
        with open(root / "evil" / f"e{i}.safetensors.index.json", "w") as f:
            json.dump({"metadata": {}, "weight_map": {"a": shard, "b": bad}}, f)
    with open(root / "evil" / "k.weights.json", "w") as f:      # a Keras sharded index
        json.dump({"metadata": {}, "weight_map": {"/layers/dense/vars": "../x_00000.weights.h5"}}, f)
    data = open(FILES["cnn.safetensors"], "rb").read()
    with open(root / "truncated.safetensors", "wb") as f:
        f.write(data[: len(data) - 100])


def _summary(ck):
    view = ck.__repr__().split("\n\n")[0].splitlines()
    return [" ".join(line.split()) for line in view if not line.strip().startswith(REMOTE_ROWS)]


def assert_same(local, remote):
    assert list(local) == list(remote)
    for name in local:
        a, b = local[name], remote[name]
        assert (a.shape, a.dtype) == (b.shape, b.dtype), name
    assert _summary(local) == _summary(remote)
    assert local.__repr__().split("\n\n", 1)[1] == remote.__repr__().split("\n\n", 1)[1]


# ---------------------------------------------------------------- safetensors
@pytest.mark.parametrize("name", ["cnn.safetensors", "mlp.safetensors",
                                  "cnn_sharded/model.safetensors.index.json"])
def test_safetensors_lists_reads_and_scans_like_the_local_file(served, name):
    local = wv.open(os.path.join(served.root_path, name))
    remote = wv.open(served.url(name))
    assert_same(local, remote)
    for t in local:
        np.testing.assert_array_equal(local[t].numpy(), remote[t].numpy())
    assert repr(wv.stats(local)) == repr(wv.stats(served.url(name)))


def _values(ck, name):
    try:
        return ck[name].numpy()
    except WeightvizError as exc:              # a dtype weightviz lists but cannot read (Q8_K, int4)
        return type(exc).__name__


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_lists_and_reads_by_url_like_the_local_file(served, name):
    local = wv.open(os.path.join(served.root_path, name))
    remote = wv.open(served.url(name))
    assert remote.format == local.format
    assert_same(local, remote)
    for t in local:
        a, b = _values(local, t), _values(remote, t)
        if isinstance(a, str):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)
    cost = remote.metadata["remote"]
    assert cost["requests"] >= 1 and cost["bytes"] <= cost["size"]


def test_keras_sharded_index_fetches_its_shards_whole_and_lists_like_the_local_one(served):
    name = "keras_sharded/sharded.weights.json"
    local = wv.open(os.path.join(served.root_path, name))
    mark = served.mark()
    remote = wv.open(served.url(name))
    assert remote.format == local.format and remote.path == served.url(name)
    assert_same(local, remote)
    assert remote.metadata["shards"] == local.metadata["shards"] and len(local.metadata["shards"]) == 5
    assert "read whole" in remote.metadata["read_whole"]
    t = max(local, key=lambda k: np.prod(local[k].shape))
    np.testing.assert_array_equal(local[t].numpy(), remote[t].numpy())
    asked = {r[1] for r in served.since(mark)}
    assert {f"/keras_sharded/sharded_0000{i}.weights.h5" for i in range(5)} <= asked
    cost = remote.metadata["remote"]
    assert cost["objects"] == 6 and cost["bytes"] == cost["size"] == sum(
        os.path.getsize(os.path.join(served.root_path, "keras_sharded", n))
        for n in ["sharded.weights.json"] + local.metadata["shards"])
    assert "in 6 objects" in repr(remote)


def test_a_keras_sharded_index_naming_a_shard_outside_its_folder_is_refused_before_fetching(served):
    mark = served.mark()
    with pytest.raises(CorruptFileError, match="outside its own folder"):
        wv.open(served.url("evil/k.weights.json"))
    assert {r[1] for r in served.since(mark)} == {"/evil/k.weights.json"}


@pytest.mark.parametrize("name", ["cnn_q8_0.gguf", "cnn.pth", "mlp.npz", "cnn.onnx"])
def test_stats_of_named_tensors_equal_the_local_ones(served, name):
    local = wv.open(os.path.join(served.root_path, name))
    names = list(local)[-2:]
    assert repr(wv.stats(local, names=names)) == repr(wv.stats(served.url(name), names=names))


def test_listing_reads_headers_only_and_says_what_it_cost(served):
    mark = served.mark()
    ck = wv.open(served.url("cnn.safetensors"))
    log = served.since(mark)
    cost = ck.metadata["remote"]
    size = os.path.getsize(FILES["cnn.safetensors"])
    assert cost["requests"] == len(log) == 1                # the header fits the first 4 KiB
    assert cost["bytes"] == sum(int(r[3]) for r in log) == 4096 < size
    assert all(r[2] == "206" for r in log)
    text = repr(ck)
    assert "listing read  1 requests, 4.0 KiB of 39.4 KiB in 1 object" in text
    assert cost["etag"]                                       # nginx's ETag is shown
    mark = served.mark()
    ck["fc1.weight"].numpy()                                  # that tensor's range only
    (req,) = served.since(mark)
    assert req[2] == "206" and int(req[3]) == 32 * 256 * 4


def test_sharded_index_fetches_shards_concurrently_at_the_pinned_revision(served):
    mark = served.mark()
    ck = wv.open(served.url("hub/resolve/main/cnn_sharded/model.safetensors.index.json"))
    log = served.since(mark)
    asked = [r[1] for r in log if r[2] == "302"]
    assert asked[0] == "/hub/resolve/main/cnn_sharded/model.safetensors.index.json"
    shards = [u for u in asked[1:]]
    assert len(shards) == 3 and all(u.startswith(f"/hub/resolve/{COMMIT}/cnn_sharded/model-") for u in shards)
    meta = ck.metadata["remote"]
    assert meta["commit"] == COMMIT and meta["etag"] == f'"{LINKED_ETAG}"'
    assert f"commit {COMMIT[:16]}" in repr(ck)
    assert ck.metadata["shards"] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


@pytest.mark.parametrize("i", range(7))
def test_an_index_naming_a_shard_outside_its_folder_is_refused(served, i):
    with pytest.raises(CorruptFileError, match="outside its own folder"):
        wv.open(served.url(f"evil/e{i}.safetensors.index.json"))


def test_a_truncated_object_is_a_corrupt_file(served):
    with pytest.raises(CorruptFileError, match="truncated.safetensors"):
        wv.open(served.url("truncated.safetensors"))


def test_a_missing_object_is_file_not_found(served):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        wv.open(served.url("nope.safetensors"))


def test_a_missing_shard_is_named(served, tmp_path):
    os.makedirs(served.root_path / "gone", exist_ok=True)
    with open(served.root_path / "gone" / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": {"a": "model-00001-of-00002.safetensors"}}, f)
    with pytest.raises(CorruptFileError, match="model-00001-of-00002.safetensors listed in .* is missing"):
        wv.open(served.url("gone/model.safetensors.index.json"))


# ---------------------------------------------------------------- servers that misbehave
def test_a_server_ignoring_range_is_refused_then_downloaded_on_request(served):
    with plain_http(str(served.root_path)) as base:
        with pytest.raises(WeightvizError, match="ignores byte ranges.*download=True"):
            wv.open(base + "/cnn.safetensors")
        ck = wv.open(base + "/cnn.safetensors", download=True)
        assert_same(wv.open(FILES["cnn.safetensors"]), ck)
        with pytest.raises(WeightvizError, match="too large to download whole"):
            wv.open(base + "/cnn.safetensors", download=True, download_limit=1000)


def test_redirects_to_another_host_are_followed_without_credentials(served):
    with redirecting(f"http://127.0.0.1:{served.port}") as other:
        ck = wv.open(other + "/cnn.safetensors", storage_options={"headers": {"Authorization": "Bearer t0k"}})
        assert len(ck) == 13
        with pytest.raises(WeightvizError, match="401"):       # the header was not carried over
            wv.open(other + "/private/mlp.safetensors", storage_options={"headers": {
                "Authorization": "Basic dTpzZWNyZXQtcGFzcw=="}})


def test_credentials_never_show(served):
    url = served.url("private/mlp.safetensors").replace("http://", "http://u:secret-pass@") + "?token=hf_SECRET"
    ck = wv.open(url)
    assert len(ck) == len(wv.open(FILES["mlp.safetensors"]))
    for text in (repr(ck), ck._repr_html_(), str(ck.path), repr(ck.path), json.dumps(ck.metadata, default=str),
                 repr(next(iter(ck.values())).location)):
        assert "secret-pass" not in text and "hf_SECRET" not in text, text
    assert "token=***" in repr(ck)
    bad = url.replace("secret-pass", "wrong-pass")
    with pytest.raises(WeightvizError) as err:
        wv.open(bad)
    assert "wrong-pass" not in str(err.value) and "hf_SECRET" not in str(err.value)
    assert "401" in str(err.value)


def test_unknown_scheme_and_missing_extra_are_named():
    with pytest.raises(WeightvizError, match="not a scheme fsspec knows|needs"):
        wv.open("nosuchscheme://bucket/model.safetensors")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        with pytest.raises(WeightvizError, match="s3fs"):
            wv.open("s3://bucket/model.safetensors")


def test_memory_filesystem():
    import fsspec
    fs = fsspec.filesystem("memory")
    for name in ("model.safetensors.index.json", "model-00001-of-00003.safetensors",
                 "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"):
        fs.pipe(f"/wvtest/{name}", open(os.path.join(FILES["cnn_sharded"], name), "rb").read())
    local = wv.open(os.path.join(FILES["cnn_sharded"], "model.safetensors.index.json"))
    remote = wv.open("memory://wvtest/model.safetensors.index.json")
    assert_same(local, remote)
    np.testing.assert_array_equal(local["fc1.weight"].numpy(), remote["fc1.weight"].numpy())


def test_cache_folder_makes_a_second_look_free(served, tmp_path):
    url = served.url("cnn_sharded/model.safetensors.index.json")
    first = wv.open(url, cache=tmp_path)
    first["fc1.weight"].numpy()
    mark = served.mark()
    again = wv.open(url, cache=tmp_path)
    np.testing.assert_array_equal(again["fc1.weight"].numpy(), first["fc1.weight"].numpy())
    assert served.since(mark) == []
    assert again.metadata["remote"]["requests"] == 0


def test_dask_workers_open_the_url_themselves(served):
    distributed = pytest.importorskip("distributed")
    url = served.url("cnn_sharded/model.safetensors.index.json")
    local = wv.stats(os.path.join(served.root_path, "cnn_sharded", "model.safetensors.index.json"))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    try:
        with distributed.Client(cluster) as client:
            ck = wv.open(url)
            mark = served.mark()
            table = wv.stats(ck, client=client)
            asked = served.since(mark)
    finally:
        cluster.close()
    assert repr(table) == repr(local)
    # the workers fetched the shards themselves (the client had only read headers)
    assert any(r[1].endswith("-of-00003.safetensors") and r[2] == "206" for r in asked)


# ---------------------------------------------------------------- a large tensor scanned as it arrives
def test_a_large_tensor_is_scanned_while_it_arrives(served, monkeypatch):
    from weightviz.formats import _remote
    from weightviz.statistics.chunks import Chunks
    monkeypatch.setattr(_remote, "STREAM", 1 << 12)       # fc1.weight (32 KiB) counts as large
    monkeypatch.setattr(_remote, "PART", 1 << 12)         # fetched in 4 KiB requests
    local = wv.open(os.path.join(served.root_path, "cnn.safetensors"))
    ck = wv.open(served.url("cnn.safetensors"))
    raw = ck["fc1.weight"].raw(stream=True)
    assert callable(raw.wait)                             # returned before its bytes were all in
    chunks = Chunks(raw, 1000)
    for a, b in chunks.bounds():
        chunks.ready(a, b)
        np.testing.assert_array_equal(chunks.flat[a:b], local["fc1.weight"].raw().reshape(-1)[a:b])
    assert repr(wv.stats(local)) == repr(wv.stats(served.url("cnn.safetensors")))


def test_a_stream_that_breaks_is_a_read_error(served, monkeypatch):
    from weightviz.formats import _remote
    monkeypatch.setattr(_remote, "STREAM", 1 << 12)
    monkeypatch.setattr(_remote, "PART", 1 << 12)
    ck = wv.open(served.url("cnn.safetensors"))
    transport = ck["fc1.weight"].location.path.source.transport
    real = transport.stream

    def flaky(start, n, sink):
        if start > ck["fc1.weight"].location.offset + 8192:
            raise ConnectionResetError("the peer hung up")
        real(start, n, sink)
    monkeypatch.setattr(transport, "stream", flaky)
    with pytest.raises(WeightvizError, match="could not read tensor 'fc1.weight'.*ConnectionResetError"):
        wv.stats(ck, names=["fc1.weight"], progress=False)


# ---------------------------------------------------------------- progress of whole downloads
def _bars(monkeypatch):
    """The tqdm.auto bars made, as [desc, total, bytes counted, closed]."""
    import tqdm.auto
    made = []

    class Bar:
        def __init__(self, total, desc, **kw):
            assert kw["unit"] == "B"
            self.row = [desc, total, 0, False]
            made.append(self.row)

        def update(self, n):
            self.row[2] += n

        def close(self):
            self.row[3] = True
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    return made


def test_a_whole_download_shows_a_progress_bar_unless_told_not_to(served, monkeypatch):
    made = _bars(monkeypatch)
    size = os.path.getsize(FILES["cnn.safetensors"])
    with plain_http(str(served.root_path)) as base:
        wv.open(base + "/cnn.safetensors", download=True, progress=True)
        assert made == [["downloading cnn.safetensors", size, size, True]]
        wv.open(base + "/cnn.safetensors", download=True, progress=False)
        wv.open(base + "/cnn.safetensors", download=True)            # default: only above 256 MiB
    assert len(made) == 1


def test_an_hdf5_file_fetched_whole_shows_a_progress_bar(served, monkeypatch):
    made = _bars(monkeypatch)
    ck = wv.open(served.url("keras_model.h5"), progress=True)
    assert repr(wv.open(os.path.join(served.root_path, "keras_model.h5"))).split("\n\n", 1)[1] == \
        repr(ck).split("\n\n", 1)[1]
    [(desc, total, counted, closed)] = made
    assert desc == "downloading keras_model.h5" and counted == total > 0 and closed
    wv.open(served.url("keras_model.h5"), progress=False)
    assert len(made) == 1

"""Checkpoints opened by ``s3://`` URL (s3fs) from a local S3 server (moto's, on 127.0.0.1): the
listing and the values equal the local file's, the credentials given in ``storage_options`` never
show in a repr, the HTML view or an error."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest

import weightviz as wv
from weightviz import demo

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install "
                                  "'moto[server]' s3fs): the S3 tests need a local S3 server")
pytest.importorskip("s3fs", reason="s3fs is not installed: s3:// URLs are read through it")

KEY, SECRET = "AKIAWVTESTKEY0000001", "wv-test-secret-do-not-show-9f8e7d"
BUCKET = "wv-bucket"
SHARDED = demo.path("cnn_sharded")


@pytest.fixture(scope="module")
def s3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"endpoint_url": endpoint, "key": KEY, "secret": SECRET,
               "client_kwargs": {"region_name": "us-east-1"}}
    try:
        import boto3
        import s3fs
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                              region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(demo.path("cnn.safetensors"), BUCKET, "cnn.safetensors")
        for name in sorted(os.listdir(SHARDED)):
            client.upload_file(os.path.join(SHARDED, name), BUCKET, f"sharded/{name}")
        s3fs.S3FileSystem.clear_instance_cache()
        yield options
    finally:
        server.stop()


@pytest.mark.parametrize("name, local", [
    ("cnn.safetensors", demo.path("cnn.safetensors")),
    ("sharded/model.safetensors.index.json", os.path.join(SHARDED, "model.safetensors.index.json"))])
def test_s3_objects_list_and_read_like_the_local_file(s3, name, local):
    here = wv.open(local)
    there = wv.open(f"s3://{BUCKET}/{name}", storage_options=s3)
    assert there.format == here.format
    assert list(there) == list(here)
    for t in here:
        assert (there[t].shape, there[t].dtype) == (here[t].shape, here[t].dtype)
    big = max(here, key=lambda t: here[t].nbytes)
    np.testing.assert_array_equal(there[big].numpy(), here[big].numpy())
    assert repr(wv.stats(there, names=[big], progress=False)) == repr(wv.stats(here, names=[big], progress=False))
    shown = repr(there) + there._repr_html_() + repr(there[big].location.path) + str(there.metadata)
    assert KEY not in shown and SECRET not in shown
    assert f"s3://{BUCKET}/{name}" in repr(there)


def test_s3_errors_never_show_the_credentials(s3):
    for url in (f"s3://{BUCKET}/nope.safetensors", f"s3://no-such-bucket-wv/x.safetensors"):
        with pytest.raises(Exception) as info:
            wv.open(url, storage_options=s3)
        text = str(info.value) + repr(info.value)
        assert KEY not in text and SECRET not in text
        assert "nope.safetensors" in text or "x.safetensors" in text

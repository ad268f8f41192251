"""Property tests of the padding rules (formats.md §4.3) against plain NumPy references."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

from weightviz.keras import build_model  # noqa: E402


def one_layer(cls, cfg, shape):
    return {"class_name": "Sequential", "keras_version": "3.15.1", "config": {"name": "p", "layers": [
        {"class_name": "InputLayer", "config": {"name": "i", "batch_shape": [None, *shape]}},
        {"class_name": cls, "config": {"name": "l", **cfg}}]}}


def np_avg_pool_same(x, k, s):
    """TF 'same' average pooling on (N, L, C): extra padding at the end, padded cells excluded."""
    n, length, c = x.shape
    out = -(-length // s)
    total = max((out - 1) * s + k - length, 0)
    before = total // 2
    y = np.zeros((n, out, c))
    for o in range(out):
        lo, hi = o * s - before, o * s - before + k
        lo, hi = max(lo, 0), min(hi, length)
        y[:, o] = x[:, lo:hi].mean(axis=1)
    return y


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4))
def test_avg_pool_same_excludes_padding(length, k, s):
    x = np.random.default_rng(length * 31 + k * 7 + s).standard_normal((2, length, 3)).astype("float32")
    m = build_model(one_layer("AveragePooling1D", {"pool_size": k, "strides": s, "padding": "same"},
                              (length, 3)), None)
    assert np.abs(m(x).numpy() - np_avg_pool_same(x, k, s)).max() < 1e-5


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 2),
       padding=st.sampled_from(["same", "valid", "causal"]))
def test_conv1d_output_lengths(length, k, s, d, padding):
    if padding == "causal" and s != 1 or padding == "valid" and (k - 1) * d + 1 > length:
        return
    m = build_model(one_layer("Conv1D", {"filters": 2, "kernel_size": k, "strides": s,
                                         "dilation_rate": d, "padding": padding}, (length, 3)), None)
    y = m(np.zeros((1, length, 3), "float32"))
    k_eff = (k - 1) * d + 1
    expected = -(-length // s) if padding in ("same", "causal") else (length - k_eff) // s + 1
    assert y.shape[1] == expected


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 8), k=st.integers(1, 5), s=st.integers(1, 4),
       padding=st.sampled_from(["same", "valid"]))
def test_conv1d_transpose_output_lengths(length, k, s, padding):
    m = build_model(one_layer("Conv1DTranspose", {"filters": 2, "kernel_size": k, "strides": s,
                                                  "padding": padding}, (length, 3)), None)
    y = m(np.zeros((1, length, 3), "float32"))
    expected = length * s if padding == "same" else (length - 1) * s + max(k, s)
    assert y.shape[1] == expected


def test_no_keras_or_tensorflow_imported():
    build_model(one_layer("Dense", {"units": 2}, (3,)), None)
    assert not any(m == "keras" or m.startswith(("keras.", "tensorflow", "tf_keras"))
                   for m in sys.modules)

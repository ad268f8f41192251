"""The Keras-style summary of a built model: golden text, HTML from the same view."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

import weightviz  # noqa: E402
from weightviz.keras import build_from_checkpoint, build_model  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "keras_models"

GOLDEN_SEQUENTIAL = """\
Keras model 'seqm' rebuilt in torch
  total params                119
  torch parameters            99
  non-trainable (statistics)  20

Layer (type)                Output Shape  Param #
--------------------------  ------------  -------
input_layer_1 (InputLayer)  (None, 5)           0
d1 (Dense)                  (None, 6)          36
dr (Dropout)                (None, 6)           0
bn (BatchNormalization)     (None, 6)          24
inner (Sequential)          (None, 4)          44
d2 (Dense)                  (None, 3)          15

note: architecture written by Keras 3.15.1"""

GOLDEN_RNN_K2 = """\
Keras model 'k2rnn' rebuilt in torch
  total params                514
  torch parameters            514
  non-trainable (statistics)  0

Layer (type)        Output Shape  Param #
------------------  ------------  -------
seq (InputLayer)    (None, 5, 4)        0
gru_v1 (GRU)        (None, 5, 5)      150
lstm_hs (LSTM)      (None, 5, 4)      160
fl (Flatten)        (None, 20)          0
bi (Bidirectional)  (None, 6)         162
d_hs (Dense)        (None, 2)          42

note: architecture written by Keras 2.21.0"""


def test_summary_golden_text_keras3():
    model = build_from_checkpoint(weightviz.open(str(FIX / "sequential.keras")))
    assert repr(model) == GOLDEN_SEQUENTIAL          # Keras reports 119 params too
    assert str(model.summary()) == GOLDEN_SEQUENTIAL


def test_summary_golden_text_keras2_h5():
    model = build_from_checkpoint(weightviz.open(str(FIX / "k2_rnn.h5")))
    assert repr(model) == GOLDEN_RNN_K2


def test_summary_html_from_the_same_view():
    model = build_from_checkpoint(weightviz.open(str(FIX / "merge.h5")))
    html = model._repr_html_()
    assert html.startswith('<div class="weightviz-view">')
    assert "<th style=\"text-align:left\">Layer (type)</th>" in html
    assert "inner_fun (Functional)" in html and "[(None, 4), (None, 2)]" in html
    assert "0x" not in html and "0x" not in repr(model)


def test_unknown_input_dims_show_as_none():
    arch = {"class_name": "Sequential", "keras_version": "3.15.1", "config": {"name": "var", "layers": [
        {"class_name": "InputLayer", "config": {"name": "i", "batch_shape": [None, None, 3]}},
        {"class_name": "Conv1D", "config": {"name": "c", "filters": 2, "kernel_size": 3,
                                            "strides": 2, "padding": "same"}},
        {"class_name": "GlobalMaxPooling1D", "config": {"name": "g"}}]}}
    text = repr(build_model(arch, None))
    assert "i (InputLayer)          (None, None, 3)" in text
    assert "c (Conv1D)              (None, None, 2)" in text
    assert "g (GlobalMaxPooling1D)  (None, 2)" in text

"""Random adapter configs: random bytes, and random values in the fields weightviz reads, raise
a WeightvizError (or open and check cleanly), never anything else."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import weightviz as wv
from weightviz.adapters import STATUSES
from weightviz.errors import WeightvizError

pytest.importorskip("torch")
pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "adapters"
LLAMA = FIX / "llama_base.safetensors"


def _with_config(tmp_path, raw: bytes) -> Path:
    shutil.copy(FIX / "llama_lora" / "adapter_model.safetensors", tmp_path)
    (tmp_path / "adapter_config.json").write_bytes(raw)
    return tmp_path


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.text(max_size=6), max_size=3),
                    st.dictionaries(st.text(max_size=6), st.integers(-2, 9), max_size=2))
_keys = st.sampled_from(["r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern",
                         "modules_to_save", "layers_to_transform", "layers_pattern", "use_rslora",
                         "use_dora", "fan_in_fan_out", "peft_type", "exclude_modules"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_random_config_bytes_raise_only_weightviz_errors(tmp_path, raw):
    try:
        ad = wv.open(_with_config(tmp_path, raw))
    except WeightvizError:
        return
    assert ad.adapter is not None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=st.dictionaries(_keys, _values, max_size=8))
def test_random_config_fields_raise_only_weightviz_errors(tmp_path, cfg):
    cfg = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], **cfg}
    try:
        rep = wv.check(LLAMA, _with_config(tmp_path, json.dumps(cfg).encode()), merge_loss=False)
    except WeightvizError:
        return
    assert rep.verdict and set(rep.counts()) <= set(STATUSES)


@pytest.mark.parametrize("extra", [
    {"layers_to_transform": 1, "layers_pattern": "(["},
    {"target_modules": "q_proj[", "modules_to_save": ["lm_head("]},
    {"rank_pattern": {"(": 8}, "alpha_pattern": {"[": 2}},
    {"exclude_modules": "*"},
    {"layers_to_transform": [0, 1], "layers_pattern": ["layers", "blocks"]},
])
def test_configs_with_broken_expressions_match_nothing_quietly(tmp_path, extra):
    cfg = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"], **extra}
    rep = wv.check(LLAMA, _with_config(tmp_path, json.dumps(cfg).encode()), merge_loss=False)
    assert rep.verdict and set(rep.counts()) <= set(STATUSES)

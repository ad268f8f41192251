"""Damaged architectures fail with weightviz errors only (never raw KeyError/TypeError...)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
from hypothesis import given, settings, strategies as st  # noqa: E402

from weightviz.errors import WeightvizError  # noqa: E402
from weightviz.keras import build_model  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "keras_models"
ARCHS = {n: json.loads((FIX / f"{n}.json").read_text()) for n in ("merge", "k2_merge", "sequential")}
JUNK = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=3), st.lists(st.integers(0, 2), max_size=3),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


def paths(x, prefix=()):
    yield prefix
    if isinstance(x, dict):
        for k, v in x.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from paths(v, prefix + (i,))


ALL = {n: [p for p in paths(a) if p] for n, a in ARCHS.items()}


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(ARCHS)), pick=st.integers(0, 10**6), junk=JUNK,
       delete=st.booleans())
def test_damaged_config_raises_only_weightviz_errors(name, pick, junk, delete):
    arch = copy.deepcopy(ARCHS[name])
    path = ALL[name][pick % len(ALL[name])]
    parent = arch
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    try:
        build_model(arch, None)
    except WeightvizError:
        pass

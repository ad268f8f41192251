"""LoRA / DoRA adapters: reading (PEFT, diffusers, kohya), the check report's statuses on
planted faults and none on clean adapters, ΔW's numbers against a dense computation, bad
inputs, golden text.

Fixtures: tests/fixtures/adapters/, written by tools/make_adapter_fixtures.py (PEFT's own
save_pretrained on models built from configs). Golden texts live in tests/golden/adapter_*.txt;
refresh them with WEIGHTVIZ_UPDATE_GOLDEN=1.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightviz as wv
from weightviz.adapters import AdapterInfo, AdapterReport, check_adapter, is_adapter
from weightviz.errors import CorruptFileError, UnknownFormatError, WeightvizError

torch = pytest.importorskip("torch")

FIX = Path(__file__).parent / "fixtures" / "adapters"
GOLDEN = Path(__file__).parent / "golden"
LLAMA = FIX / "llama_base.safetensors"
CLEAN = [  # (base, adapter)
    ("llama", "llama_lora"), ("llama", "llama_bin"), ("llama", "llama_rslora"),
    ("llama", "llama_patterns"), ("llama", "llama_layers"), ("llama", "llama_dora"),
    ("llama", "llama_embed"), ("gpt2", "gpt2_lora"), ("conv", "conv_lora"), ("conv", "conv_dora"),
    ("unet", "diffusers/pytorch_lora_weights.safetensors"), ("unet", "kohya_lora.safetensors"),
    ("unet", "kohya_noalpha.safetensors"),
]


def base(name: str) -> Path:
    return FIX / f"{name}_base.safetensors"


def golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; WEIGHTVIZ_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("WEIGHTVIZ_UPDATE_GOLDEN") == "1":
        path.write_text(text + "\n", encoding="utf-8")
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with WEIGHTVIZ_UPDATE_GOLDEN=1")
    assert text + "\n" == path.read_text(encoding="utf-8"), \
        f"report text differs from {path}; rerun with WEIGHTVIZ_UPDATE_GOLDEN=1 if the change is intended"


# ---------------------------------------------------------------- reading
def test_open_peft_folder_gives_a_lazy_checkpoint_with_adapter_info():
    ad = wv.open(FIX / "llama_lora")
    assert ad.format == "safetensors" and len(ad) == 28
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in ad
    assert all(e.location is not None for e in ad.entries.values())        # lazy: memory-mapped
    info = ad.adapter
    assert isinstance(info, AdapterInfo)
    assert (info.method, info.naming, info.r, info.alpha, info.scale) == ("lora", "peft", 4, 8.0, 2.0)
    assert info.targets == ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")
    assert info.peft_type == "LORA" and info.source == "adapter_config.json"
    assert "  adapter     LoRA (peft); r 4; alpha 8; scale 2; targets down_proj, gate_proj" in repr(ad)
    assert "LoRA (peft)" in ad._repr_html_()
    assert wv.open(FIX / "llama_lora" / "adapter_model.safetensors").adapter == info


def test_adapter_info_repr_is_deterministic():
    info = wv.open(FIX / "llama_patterns").adapter
    assert repr(info) == (
        "AdapterInfo(method='lora', naming='peft', r=4, alpha=8.0, scale=2.0, "
        "target_modules=('q_proj', 'v_proj'), rank_pattern={'q_proj': 8}, "
        "alpha_pattern={'layers.1.self_attn.v_proj': 32}, peft_type='LORA', source='adapter_config.json')")
    assert repr(wv.open(FIX / "llama_patterns").adapter) == repr(info)
    assert "0x" not in repr(info)


def test_bin_adapter_goes_through_the_safe_torch_reader():
    ad = wv.open(FIX / "llama_bin")
    assert ad.format == "torch" and ad.adapter.r == 4
    assert wv.open(FIX / "llama_bin" / "adapter_model.bin").adapter == ad.adapter


def test_config_fields():
    assert wv.open(FIX / "llama_dora").adapter.method == "dora"
    rs = wv.open(FIX / "llama_rslora").adapter
    assert rs.use_rslora and rs.scale == pytest.approx(16 / math.sqrt(8))
    assert wv.open(FIX / "llama_layers").adapter.layers_to_transform == (1,)
    assert wv.open(FIX / "llama_embed").adapter.modules_to_save == ("lm_head",)
    assert wv.open(FIX / "gpt2_lora").adapter.fan_in_fan_out is True


def test_diffusers_and_kohya_files():
    d = wv.open(FIX / "diffusers" / "pytorch_lora_weights.safetensors").adapter
    assert (d.naming, d.r, d.alpha, d.scale, d.source) == ("diffusers", 4, 8.0, 2.0, "lora_adapter_metadata")
    assert [c for c, _ in d.components] == ["unet"] and "conv1" in d.targets
    k = wv.open(FIX / "kohya_lora.safetensors").adapter
    assert (k.naming, k.r, k.alpha, k.scale) == ("kohya", 4, 8.0, 2.0)
    n = wv.open(FIX / "kohya_noalpha.safetensors").adapter
    assert (n.naming, n.r, n.alpha, n.scale) == ("kohya", 4, None, 1.0)
    assert "alpha = rank" in n.notes[0]


def test_ordinary_checkpoints_are_not_adapters():
    assert wv.open(LLAMA).adapter is None
    assert "adapter" not in repr(wv.open(LLAMA))
    assert not is_adapter(LLAMA) and not is_adapter(wv.open(LLAMA)) and not is_adapter({"a": 1})
    assert not is_adapter(FIX / "no such file")
    for p in (FIX / "llama_lora", FIX / "llama_bin" / "adapter_model.bin", FIX / "kohya_lora.safetensors",
              FIX / "diffusers" / "pytorch_lora_weights.safetensors"):
        assert is_adapter(p) and is_adapter(wv.open(p))


def test_explicit_format_lists_the_tensors_without_the_adapter_check(tmp_path):
    shutil.copy(FIX / "llama_lora" / "adapter_model.safetensors", tmp_path)
    plain = wv.open(tmp_path / "adapter_model.safetensors", format="safetensors")
    assert plain.adapter is None and len(plain) == 28


# ---------------------------------------------------------------- bad input
def test_folder_without_its_config(tmp_path):
    shutil.copy(FIX / "llama_lora" / "adapter_model.safetensors", tmp_path)
    for p in (tmp_path, tmp_path / "adapter_model.safetensors"):
        with pytest.raises(CorruptFileError, match="adapter_config.json not found beside "
                                                   "adapter_model.safetensors; PEFT writes it with save_pretrained"):
            wv.open(p)
    assert is_adapter(tmp_path)
    with pytest.raises(CorruptFileError, match="format='safetensors'"):
        check_adapter(LLAMA, tmp_path)


def test_folder_with_a_config_and_no_weights(tmp_path):
    shutil.copy(FIX / "llama_lora" / "adapter_config.json", tmp_path)
    with pytest.raises(UnknownFormatError, match="holds adapter_config.json but no adapter weights"):
        wv.open(tmp_path)


def _with_config(tmp_path, raw: bytes) -> Path:
    shutil.copy(FIX / "llama_lora" / "adapter_model.safetensors", tmp_path)
    (tmp_path / "adapter_config.json").write_bytes(raw)
    return tmp_path


@pytest.mark.parametrize("raw, words", [
    (b"\x00\xffnot json", "is not valid JSON"),
    (b"[1, 2]", "holds a JSON list, not an object"),
    (b'{"r": 4, "lora_alpha": 8, "target_modules": null, "peft_type": "LORA"}', "names no target modules"),
    (b'{"r": "four", "lora_alpha": 8, "target_modules": ["q_proj"]}', "r (the rank) must be a positive integer"),
    (b'{"r": 4, "lora_alpha": "x", "target_modules": ["q_proj"]}', "lora_alpha must be a number"),
    (b'{"r": 4, "target_modules": [1]}', "target_modules must be a list"),
    (b'{"r": 4, "target_modules": ["q"], "rank_pattern": {"q": "x"}}', "rank_pattern must map"),
    (b"[" * 100000, "is not valid JSON"),
])
def test_bad_configs_raise_corrupt_file_errors(tmp_path, raw, words):
    with pytest.raises(CorruptFileError, match=re.escape(words)):
        wv.open(_with_config(tmp_path, raw))


def test_other_peft_types_open_but_are_not_checked(tmp_path):
    cfg = json.loads((FIX / "llama_lora" / "adapter_config.json").read_text())
    cfg.update(peft_type="IA3")
    ad = wv.open(_with_config(tmp_path, json.dumps(cfg).encode()))
    assert ad.adapter.method == "ia3"
    with pytest.raises(WeightvizError, match="this is a IA3 adapter"):
        check_adapter(LLAMA, ad)


def test_a_plain_checkpoint_is_refused_as_adapter():
    with pytest.raises(WeightvizError, match="not a LoRA adapter"):
        check_adapter(LLAMA, LLAMA)
    with pytest.raises(WeightvizError, match="cannot read an adapter from a int"):
        check_adapter(LLAMA, 3)


# ---------------------------------------------------------------- statuses
@pytest.mark.parametrize("base_name, adapter", CLEAN)
def test_no_false_alarm_on_clean_adapters(base_name, adapter):
    rep = wv.check(base(base_name), FIX / adapter)
    assert rep.fits and set(rep.counts()) == {"ok"}, rep
    assert rep.unmatched_targets == [] and rep.rename_map() == {}
    assert rep.verdict.startswith("all ")


@pytest.mark.parametrize("fault, status, count, words", [
    ("fault_rank", "rank_differs", 14, "stored rank 4, but the config's r is 8: PEFT fails to load it"),
    ("fault_zero3", "empty", 14, "with no elements (torch.Size([0])): ZeRO-3"),
    ("fault_missing", "missing", 1, "targeted by the config, no weights in the adapter"),
    ("fault_shape", "shape_differs", 1, "lora_B (24, 4), expected (16, 4) for the base (16, 32)"),
    ("fault_ab", "rank_differs", 1, "lora_A holds rank 4 but lora_B rank 2"),
    ("fault_prefix", "not_found", 14, "a rename lands it on model.layers."),
    ("llama_untrained", "untrained", 4, "lora_B is all zero (PEFT's initial state)"),
])
def test_each_planted_fault_is_found(fault, status, count, words):
    rep = wv.check(LLAMA, FIX / fault)
    rows = rep.by_status(status)
    assert len(rows) == count and all(words in r.note for r in rows), rep
    assert set(rep.counts()) <= {status, "ok"}
    assert rep.fits is (status == "untrained")


def test_fault_details():
    miss = wv.check(LLAMA, FIX / "fault_missing").by_status("missing")[0]
    assert (miss.module, miss.base) == ("model.layers.1.mlp.up_proj",) * 2
    z = wv.check(LLAMA, FIX / "fault_zero3", numbers=False)
    assert "ZeRO-3" in z.verdict and any("zero3_save_16bit_model" in n and "GatheredParameters" in n
                                         for n in z.notes)
    t = wv.check(LLAMA, FIX / "fault_target")
    assert t.unmatched_targets == ["gate_projj"] and "matches nothing in the base: gate_projj" in t.verdict
    assert "targets matching nothing" in repr(t)
    shape = wv.check(LLAMA, FIX / "fault_shape")["model.layers.0.self_attn.k_proj"]
    assert shape.shapes == {"lora_A": (4, 32), "lora_B": (24, 4), "base": (16, 32)}


def test_the_prefix_proposal_lands_when_applied():
    rep = wv.check(LLAMA, FIX / "fault_prefix")
    assert rep.rename_map() == {"model.language_model.": "model."}
    assert "none of the 14 adapted modules is in the base; rename={'model.language_model.': 'model.'} lands 14" \
        == rep.verdict
    fixed = wv.check(LLAMA, FIX / "fault_prefix", rename=rep.rename_map())
    clean = wv.check(LLAMA, FIX / "llama_lora")
    assert fixed.fits and [r.rel_delta for r in fixed] == [r.rel_delta for r in clean]
    assert fixed.rows[0].module.startswith("model.language_model.")


def test_patterns_layers_and_rslora():
    rep = wv.check(LLAMA, FIX / "llama_patterns")
    got = {r.module: (r.rank, r.alpha, r.scale) for r in rep}
    assert got["model.layers.0.self_attn.q_proj"] == (8, 8.0, 1.0)
    assert got["model.layers.1.self_attn.v_proj"] == (4, 32.0, 8.0)
    assert got["model.layers.0.self_attn.v_proj"] == (4, 8.0, 2.0)
    layers = wv.check(LLAMA, FIX / "llama_layers")
    assert sorted(r.module for r in layers) == ["model.layers.1.self_attn.q_proj",
                                                "model.layers.1.self_attn.v_proj"]   # no layer-0 'missing'
    rs = wv.check(LLAMA, FIX / "llama_rslora")
    assert all(r.scale == pytest.approx(16 / math.sqrt(8)) for r in rs)


def test_kinds_and_base_forms():
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from _adapter_models import gpt2
    g = wv.check(gpt2(), FIX / "gpt2_lora")       # an nn.Module: its Conv1D layers are known
    assert {r.kind for r in g} == {"conv1d"} and g.fits
    from peft import PeftModel
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(gpt2(), str(FIX / "gpt2_lora"))
    assert [r.rel_delta for r in wv.check(pm, FIX / "gpt2_lora")] == [r.rel_delta for r in g]  # its base
    assert {r.kind for r in wv.check(base("conv"), FIX / "conv_lora")} == {"conv", "linear"}
    e = wv.check(wv.open(LLAMA), FIX / "llama_embed")
    assert {r.module: r.kind for r in e}["lm_head"] == "saved"
    assert {r.kind for r in wv.check(base("unet"), FIX / "kohya_lora.safetensors")} == {"linear", "conv"}


def test_kohya_without_alpha_says_what_it_assumed():
    rep = wv.check(base("unet"), FIX / "kohya_noalpha.safetensors")
    assert {r.alpha for r in rep} == {4.0} and {r.scale for r in rep} == {1.0}
    assert any("alpha = rank" in n for n in rep.notes)


# ---------------------------------------------------------------- numbers
def _dense(rep_row, ad, base_ckpt, dtype=torch.float64):
    """ΔW and W formed densely: in float64, or in float32 as PEFT does ((B @ A) * s)."""
    from weightviz.adapters.modules import group
    mod = next(m for m in group(ad, ad.adapter.naming) if m.name == rep_row.module)
    a, b = mod.A.torch().to(dtype), mod.B.torch().to(dtype)
    w = base_ckpt[rep_row.base + ".weight"].torch()
    p = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)
    d = p.T if rep_row.kind in ("conv1d", "embedding") else p
    return (d * rep_row.scale).reshape(w.shape), w


@pytest.mark.parametrize("base_name, adapter", [c for c in CLEAN if "dora" not in c[1]])
def test_r_by_r_numbers_equal_a_dense_computation(base_name, adapter):
    ad, bk = wv.open(FIX / adapter), wv.open(base(base_name))
    rep = wv.check(bk, ad)
    for r in rep:
        if r.kind == "saved":
            continue
        d, w = _dense(r, ad, bk)
        d2 = d.reshape(d.shape[0], -1)
        assert r.rel_delta == pytest.approx(float(d.norm() / w.double().norm()), rel=1e-5)
        sig = torch.linalg.svdvals(d2).numpy()
        assert r.sigma_max == pytest.approx(float(sig[0]), rel=1e-5)
        p = sig[sig > sig[0] * 1e-12] / sig[sig > sig[0] * 1e-12].sum()
        assert r.effective_rank == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-4)


def test_trace_identity_agrees_with_the_qr_path():
    from weightviz.adapters.delta import factors, frobenius_trace, spectrum
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 300, generator=g), torch.randn(200, 8, generator=g)
    f = factors(a, b, 0.5, transposed=False)
    fro, sig = spectrum(f)
    dense = 0.5 * (b.double() @ a.double())
    assert fro == pytest.approx(float(dense.norm()), rel=1e-6)
    assert frobenius_trace(f) == pytest.approx(fro, rel=1e-6)
    assert np.allclose(sig, torch.linalg.svdvals(dense).numpy()[:8], rtol=1e-6)


def _dense_loss(d, w, dt):
    wt = w.to(dt)
    merged = (wt.float() + d.float()).to(dt)
    changed = d.float() != 0
    return int(((merged.view(torch.int16) == wt.view(torch.int16)) & changed).sum()) / int(changed.sum())


@pytest.mark.parametrize("block", [1 << 16, 7])
def test_merge_loss_equals_its_dense_definition(block):
    ad, bk = wv.open(FIX / "gpt2_lora"), wv.open(base("gpt2"))
    rep = wv.check(bk, ad, block=block)
    for r in rep:
        d, w = _dense(r, ad, bk, torch.float32)
        for dt in ("bfloat16", "float16"):
            assert r.merge_loss[dt] == _dense_loss(d, w, getattr(torch, dt))


def test_a_small_change_on_a_bf16_base_is_lost():
    """Every |ΔW| far below half a bf16 spacing of W is rounded away; fp16 keeps more."""
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(64, 48, generator=g) * 0.05).to(torch.bfloat16)
    a = torch.randn(4, 48, generator=g) * 1e-3
    b = torch.randn(64, 4, generator=g) * 1e-3
    from safetensors.torch import save_file
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        save_file({"base_model.model.fc.lora_A.weight": a, "base_model.model.fc.lora_B.weight": b},
                  f"{tmp}/adapter_model.safetensors")
        Path(tmp, "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 4, "target_modules": ["fc"]}))
        rep = wv.check({"fc.weight": w}, tmp)
    row = rep["fc"]
    assert row.merge_loss["bfloat16"] > 0.95 and row.merge_loss["float16"] < row.merge_loss["bfloat16"]
    assert "a bf16 merge drops" in rep.verdict and "over half in 1 of 1 module" in rep.verdict


# ---------------------------------------------------------------- display
def test_json_rows_carry_the_documented_keys():
    rep = wv.check(LLAMA, FIX / "fault_shape")
    d = json.loads(rep.to_json())
    assert d["fits"] is False and d["counts"] == {"shape_differs": 1, "ok": 13}
    for row in d["rows"]:
        assert {"module", "status", "rank", "alpha", "scale", "rel_delta", "merge_loss"} <= set(row)
    ok = next(r for r in d["rows"] if r["status"] == "ok")
    assert set(ok["merge_loss"]) == {"bfloat16", "float16"}


def test_html_and_text_come_from_one_view():
    rep = wv.check(LLAMA, FIX / "fault_missing")
    html, text = rep._repr_html_(), repr(rep)
    assert rep.verdict in text and rep.verdict.replace("'", "&#x27;") in html
    assert "missing" in html and "0x" not in text and str(FIX) not in text
    assert isinstance(rep, AdapterReport) and text == str(rep)
    assert repr(check_adapter(LLAMA, FIX / "fault_missing")) == text      # the verb and the room agree


def test_golden_reports():
    golden("adapter_fault_missing.txt", repr(wv.check(LLAMA, FIX / "fault_missing")))
    golden("adapter_fault_prefix.txt", repr(wv.check(LLAMA, FIX / "fault_prefix")))


def test_importing_the_adapter_room_stays_light():
    code = ("import sys, weightviz.adapters, weightviz.formats.adapter_file; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'ipywidgets', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""weightviz.adapters.merge against PEFT's own merge_and_unload(): float32 (exact, or within
1e-6 where PEFT forms a k×k conv's ΔW by a convolution), bfloat16 bit for bit, the merge
loss the check reports against what PEFT's bf16 merge actually leaves, and the merged view
working with stats and diff."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

import weightviz as wv  # noqa: E402
from weightviz.adapters import merge  # noqa: E402
from weightviz.errors import MismatchError, WeightvizError  # noqa: E402

from _adapter_models import convnet, gpt2, llama  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "adapters"
CASES = [(llama, "llama", "llama_lora"), (llama, "llama", "llama_bin"), (llama, "llama", "llama_rslora"),
         (llama, "llama", "llama_patterns"), (llama, "llama", "llama_layers"), (llama, "llama", "llama_dora"),
         (llama, "llama", "llama_embed"), (gpt2, "gpt2", "gpt2_lora"), (convnet, "conv", "conv_lora"),
         (convnet, "conv", "conv_dora")]
IDS = [c[2] for c in CASES]


def base_sd(name: str, dtype=torch.float32) -> dict:
    from safetensors.torch import load_file
    return {k: v.to(dtype) if v.is_floating_point() else v
            for k, v in load_file(str(FIX / f"{name}_base.safetensors")).items()}


def peft_merged(build, name: str, adapter: str, dtype=torch.float32, keep=False):
    """PEFT's own merge: the model built, its base weights loaded, the adapter loaded
    (adapter weights upcast to float32, PEFT's default) and merged."""
    import warnings
    from peft import PeftModel
    model = build()
    model.load_state_dict(base_sd(name), strict=False)
    model = model.to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(model, str(FIX / adapter))
        deltas = {}
        if keep:
            for mod_name, mod in pm.base_model.model.named_modules():
                if hasattr(mod, "get_delta_weight") and "default" in getattr(mod, "lora_A", {}) or \
                        "default" in getattr(mod, "lora_embedding_A", {}):
                    deltas[mod_name] = mod.get_delta_weight("default").detach().clone()
        merged = pm.merge_and_unload()
    sd = {k: v.detach() for k, v in merged.state_dict().items()}
    return (sd, deltas) if keep else sd


@pytest.mark.parametrize("build, name, adapter", CASES, ids=IDS)
def test_float32_merge_equals_peft(build, name, adapter):
    ref = peft_merged(build, name, adapter)
    got = wv.merge(FIX / f"{name}_base.safetensors", FIX / adapter)
    assert got.format == "merged" and got.adapter is None
    assert list(merge(FIX / f"{name}_base.safetensors", FIX / adapter)) == list(got)   # the room's own
    assert set(ref) <= set(got) | {"lm_head.weight"}          # GPT-2 ties lm_head to wte
    for k in ref:
        if k not in got:
            continue
        a, b = got[k].torch(), ref[k]
        assert a.dtype == b.dtype and a.shape == b.shape, k
        if "conv1.weight" in k:      # PEFT forms a 3×3 conv's ΔW by a convolution: rounding differs
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        else:
            assert torch.equal(a, b), (k, (a - b).abs().max())


@pytest.mark.parametrize("build, name, adapter", CASES, ids=IDS)
def test_bfloat16_merge_equals_peft_bit_for_bit(build, name, adapter):
    ref = peft_merged(build, name, adapter, torch.bfloat16)
    got = wv.merge(base_sd(name, torch.bfloat16), FIX / adapter)
    differ = [k for k in ref if k in got and not torch.equal(got[k].torch(), ref[k])]
    assert differ == [], differ
    cast = wv.merge(FIX / f"{name}_base.safetensors", FIX / adapter, dtype="bfloat16")
    assert {e.dtype for e in cast.entries.values()} == {"bfloat16"}
    assert all(torch.equal(cast[k].torch(), got[k].torch()) for k in got if k not in differ)


@pytest.mark.parametrize("build, name, adapter", [c for c in CASES if "dora" not in c[2]],
                         ids=[c[2] for c in CASES if "dora" not in c[2]])
def test_reported_bf16_loss_is_what_peft_merge_leaves(build, name, adapter):
    ref, deltas = peft_merged(build, name, adapter, torch.bfloat16, keep=True)
    sd = base_sd(name, torch.bfloat16)
    rep = wv.check(sd, FIX / adapter)
    seen = 0
    for r in rep:
        if r.kind == "saved" or r.base not in deltas:
            continue
        w, m, d = sd[r.base + ".weight"], ref[r.base + ".weight"], deltas[r.base]
        changed = d != 0
        lost = int(((m.view(torch.int16) == w.view(torch.int16)) & changed).sum())
        assert r.lost["bfloat16"] == lost and r.changed == int(changed.sum()), r.module
        seen += 1
    assert seen


@pytest.mark.parametrize("build, name, adapter", [CASES[0], CASES[7]], ids=[IDS[0], IDS[7]])
def test_safe_merge_rounds_as_peft_safe_merge(build, name, adapter):
    import warnings
    from peft import PeftModel
    model = build()
    model.load_state_dict(base_sd(name), strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(model.to(torch.bfloat16), str(FIX / adapter))
        ref = pm.merge_and_unload(safe_merge=True).state_dict()
    got = wv.merge(base_sd(name, torch.bfloat16), FIX / adapter, safe_merge=True)
    assert all(torch.equal(got[k].torch(), ref[k]) for k in ref if k in got)
    plain = wv.merge(base_sd(name, torch.bfloat16), FIX / adapter)
    assert any(not torch.equal(got[k].torch(), plain[k].torch()) for k in plain)   # it does round twice


def test_merged_view_works_with_stats_and_diff(tmp_path):
    from safetensors.torch import save_file
    merged = wv.merge(FIX / "llama_base.safetensors", FIX / "llama_lora")
    table = wv.stats(merged)
    assert set(table) == set(wv.open(FIX / "llama_base.safetensors"))
    ref = peft_merged(llama, "llama", "llama_lora")
    save_file({k: v.contiguous() for k, v in ref.items()}, str(tmp_path / "merged.safetensors"))
    d = wv.diff(tmp_path / "merged.safetensors", merged)
    assert d.same, d
    base_vs = wv.diff(FIX / "llama_base.safetensors", merged)
    assert not base_vs.same and "Checkpoint (merged)" in repr(merged)


def test_merge_passes_untouched_tensors_through_lazily():
    base = wv.open(FIX / "llama_base.safetensors")
    merged = wv.merge(base, FIX / "llama_lora")
    assert merged["model.norm.weight"] is base["model.norm.weight"]
    adapted = merged["model.layers.0.self_attn.q_proj.weight"]
    assert adapted.location is None and adapted.shape == (32, 32) and adapted.dtype == "float32"


def test_merge_refuses_what_does_not_fit_and_follows_rename():
    with pytest.raises(MismatchError, match="cannot merge: 1 of 14 modules does not fit") as exc:
        wv.merge(FIX / "llama_base.safetensors", FIX / "fault_shape")
    assert exc.value.report.counts() == {"shape_differs": 1, "ok": 13}
    with pytest.raises(MismatchError, match=r"pass rename=\{'model.language_model.': 'model.'\}"):
        wv.merge(FIX / "llama_base.safetensors", FIX / "fault_prefix")
    renamed = wv.merge(FIX / "llama_base.safetensors", FIX / "fault_prefix", rename={"model.language_model.": "model."})
    clean = wv.merge(FIX / "llama_base.safetensors", FIX / "llama_lora")
    assert all(torch.equal(renamed[k].torch(), clean[k].torch()) for k in clean)
    with pytest.raises(WeightvizError, match="not a floating dtype"):
        wv.merge(FIX / "llama_base.safetensors", FIX / "llama_lora", dtype="int8")


def test_missing_and_untrained_modules_merge_as_peft_leaves_them():
    base = base_sd("llama")
    un = wv.merge(base, FIX / "llama_untrained")
    assert all(torch.equal(un[k].torch(), v) for k, v in base.items())
    miss = wv.merge(base, FIX / "fault_missing")
    assert torch.equal(miss["model.layers.1.mlp.up_proj.weight"].torch(), base["model.layers.1.mlp.up_proj.weight"])


def test_diffusers_and_kohya_files_merge_alike():
    """The two files hold one adapter (alpha 8 written back into the kohya one); both merged
    onto the UNet equal W + (alpha / r) · B @ A formed densely."""
    base = FIX / "unet_base.safetensors"
    d = wv.merge(base, FIX / "diffusers" / "pytorch_lora_weights.safetensors")
    k = wv.merge(base, FIX / "kohya_lora.safetensors")
    ad = wv.open(FIX / "diffusers" / "pytorch_lora_weights.safetensors")
    b0 = wv.open(base)
    n = 0
    for key in d:
        assert torch.equal(d[key].torch(), k[key].torch()), key
        a_name = f"unet.{key[:-len('.weight')]}.lora_A.weight"
        if a_name in ad:
            A, B = ad[a_name].torch(), ad[a_name.replace("lora_A", "lora_B")].torch()
            w = b0[key].torch()
            dense = (B.flatten(1) @ A.flatten(1) * 2.0).reshape(w.shape)
            torch.testing.assert_close(d[key].torch(), w + dense, atol=1e-6, rtol=0)
            n += 1
    assert n == 40


@pytest.mark.parametrize("build, name, cfg", [
    (gpt2, "gpt2", dict(r=4, lora_alpha=8, use_dora=True, fan_in_fan_out=True, target_modules=["c_attn", "c_fc"])),
    (gpt2, "gpt2", dict(r=4, lora_alpha=8, lora_bias=True, fan_in_fan_out=True, target_modules=["c_proj"])),
    (convnet, "conv", dict(r=2, lora_alpha=2, lora_bias=True, target_modules=["conv1", "head"])),
    (llama, "llama", dict(r=2, lora_alpha=4, use_dora=True, target_modules=["embed_tokens", "v_proj"])),
], ids=["gpt2-dora-conv1d", "gpt2-lora_bias", "conv-lora_bias", "llama-dora-embedding"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_more_layouts_merge_as_peft_does(tmp_path, build, name, cfg, dtype):
    """Adapters saved on the fly: DoRA on Conv1D and on an Embedding, lora_bias (ΔW's bias)."""
    import warnings
    from peft import LoraConfig, PeftModel, get_peft_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(3)
        pm = get_peft_model(build(), LoraConfig(**cfg))
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.add_(torch.randn(p.shape, generator=g) * 0.02)
        pm.save_pretrained(tmp_path / "ad")
        model = build()
        model.load_state_dict(base_sd(name), strict=False)
        ref = PeftModel.from_pretrained(model.to(dtype), str(tmp_path / "ad")).merge_and_unload().state_dict()
    got = wv.merge(base_sd(name, dtype), tmp_path / "ad")
    assert wv.check(base_sd(name, dtype), tmp_path / "ad").fits
    for k in ref:
        if k in got:
            if dtype == torch.float32 and "conv1.weight" in k:
                torch.testing.assert_close(got[k].torch(), ref[k], atol=1e-6, rtol=0)
            else:
                assert torch.equal(got[k].torch(), ref[k]), (k, (got[k].torch().float() - ref[k].float()).abs().max())


def test_lora_bias_without_a_base_bias_is_not_merged(tmp_path):
    import warnings
    from peft import LoraConfig, get_peft_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(llama(), LoraConfig(r=2, lora_bias=True, target_modules=["q_proj"])).save_pretrained(tmp_path)
    rep = wv.check(base_sd("llama"), tmp_path)
    assert all("PEFT cannot merge it" in r.note for r in rep)
    with pytest.raises(WeightvizError, match=r"cannot merge these modules.*lora_bias=True, the base layer has no bias"):
        wv.merge(base_sd("llama"), tmp_path)


def test_an_integer_base_weight_is_not_merged_silently():
    base = base_sd("llama")
    base["model.layers.0.self_attn.q_proj.weight"] = (base["model.layers.0.self_attn.q_proj.weight"] * 100).to(torch.int8)
    rep = wv.check(base, FIX / "llama_lora")
    assert "ΔW numbers skipped" in rep["model.layers.0.self_attn.q_proj"].note
    with pytest.raises(WeightvizError, match="the base weight is int8: dequantize it first"):
        wv.merge(base, FIX / "llama_lora")

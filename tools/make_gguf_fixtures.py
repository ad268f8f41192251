"""Write tests/fixtures/gguf/: tiny GGUF files made by the gguf package's own GGUFWriter.

Run from the repository root:

    .venv/bin/python tools/make_gguf_fixtures.py

One tiny llama-shaped model (vocabulary 8, width 32, one block), seeded, written as:

* ``tiny-f32.gguf``   every tensor F32: the float originals the other files are compared with;
* ``tiny-f16.gguf``   2-D weights F16, norms F32 (as llama.cpp's converter writes them);
* ``tiny-q8_0.gguf``  2-D weights Q8_0 (``gguf.quants.quantize``), norms F32;
* ``tiny-q4_0.gguf``  2-D weights Q4_0, norms F32;
* ``tiny-mixed.gguf`` Q4_K, Q6_K (blocks with random codes and sane scales: gguf cannot
  quantize to K-quants), BF16, I32, F16, and a Q8_K tensor gguf cannot dequantize;
  ``general.alignment`` 64;
* ``tiny-be.gguf``    big-endian (``GGUFEndian.BIG``): F32 and one Q8_0 tensor.

Metadata: real llama keys (``general.*``, ``llama.*``, ``tokenizer.ggml.*``). Each file is
a few KB. The files are deterministic: rerunning gives the same bytes.
"""
from __future__ import annotations

import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gguf")
VOCAB, WIDTH, FFN = 8, 32, 64
TOKENS = ["<unk>", "<s>", "</s>", "▁the", "▁a", "▁weight", "s", "."]


def originals() -> dict[str, np.ndarray]:
    """The float32 tensors, in PyTorch order (out, in): what ``Linear.weight`` holds."""
    rng = np.random.default_rng(0)
    w = lambda *shape: (rng.standard_normal(shape) * 0.05).astype(np.float32)   # noqa: E731
    norm = lambda: (1 + 0.1 * rng.standard_normal(WIDTH)).astype(np.float32)    # noqa: E731
    return {
        "token_embd.weight": w(VOCAB, WIDTH),
        "blk.0.attn_norm.weight": norm(),
        "blk.0.attn_q.weight": w(WIDTH, WIDTH),
        "blk.0.ffn_up.weight": w(FFN, WIDTH),
        "output_norm.weight": norm(),
        "output.weight": w(VOCAB, WIDTH),
    }


def _writer(path: str, file_type: int, **kw):
    import gguf
    w = gguf.GGUFWriter(path, "llama", **kw)
    w.add_name("weightviz tiny llama")
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(128)
    w.add_embedding_length(WIDTH)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(WIDTH // 4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("llama")
    w.add_token_list(TOKENS)
    w.add_token_scores([-float(i) for i in range(VOCAB)])
    w.add_token_types([2, 3, 3] + [1] * (VOCAB - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return w


def _close(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_model(path: str, qtype, file_type: int, **kw):
    """The tiny model with its 2-D weights stored as ``qtype`` (norms stay F32)."""
    import gguf
    from gguf import quants
    w = _writer(path, file_type, **kw)
    for name, arr in originals().items():
        if arr.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)
    _close(w)


def _kquant_blocks(rng, qtype, n_blocks: int) -> np.ndarray:
    """Valid K-quant blocks: random codes, small positive f16 scales where the format keeps them."""
    import gguf
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scale = np.full((n_blocks, 1), 0.01, np.float16).view(np.uint8)
    if qtype == gguf.GGMLQuantizationType.Q4_K:          # d, dmin (f16) first
        raw[:, 0:2] = scale
        raw[:, 2:4] = scale
    elif qtype == gguf.GGMLQuantizationType.Q6_K:        # d (f16) last
        raw[:, -2:] = scale
    elif qtype == gguf.GGMLQuantizationType.Q8_K:        # d (f32) first
        raw[:, 0:4] = np.full((n_blocks, 1), 0.01, np.float32).view(np.uint8)
    return raw


def write_mixed(path: str):
    import gguf
    T = gguf.GGMLQuantizationType
    rng = np.random.default_rng(1)
    w = _writer(path, 15)                                  # MOSTLY_Q4_K_M
    w.add_custom_alignment(64)
    w.add_tensor("blk.0.ffn_down.weight", _kquant_blocks(rng, T.Q4_K, 4).reshape(2, -1), raw_dtype=T.Q4_K)
    w.add_tensor("blk.0.ffn_gate.weight", _kquant_blocks(rng, T.Q6_K, 4).reshape(2, -1), raw_dtype=T.Q6_K)
    w.add_tensor("blk.0.attn_k.weight", _kquant_blocks(rng, T.Q8_K, 2).reshape(2, -1), raw_dtype=T.Q8_K)
    bf16 = (rng.standard_normal((4, 8)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    w.add_tensor("blk.0.attn_v.weight", bf16, raw_shape=(4, 8), raw_dtype=T.BF16)
    w.add_tensor("blk.0.attn_output.weight", rng.standard_normal((4, 32)).astype(np.float16))
    w.add_tensor("rope_freqs.weight", np.arange(4, dtype=np.int32))
    _close(w)


def main() -> int:
    import gguf
    T, F = gguf.GGMLQuantizationType, gguf.LlamaFileType
    os.makedirs(OUT, exist_ok=True)
    p = lambda name: os.path.join(OUT, name)   # noqa: E731
    write_model(p("tiny-f32.gguf"), T.F32, F.ALL_F32)
    write_model(p("tiny-f16.gguf"), T.F16, F.MOSTLY_F16)
    write_model(p("tiny-q8_0.gguf"), T.Q8_0, F.MOSTLY_Q8_0)
    write_model(p("tiny-q4_0.gguf"), T.Q4_0, F.MOSTLY_Q4_0)
    write_mixed(p("tiny-mixed.gguf"))
    w = _writer(p("tiny-be.gguf"), F.ALL_F32, endianess=gguf.GGUFEndian.BIG)
    arrays = originals()
    w.add_tensor("token_embd.weight", arrays["token_embd.weight"])
    w.add_tensor("output_norm.weight", arrays["output_norm.weight"])
    w.add_tensor("output.weight", gguf.quants.quantize(arrays["output.weight"], T.Q8_0), raw_dtype=T.Q8_0)
    _close(w)
    for name in sorted(os.listdir(OUT)):
        print(f"{name:20s} {os.path.getsize(p(name)):>7,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

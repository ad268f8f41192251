"""Dtype names shared by every reader: one canonical string per dtype.

Canonical names are torch's without the ``torch.`` prefix (``float32``,
``bfloat16``, ``float8_e4m3fn`` ...).  NumPy has no bfloat16/float8, so
:func:`numpy_view_dtype` tells readers which raw NumPy dtype holds the bits.
"""
from __future__ import annotations

import numpy as np

ITEMSIZE_BITS = {
    "bool": 8, "uint8": 8, "int8": 8, "int16": 16, "uint16": 16, "int32": 32,
    "uint32": 32, "int64": 64, "uint64": 64, "float16": 16, "bfloat16": 16,
    "float32": 32, "float64": 64, "complex64": 64, "complex128": 128,
    "float8_e4m3fn": 8, "float8_e5m2": 8, "float8_e4m3fnuz": 8,
    "float8_e5m2fnuz": 8, "float8_e8m0fnu": 8,
}

# safetensors dtype codes -> canonical names
SAFETENSORS = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64",
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}

FLOATS = {n for n in ITEMSIZE_BITS if n.startswith(("float", "bfloat"))}
LOW_PRECISION = {n for n in FLOATS if ITEMSIZE_BITS[n] <= 16}

# block-quantized ggml types (GGUF files), by their GGUF names: name -> (elements per block,
# bytes per block), as gguf.GGML_QUANT_SIZES (tests/test_formats_gguf.py checks they agree).
# Their data reads as float32 (dequantized), so they count as floats.
QUANTIZED = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q8_1": (32, 40), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
    "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292), "IQ2_XXS": (256, 66),
    "IQ2_XS": (256, 74), "IQ3_XXS": (256, 98), "IQ1_S": (256, 50), "IQ4_NL": (32, 18),
    "IQ3_S": (256, 110), "IQ2_S": (256, 82), "IQ4_XS": (256, 136), "IQ1_M": (256, 56),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17), "NVFP4": (64, 36),
    "Q1_0": (128, 18),
}


def nbytes(name: str, numel: int) -> int:
    """Bytes of ``numel`` elements of a dtype: whole blocks for a quantized type; 0 if unknown."""
    if name in QUANTIZED:
        block, size = QUANTIZED[name]
        return -(-numel // block) * size
    return numel * ITEMSIZE_BITS.get(name, 0) // 8


def block_size(name: str) -> int | None:
    """Elements per quantization block of a quantized type, else None."""
    return QUANTIZED[name][0] if name in QUANTIZED else None


def itemsize(name: str) -> int:
    """Bytes per element of a canonical dtype name."""
    return ITEMSIZE_BITS[name] // 8


def from_numpy(dt) -> str:
    """Canonical name of a NumPy dtype (byte order dropped)."""
    dt = np.dtype(dt)
    if dt.kind == "b":
        return "bool"
    name = dt.newbyteorder("=").name
    if name in ITEMSIZE_BITS:
        return name
    return name  # e.g. 'object', 'str32': callers decide whether to refuse


def from_torch(dt) -> str:
    """Canonical name of a torch dtype."""
    return str(dt).removeprefix("torch.")


def to_torch(name: str):
    """torch dtype of a canonical name (imports torch)."""
    import torch
    return getattr(torch, name)


def numpy_view_dtype(name: str) -> np.dtype:
    """A NumPy dtype with the same bits: bfloat16 -> uint16, float8 -> uint8."""
    if name == "bfloat16":
        return np.dtype("<u2")
    if name.startswith("float8"):
        return np.dtype("u1")
    return np.dtype(name).newbyteorder("<")


def is_float(name: str) -> bool:
    return name in FLOATS or name in QUANTIZED


def is_complex(name: str) -> bool:
    return name.startswith("complex")

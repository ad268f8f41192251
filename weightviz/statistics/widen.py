"""Widening raw chunks to native float32/float64 for the statistics scan.

bfloat16 by bit shift, float8 by a 256-entry table (built by formula, checked
against torch in the tests), integers/bool by cast, complex by magnitude,
big-endian by byte swap; native float32/float64 pass through without a copy.
"""
from __future__ import annotations

import numpy as np


def _fp8_table(name: str) -> np.ndarray:
    """float32 value of each of the 256 bit patterns of a float8 format (by formula)."""
    b = np.arange(256)
    if name == "float8_e8m0fnu":             # exponent only, 0xFF is NaN
        out = np.ldexp(1.0, b - 127)
        out[255] = np.nan
        return out.astype(np.float32)
    ebits, bias, fn, uz = {
        "float8_e4m3fn": (4, 7, True, False), "float8_e5m2": (5, 15, False, False),
        "float8_e4m3fnuz": (4, 8, True, True), "float8_e5m2fnuz": (5, 16, True, True),
    }[name]
    mbits = 7 - ebits
    sign = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> mbits) & ((1 << ebits) - 1)
    m = b & ((1 << mbits) - 1)
    val = np.where(e == 0, np.ldexp(m / (1 << mbits), 1 - bias),
                   np.ldexp(1.0 + m / (1 << mbits), e - bias)) * sign
    if uz:                                   # one NaN (0x80), no negative zero, no inf
        val[0x80] = np.nan
    elif fn:                                 # e4m3fn: S.1111.111 is NaN, no inf
        val[(e == (1 << ebits) - 1) & (m == (1 << mbits) - 1)] = np.nan
    else:                                    # IEEE-like e5m2
        top = e == (1 << ebits) - 1
        val[top & (m == 0)] = np.inf * sign[top & (m == 0)]
        val[top & (m != 0)] = np.nan
    return val.astype(np.float32)


class Widener:
    """Turns raw chunks of one stored dtype into native float32/float64 arrays."""

    def __init__(self, dtype: str, raw_dtype: np.dtype, chunk: int):
        raw_dtype = np.dtype(raw_dtype)
        f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
        if dtype == "bfloat16":
            self.kind, self.out = "bf16", f32
        elif dtype.startswith("float8"):
            self.kind, self.out, self.table = "lut", f32, _fp8_table(dtype)
        elif raw_dtype.kind == "c":
            self.kind, self.out = "abs", (f32 if raw_dtype.itemsize <= 8 else f64)
        elif raw_dtype.kind == "f":           # native float32/float64 need no copy at all
            self.out = f64 if raw_dtype.itemsize > 4 else f32
            self.kind = "view" if raw_dtype == self.out else "cast"
        else:                                 # bool and integers: exact in float32 to 16 bits
            self.kind, self.out = "cast", (f32 if raw_dtype.itemsize <= 2 else f64)
        self.buf = (None if self.kind == "view"
                    else np.empty(chunk, np.uint32 if self.kind == "bf16" else self.out))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        k = self.kind
        if k == "view":
            return raw
        out = self.buf[: raw.size]
        if k == "bf16":
            np.left_shift(raw, np.uint32(16), out=out, dtype=np.uint32)
            return out.view(np.float32)
        if k == "lut":
            return np.take(self.table, raw, out=out)
        if k == "abs":
            return np.abs(raw, out=out)
        np.copyto(out, raw, casting="unsafe")
        return out

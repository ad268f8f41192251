"""The numbers of one adapted module: ΔW = s · B @ A without forming it, and, block by block,
what a merge in a 16-bit dtype keeps of it.

Orientation. Every layout is written as ``P = B2 @ A2`` with ``B2`` (p, r) and ``A2`` (r, q):
Linear ``B @ A`` is (out, in) like its weight; a Conv2d's ``B.flatten(1) @ A.flatten(1)`` is
its weight flattened to (out, in·kh·kw); GPT-2's Conv1D (``fan_in_fan_out``) stores (in, out)
and an Embedding (num_embeddings, dim), so there ΔW = s · Pᵀ (``transposed``). Blocks are rows
of P, so a DoRA norm (one per row of P: per output feature, per embedding dimension) is
always complete within a block.

Merging as PEFT does (``tuners/lora/layer.py``, ``Linear.merge`` with the default
``safe_merge=False``, adapter weights in float32 as ``autocast_adapter_dtype`` leaves them):
``delta = (B @ A) * s`` in float32, then ``weight.data += delta`` in the weight's dtype, which
torch computes in float32 and rounds once. PEFT's Embedding layer, and every layer under
``safe_merge=True``, casts ΔW to the weight's dtype first and so rounds twice
(``Factors.cast_delta``). DoRA (``variants.py``, ``dora.py``):
``(m / ‖W + ΔW‖_row) · (W + ΔW)`` in float32, rounded once. A 16-bit merge of a float32
base starts from the base rounded to that dtype (``torch_dtype=``).

Merge loss in a dtype t: the share of ΔW's nonzero entries where the merged weight equals the
base weight (both in t, compared bit for bit): the change was rounded away entirely.
(A base entry of exactly -0.0 whose change rounds to +0.0 counts as kept.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import dtypes

LOSS_DTYPES = ("bfloat16", "float16")
SCAN_ELEMENTS = 1 << 18        # elements per block of the merge-loss scan (1 MiB float32 buffers)
MERGE_ELEMENTS = 1 << 22       # elements per block when a merged tensor is built (16 MiB float32)


@dataclass
class Factors:
    """ΔW = scale · P (or Pᵀ when ``transposed``), P = B2 @ A2; float32 (float64 if stored so)."""
    B2: object                 # torch (p, r)
    A2: object                 # torch (r, q)
    scale: float
    transposed: bool
    magnitude: object = None   # DoRA: torch (p,), float32
    cast_delta: bool = False   # ΔW cast to the weight's dtype before the add (Embedding, safe_merge)

    @property
    def p(self) -> int:
        return self.B2.shape[0]

    @property
    def q(self) -> int:
        return self.A2.shape[1]

    def block(self, i0: int, i1: int):
        """Rows i0:i1 of s · P, as PEFT computes them: ``(B @ A) * s``."""
        import torch
        d = torch.mm(self.B2[i0:i1], self.A2)
        if self.scale != 1.0:
            d.mul_(self.scale)
        return d


def factors(A, B, scale: float, *, transposed: bool, magnitude=None, cast_delta: bool = False) -> Factors:
    """Factors from the stored lora_A / lora_B tensors (torch), in PEFT's compute dtype."""
    import torch
    ct = torch.float64 if torch.float64 in (A.dtype, B.dtype) else torch.float32
    B2 = B.detach().reshape(B.shape[0], -1).to(ct).contiguous()
    A2 = A.detach().reshape(A.shape[0], -1).to(ct).contiguous()
    mag = None if magnitude is None else magnitude.detach().reshape(-1).to(ct)
    return Factors(B2, A2, float(scale), transposed, mag, cast_delta)


# ---------------------------------------------------------------- the r x r path
def spectrum(f: Factors) -> tuple[float, np.ndarray]:
    """‖ΔW‖_F and ΔW's singular values, from thin QRs: B2 = Q_B R_B, A2ᵀ = Q_A R_A, so
    σ(ΔW) = |s| · σ(R_B R_Aᵀ), an r×r problem, O((p + q)·r²). Computed in float64."""
    import torch
    _, rb = torch.linalg.qr(f.B2.double())
    _, ra = torch.linalg.qr(f.A2.double().T)
    core = rb @ ra.T
    sig = torch.linalg.svdvals(core).numpy() * abs(f.scale)
    return float(np.sqrt(np.sum(sig * sig))), sig


def frobenius_trace(f: Factors) -> float:
    """‖ΔW‖_F by the trace identity ‖ΔW‖_F² = s² · tr((BᵀB)(AAᵀ)) (a cross-check)."""
    b, a = f.B2.double(), f.A2.double()
    return abs(f.scale) * math.sqrt(max(float(((b.T @ b) * (a @ a.T)).sum()), 0.0))


def effective_rank(sig: np.ndarray) -> float | None:
    """Roy & Vetterli's effective rank exp(H), H the entropy of σ / Σσ: r for r equal
    directions, 1 for a single one, in between for a decaying spectrum. None for ΔW = 0."""
    total = float(np.sum(sig))
    if not total > 0 or not math.isfinite(total):
        return None
    p = sig[sig > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


# ---------------------------------------------------------------- the base weight, in rows of P
class Rows:
    """The base weight read in blocks of P's rows (its rows, or its columns when transposed),
    in its stored dtype, without loading it whole when the file allows a memory map."""

    def __init__(self, entry, f: Factors):
        import warnings

        import torch
        self.transposed = f.transposed
        self.dtype = dtypes.to_torch(entry.dtype)
        n0 = entry.shape[0] if entry.shape else 1
        shape2 = (n0, entry.numel // max(n0, 1))
        if entry.location is not None and entry.numel:
            mm = entry.raw().reshape(shape2)
            if mm.dtype.byteorder not in "=|":                    # a big-endian .npy: native copy
                mm = mm.astype(mm.dtype.newbyteorder("="))
            with warnings.catch_warnings():                      # read-only map: only ever read here
                warnings.simplefilter("ignore", UserWarning)
                t = torch.from_numpy(mm)
            self._t = t.view(self.dtype) if t.dtype != self.dtype else t
        else:
            t = entry.torch()
            self._t = (t if isinstance(t, torch.Tensor) else torch.as_tensor(t)).detach().reshape(shape2)

    def block(self, i0: int, i1: int):
        return self._t[:, i0:i1].T if self.transposed else self._t[i0:i1]


def _power_of_two(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


class _Buffers:
    """Work arrays of one block shape, reused from block to block (the last block slices them)."""

    def __init__(self, rows: int, q: int, ct, names):
        import torch
        self.f = {k: torch.empty(rows, q, dtype=ct) for k in ("w", "d", "s", "c")}
        self.t = {n: {k: torch.empty(rows, q, dtype=dtypes.to_torch(n)) for k in ("w", "m")} for n in names}
        self.i16 = torch.empty(rows, q, dtype=torch.int16)
        self.bits = torch.empty(rows, q, dtype=torch.int64 if ct == torch.float64 else torch.int32)


def scan(entry, f: Factors, *, merge_loss: bool = True, block: int = SCAN_ELEMENTS) -> dict:
    """One pass over the base weight: ‖W‖_F, ΔW's nonzero count, and per 16-bit dtype the
    entries a merge rounds away (DoRA: the merged weight against the base).

    Per block of P's rows: ΔW formed by one matmul (s folded into B when it is a power of two,
    which rounds identically), the merge done in float32 and cast, and the cast compared with
    the base's own bits (XOR, then a count of nonzero words: cheaper than == and a count of
    True); ΔW's nonzero entries counted on its bits with the sign masked off (-0.0 is zero).
    Nothing of ΔW outlives its block."""
    import torch
    if f.magnitude is not None:
        return _scan_dora(entry, f, merge_loss=merge_loss, block=block)
    rows = Rows(entry, f)
    step = max(1, min(f.p, block // max(f.q, 1)))
    names = LOSS_DTYPES if merge_loss else ()
    buf = _Buffers(step, f.q, f.B2.dtype, names)
    folded = f.scale == 1.0 or _power_of_two(f.scale)
    b2 = f.B2 * f.scale if folded and f.scale != 1.0 else f.B2
    w_sq, changed = 0.0, 0
    lost = {n: 0 for n in names}
    no_sign = (1 << (8 * buf.bits.element_size() - 1)) - 1      # every bit of a float but its sign
    for i0 in range(0, f.p, step):
        i1 = min(f.p, i0 + step)
        n = i1 - i0
        w = rows.block(i0, i1)
        wf, d = buf.f["w"][:n], buf.f["d"][:n]
        wf.copy_(w)
        torch.mm(b2[i0:i1], f.A2, out=d)
        if not folded:
            d.mul_(f.scale)
        w_sq += float(torch.dot(wf.view(-1), wf.view(-1)))
        bits = buf.bits[:n]
        torch.bitwise_and(d.view(bits.dtype), no_sign, out=bits)
        nz = int(torch.count_nonzero(bits))
        changed += nz
        if not nz:
            continue
        native = w.is_contiguous() and w.dtype in (dtypes.to_torch(x) for x in names)
        for name in sorted(names, key=lambda x: dtypes.to_torch(x) == w.dtype):   # native last
            dt, tb = dtypes.to_torch(name), buf.t[name]
            if native and w.dtype == dt:
                wt, acc = w, wf                # wf's last use: the merge is added into it
            else:
                wt, acc = tb["w"][:n], buf.f["s"][:n]
                wt.copy_(wf)                   # the base rounded to dt, then widened exactly
                acc.copy_(wt)
            if f.cast_delta:                   # ΔW rounded to the weight's dtype first
                tb["m"][:n].copy_(d)
                acc.add_(buf.f["c"][:n].copy_(tb["m"][:n]))
            else:
                acc.add_(d)
            m, differ = tb["m"][:n], buf.i16[:n]
            m.copy_(acc)
            torch.bitwise_xor(m.view(torch.int16), wt.view(torch.int16), out=differ)
            k = d.numel() - int(torch.count_nonzero(differ))
            if nz < d.numel() and k:            # entries where ΔW is exactly 0 are not changes
                k -= int(torch.count_nonzero((differ == 0) & (d == 0)))
            lost[name] += k
    return {"w_norm": math.sqrt(w_sq), "changed": changed,
            "lost": {n: (lost[n] / changed if changed else None) for n in names},
            "lost_counts": lost}


def _scan_dora(entry, f: Factors, *, merge_loss: bool, block: int) -> dict:
    """DoRA: the change is the merged weight's, (m / ‖W + ΔW‖_row) · (W + ΔW) - W."""
    import torch
    rows = Rows(entry, f)
    step = max(1, block // max(f.q, 1))
    names = LOSS_DTYPES if merge_loss else ()
    w_sq = ch_sq = 0.0
    changed = 0
    lost = {n: 0 for n in names}
    moved_t = {n: 0 for n in names}           # the changes a merge in that dtype would make
    for i0 in range(0, f.p, step):
        i1 = min(f.p, i0 + step)
        w = rows.block(i0, i1)
        wf = w.to(f.B2.dtype)
        d = f.block(i0, i1)
        mag = f.magnitude[i0:i1]
        w_sq += float(torch.dot(wf.reshape(-1), wf.reshape(-1)))
        diff = _dora(wf, d, mag) - wf
        ch_sq += float(torch.dot(diff.reshape(-1), diff.reshape(-1)))
        changed += int(torch.count_nonzero(diff))
        for name in names:
            dt = dtypes.to_torch(name)
            wt = w.contiguous() if w.dtype == dt else wf.to(dt)
            wt_f = wt.to(wf.dtype)
            m = _dora(wt_f, d, mag)
            moved = m != wt_f
            same = _as16(m, dt) == wt.view(torch.int16)
            moved_t[name] += int(torch.count_nonzero(moved))
            lost[name] += int(torch.count_nonzero(same & moved))
    return {"w_norm": math.sqrt(w_sq), "changed": changed, "change_norm": math.sqrt(ch_sq),
            "lost": {n: (lost[n] / moved_t[n] if moved_t[n] else None) for n in names},
            "lost_counts": lost}


def _as16(t, dt):
    """A tensor cast to a 16-bit dtype, its bits as int16 for bitwise comparison."""
    import torch
    return t.to(dt).view(torch.int16)


def _dora(wf, d, mag):
    """PEFT's DoRA merge before the final cast: (m / ‖W + ΔW‖_row) · (W + ΔW)."""
    import torch
    v = wf + d
    norm = torch.linalg.norm(v, dim=1)
    return (mag / norm).view(-1, 1) * v


def merged(entry, f: Factors, dtype, *, block: int = MERGE_ELEMENTS):
    """The whole merged weight W + ΔW (DoRA: PEFT's rescaled one) in torch dtype ``dtype``."""
    import torch
    rows = Rows(entry, f)
    out = torch.empty(entry.shape, dtype=dtype)
    out2 = out.view(f.q, f.p) if f.transposed else out.view(f.p, f.q)
    step = max(1, block // max(f.q, 1))
    for i0 in range(0, f.p, step):
        i1 = min(f.p, i0 + step)
        w = rows.block(i0, i1)
        wt = w if w.dtype == dtype else w.to(dtype)
        wf = wt.to(f.B2.dtype)
        d = f.block(i0, i1)
        if f.cast_delta and f.magnitude is None:
            d = d.to(dtype).to(d.dtype)
        m = _dora(wf, d, f.magnitude[i0:i1]) if f.magnitude is not None else torch.add(wf, d)
        m = m.to(dtype)
        if f.transposed:
            out2[:, i0:i1] = m.T
        else:
            out2[i0:i1] = m
    return out


def dense(f: Factors):
    """ΔW in the base weight's 2-D layout (tests and small cross-checks only)."""
    p = f.block(0, f.p)
    return p.T if f.transposed else p

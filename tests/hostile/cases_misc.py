"""Broken and mislabelled files (empty, truncated, Git LFS pointers, HTML pages, wrong
extensions), valid-but-nasty tensors that must load and be flagged (NaN, Inf, empty,
0-dim, huge, bf16/fp8, complex, big-endian, tied storage), hostile names and metadata
that must come out escaped in HTML, and real-but-unusual files (TorchScript, a pickled
``nn.Module``) that are listed without running anything."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

from . import craft
from .catalog import Case, Either, Ok, Refuse
from .cases_code import FIXTURES

XSS = "<img src=x onerror=alert(1)>"          # no '.' or '/': survives layer grouping intact
NASTY_FLAGS = ("nan", "inf", "empty", "single_value", "low_precision", "complex")
ERR = ("CorruptFileError", "UnknownFormatError")


# ------------------------------------------------------------------ valid files, one per format
def v_safetensors(p: Path):
    import numpy as np
    from safetensors.numpy import save_file
    save_file({"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
               "fc.bias": np.ones(2, dtype=np.float32)}, str(p), metadata={"format": "pt"})


def v_torch(p: Path, legacy=False):
    import torch
    sd = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.ones(2)}
    torch.save(sd, p, _use_new_zipfile_serialization=not legacy)


def v_npy(p: Path):
    import numpy as np
    np.save(p, np.arange(6, dtype=np.float32).reshape(2, 3))


def v_npz(p: Path):
    import numpy as np
    with open(p, "wb") as f:
        np.savez(f, w=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.ones(2, dtype=np.float32))


def v_h5(p: Path):
    import h5py
    with h5py.File(p, "w") as f:
        f.create_dataset("fc/weight", data=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        f.create_dataset("fc/bias", data=[1.0, 1.0])


VALID = {  # format -> (filename, writer)
    "safetensors": ("model.safetensors", v_safetensors),
    "torch": ("model.pt", v_torch),
    "torch-legacy": ("legacy.pt", lambda p: v_torch(p, legacy=True)),
    "numpy": ("weights.npy", v_npy),
    "npz": ("weights.npz", v_npz),
    "hdf5": ("weights.h5", v_h5),
    "keras-h5": ("model.h5", lambda p: shutil.copy(FIXTURES / "k2_model.h5", p)),
    "keras": ("model.keras", lambda p: shutil.copy(FIXTURES / "k3_model.keras", p)),
    "keras-json": ("model.json", lambda p: shutil.copy(FIXTURES / "k2_model.json", p)),
}


def truncated(fmt: str, frac: float):
    fname, writer = VALID[fmt]

    def make(d):
        writer(d / ("full_" + fname))
        data = (d / ("full_" + fname)).read_bytes()
        (d / ("full_" + fname)).unlink()
        (d / fname).write_bytes(data[: int(len(data) * frac)])
    return make


def renamed(fmt: str, new: str):
    def make(d):
        VALID[fmt][1](d / new)
    return make


def raw(name: str, data: bytes):
    def make(d):
        (d / name).write_bytes(data)
    return make


LFS = (b"version https://git-lfs.github.com/spec/v1\n"
       b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 548118077\n")
HTML = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><title>Sign in</title></head>"
        b"<body><form action=\"/login\"></form></body></html>\n")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64


# ------------------------------------------------------------------ nasty but valid
def st_nasty(d):
    import numpy as np
    import torch
    from safetensors.torch import save_file
    save_file({"nan": torch.tensor([1.0, float("nan"), 2.0]), "inf": torch.tensor([float("inf"), -1.0]),
               "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.5), "huge": torch.tensor([3e38, -3e38, 1e38]),
               "bf16": torch.randn(8).to(torch.bfloat16), "fp8": torch.randn(8).to(torch.float8_e4m3fn),
               "fp8b": torch.randn(8).to(torch.float8_e5m2), "c64": torch.randn(4, dtype=torch.complex64),
               "ints": torch.arange(5), "bools": torch.tensor([True, False])}, str(d / "nasty.safetensors"))
    del np


def pt_nasty(d):
    import torch
    base = torch.randn(6, 4)
    torch.save({"nan": torch.tensor([1.0, float("nan")]), "inf": torch.tensor([float("-inf"), 1.0]),
                "empty": torch.zeros(0, 2 ** 20), "scalar": torch.tensor(2.0), "huge": torch.tensor([3e38, -3e38]),
                "bf16": torch.randn(8).to(torch.bfloat16), "fp8": torch.randn(8).to(torch.float8_e4m3fn),
                "c128": torch.randn(3, dtype=torch.complex128),
                "tied_a": base, "tied_b": base, "view_row": base[2], "view_t": base.t()}, d / "nasty.pt")


def npz_nasty(d):
    import numpy as np
    with open(d / "nasty.npz", "wb") as f:
        np.savez(f, big_endian=np.arange(6, dtype=">f4").reshape(2, 3),
                 fortran=np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                 empty_huge=np.empty((0, 2 ** 40), dtype=np.float32), scalar=np.float64(1.5),
                 nan=np.array([np.nan, 1.0]), inf=np.array([np.inf, 0.0]), c=np.array([1 + 2j, 3j]),
                 f16=np.ones(4, dtype=np.float16))


def npy_big_endian(d):
    import numpy as np
    np.save(d / "be.npy", np.array([[1.5, np.nan], [np.inf, -2.0]], dtype=">f8"))


def npy_subnormal(d):
    """float64 subnormals in a range so narrow that bins / (max - min) overflows (found by fuzzing:
    fast_histogram then indexed out of bounds and crashed the process)."""
    import numpy as np
    np.save(d / "tiny.npy", np.arange(1, 7, dtype=np.int64).view(np.float64) + 5.3e-315)


def h5_nasty(d):
    import h5py
    import numpy as np
    with h5py.File(d / "nasty.h5", "w") as f:
        f.create_dataset("be", data=np.arange(4, dtype=">f4"))
        f.create_dataset("scalar", data=np.float32(2.0))
        f.create_dataset("empty", shape=(0, 3), dtype="f4")
        f.create_dataset("nan", data=np.array([np.nan, 1.0, np.inf], dtype="f4"))
        f.create_dataset("f16", data=np.ones(3, dtype="f2"))
        f.create_dataset("c", data=np.array([1 + 1j], dtype="c8"))


# ------------------------------------------------------------------ hostile names / metadata
def st_xss(d):
    import numpy as np
    from safetensors.numpy import save_file
    save_file({XSS: np.ones(2, dtype=np.float32), "fc.weight": np.ones((2, 2), dtype=np.float32)},
              str(d / "xss.safetensors"), metadata={"format": XSS, XSS: "x"})


def pt_xss(d):
    import torch
    torch.save({XSS: torch.ones(2), "weight": torch.ones(2, 2), "epoch": XSS}, d / "xss.pt")


def npz_xss(d):
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, np.ones(2, dtype=np.float32))
    craft.write_zip(d / "xss.npz", [craft.RawMember(XSS + ".npy", buf.getvalue())], align=0)


def h5_xss(d):
    import h5py
    with h5py.File(d / "xss.h5", "w") as f:
        f.create_dataset(XSS, data=[1.0, 2.0])
        f.attrs["note"] = XSS


def keras_json_xss(d):
    import json
    cfg = json.loads((FIXTURES / "k2_model.json").read_text())
    layers = cfg["config"]["layers"]
    layers[-1]["config"]["name"] = XSS
    layers[-1]["name"] = XSS
    cfg["config"]["name"] = XSS
    (d / "xss.json").write_text(json.dumps(cfg))


# ------------------------------------------------------------------ unusual real files
def torchscript_real(d):
    import torch
    m = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))
    torch.jit.save(m, str(d / "scripted.pt"))


def pickled_linear(d):
    import torch
    torch.save(torch.nn.Linear(3, 2), d / "model.pt")


def _broken() -> list[Case]:
    out = [
        Case("empty_file_pth", "broken", "model.pth", raw("model.pth", b""), Refuse("CorruptFileError", r"empty")),
        Case("empty_file_h5", "broken", "model.h5", raw("model.h5", b""), Refuse("CorruptFileError", r"empty")),
        Case("git_lfs_pointer_safetensors", "broken", "model.safetensors", raw("model.safetensors", LFS),
             Refuse("UnknownFormatError", r"LFS")),
        Case("git_lfs_pointer_h5", "broken", "model.h5", raw("model.h5", LFS), Refuse("UnknownFormatError", r"LFS")),
        Case("html_page_as_pth", "broken", "model.pth", raw("model.pth", HTML), Refuse("UnknownFormatError", r"HTML")),
        Case("html_page_as_keras", "broken", "model.keras", raw("model.keras", HTML),
             Refuse("UnknownFormatError", r"HTML")),
        Case("png_as_pt", "broken", "model.pt", raw("model.pt", PNG), Refuse(ERR, r"not|recogni")),
        Case("random_bytes_bin", "broken", "model.bin", raw("model.bin", bytes(range(256)) * 8),
             Refuse(ERR, r"not|recogni")),
        Case("text_as_npy", "broken", "weights.npy", raw("weights.npy", b"hello world\n"),
             Refuse(ERR, r"npy|numpy|not")),
        Case("json_not_keras", "broken", "model.json", raw("model.json", b'{"a": [1, 2, 3]}'),
             Refuse(ERR, r"keras|not")),
        Case("zip_of_text_as_pt", "broken", "model.pt", lambda d: craft.write_zip(
            d / "model.pt", [craft.RawMember("readme.txt", b"hello")]), Refuse(ERR, r"zip|not|recogni")),
        Case("npz_crc_mismatch", "broken", "weights.npz", lambda d: craft.write_zip(
            d / "weights.npz", [craft.RawMember("w.npy", craft.npy_header("<f4", (4,)) + b"\1" * 16, crc=1234)],
            align=0), Either("a stored member is memory-mapped in place: its CRC is not recomputed")),
        Case("npz_crc_mismatch_deflated", "broken", "weights.npz", lambda d: craft.write_zip(
            d / "weights.npz", [craft.RawMember("w.npy", craft.npy_header("<f4", (4,)) + b"\1" * 16, method=8,
                                                crc=1234)], align=0),
             Either("listed from the header"), verbs={"stats": Refuse("CorruptFileError", r"crc|damaged|corrupt")}),
        Case("zip_duplicate_member_names", "broken", "model.pt", lambda d: craft.torch_zip(
            d / "model.pt", {"w": craft.rebuild(craft.Storage("0", "FloatStorage", 4, b"\0" * 16), 0, (4,), (1,))},
            members=[craft.RawMember("archive/data.pkl", b"\x80\x02}q\x00.")]),
             Refuse(("UnsafeCheckpointError", "CorruptFileError"), r"two members|duplicate|twice")),
        Case("zip_encrypted_flag", "broken", "weights.npz", lambda d: craft.write_zip(
            d / "weights.npz", [craft.RawMember("w.npy", craft.npy_header("<f4", (4,)) + b"\0" * 16, flags=1)],
            align=0), Refuse(ERR, r"encrypt")),
    ]
    for fmt in VALID:
        for frac in (0.02, 0.5):
            name = f"truncated_{fmt.replace('-', '_')}_{int(frac * 100)}pct"
            out.append(Case(name, "broken", VALID[fmt][0], truncated(fmt, frac),
                            Refuse(ERR, r"truncat|damaged|corrupt|complete|end of|past|not|short|cannot|could not"),
                            keras=fmt.startswith("keras")))
    return out


def st_bytes(header: bytes, data: bytes = b"\0" * 4):
    def make(d):
        import struct
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data)
    return make


def h5_userblock(d):
    import h5py
    with h5py.File(d / "ub.h5", "w", userblock_size=512) as f:
        f.create_dataset("w", data=[1.0, 2.0])


def npy_strings(d):
    import numpy as np
    np.save(d / "names.npy", np.array(["a", "bb"]))


def npy_structured(d):
    import numpy as np
    np.save(d / "rec.npy", np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8")]))


CASES: list[Case] = _broken() + [
    Case("st_header_leading_spaces", "broken", "model.safetensors",
         st_bytes(b'  {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'),
         Either("the spec says a header starts with '{'; the Rust reader accepts spaces")),
    Case("st_metadata_not_strings", "broken", "model.safetensors",
         st_bytes(b'{"__metadata__": {"a": 1}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'),
         Refuse("CorruptFileError", r"metadata")),
    Case("st_unknown_dtype", "broken", "model.safetensors",
         st_bytes(b'{"w": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}'),
         Refuse("CorruptFileError", r"dtype")),
    Case("npy_string_array", "nasty", "names.npy", npy_strings, Either("not numeric: set apart or refused")),
    Case("npy_structured_array", "nasty", "rec.npy", npy_structured, Either("not numeric: set apart or refused")),
    Case("h5_with_user_block", "misleading", "ub.h5", h5_userblock, Ok(format="hdf5", count=1)),
    Case("safetensors_named_pth", "misleading", "model.pth", renamed("safetensors", "model.pth"), Ok(format="safetensors", count=2)),
    Case("npz_named_h5", "misleading", "weights.h5", renamed("npz", "weights.h5"), Ok(format="numpy", count=2)),
    Case("h5_named_npy", "misleading", "weights.npy", renamed("hdf5", "weights.npy"), Ok(format="hdf5", count=2)),
    Case("torch_zip_named_safetensors", "misleading", "model.safetensors", renamed("torch", "model.safetensors"),
         Ok(format="torch", count=2)),
    Case("keras_zip_named_zip", "misleading", "model.zip", renamed("keras", "model.zip"), Ok(format="keras"), keras=True),
    Case("st_nasty_values", "nasty", "nasty.safetensors", st_nasty, Ok(count=11, flags=NASTY_FLAGS)),
    Case("pt_nasty_values_tied_views", "nasty", "nasty.pt", pt_nasty,
         Ok(count=12, flags=("nan", "inf", "empty", "single_value", "low_precision", "complex"))),
    Case("npz_nasty_big_endian_fortran", "nasty", "nasty.npz", npz_nasty,
         Ok(count=8, flags=("nan", "inf", "empty", "single_value", "complex", "low_precision"))),
    Case("npy_subnormal_values", "nasty", "tiny.npy", npy_subnormal, Ok(count=1)),
    Case("npy_big_endian_nan_inf", "nasty", "be.npy", npy_big_endian, Ok(count=1, flags=("nan", "inf"))),
    Case("h5_nasty_values", "nasty", "nasty.h5", h5_nasty,
         Ok(count=6, flags=("nan", "inf", "empty", "single_value", "low_precision", "complex"))),
    Case("torchscript_real_listed_not_run", "nasty", "scripted.pt", torchscript_real, Ok(count=2)),
    Case("pickled_nn_linear", "nasty", "model.pt", pickled_linear, Ok(count=2)),
    Case("st_hostile_names_metadata", "escape", "xss.safetensors", st_xss, Ok(count=2, html_probe=XSS)),
    Case("pt_hostile_names", "escape", "xss.pt", pt_xss, Ok(count=2, html_probe=XSS)),
    Case("npz_hostile_member_name", "escape", "xss.npz", npz_xss, Ok(count=1, html_probe=XSS)),
    Case("h5_hostile_dataset_name", "escape", "xss.h5", h5_xss, Ok(count=1, html_probe=XSS)),
    Case("keras_json_hostile_layer_name", "escape", "xss.json", keras_json_xss, Ok(html_probe=XSS),
         verbs={"build": Either()}, keras=True),
]

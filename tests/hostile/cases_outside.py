"""Files that point outside themselves: HDF5 external links, external raw storage and
virtual datasets (the CVE-2026-1669 class), shard paths that climb out of the folder,
zip members named to escape. A secret lives next to each file (a dataset of 31337.0
values and a canary string); it must never show up in any output. The ``fifo``
variants point at a named pipe instead: opening it would block, so a hang proves the
reader opened a file outside the one it was given."""
from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

from . import craft
from .catalog import Case, Either, Refuse
from .cases_code import FIXTURES

UNSAFE_EXT = Refuse("UnsafeCheckpointError", r"external|outside")
UNSAFE_VDS = Refuse("UnsafeCheckpointError", r"virtual|outside")
N = 12


def write_secrets(d: Path) -> None:
    import h5py
    import numpy as np
    with h5py.File(d / "secret.h5", "w") as f:
        f.create_dataset("secret", data=np.full(N, craft.SECRET_FLOAT, dtype="f4"))
        f["secret"].attrs["note"] = craft.SECRET
        f.attrs["note"] = craft.SECRET
    (d / "secret.bin").write_bytes(np.full(N, craft.SECRET_FLOAT, dtype="<f4").tobytes()
                                   + craft.SECRET.encode() * 4)
    os.mkfifo(d / "secret_fifo.h5")
    os.mkfifo(d / "secret_fifo.bin")


def _target(d: Path, kind: str, fifo: bool) -> str:
    ext = "h5" if kind in ("link", "vds") else "bin"
    return str(d / (f"secret_fifo.{ext}" if fifo else f"secret.{ext}"))


def put_outside(f, where: str, kind: str, target: str) -> None:
    """Replace (or create) dataset ``where`` of open h5py file ``f`` by a pointer outside."""
    import h5py
    if where in f:
        del f[where]
    if kind == "link":
        f[where] = h5py.ExternalLink(target, "/secret")
    elif kind == "external":
        f.create_dataset(where, shape=(N,), dtype="<f4", external=[(target, 0, 4 * N)])
    elif kind == "vds":
        layout = h5py.VirtualLayout(shape=(N,), dtype="f4")
        layout[:] = h5py.VirtualSource(target, "secret", shape=(N,))
        f.create_virtual_dataset(where, layout, fillvalue=0)
    else:
        raise ValueError(kind)


def plain_h5(kind: str, fifo: bool = False):
    def make(d):
        import h5py
        write_secrets(d)
        with h5py.File(d / "model.h5", "w") as f:
            f.create_dataset("layer1/weight", data=[[1.0, 2.0], [3.0, 4.0]])
            put_outside(f, "layer1/bias", kind, _target(d, kind, fifo))
    return make


def _first_weight(f) -> str:
    """Path of the first weight dataset named by a Keras legacy file's attributes."""
    root = f["model_weights"] if "model_weights" in f else f
    for layer in root.attrs["layer_names"]:
        layer = layer.decode() if isinstance(layer, bytes) else str(layer)
        names = root[layer].attrs.get("weight_names", [])
        if len(names):
            w = names[0].decode() if isinstance(names[0], bytes) else str(names[0])
            return root[layer].name + "/" + w
    raise KeyError("no weights")


def keras_h5(kind: str, fixture: str = "k2_model.h5", fifo: bool = False):
    def make(d):
        import h5py
        write_secrets(d)
        shutil.copy(FIXTURES / fixture, d / "model.h5")
        with h5py.File(d / "model.h5", "r+") as f:
            put_outside(f, _first_weight(f), kind, _target(d, kind, fifo))
    return make


def keras_zip(kind: str):
    def make(d):
        import h5py
        write_secrets(d)
        with zipfile.ZipFile(FIXTURES / "k3_model.keras") as z:
            (d / "w.h5").write_bytes(z.read("model.weights.h5"))
        with h5py.File(d / "w.h5", "r+") as f:
            found: list[str] = []
            f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and not found else None)
            put_outside(f, found[0], kind, _target(d, kind, False))
        craft.rewrite_zip(FIXTURES / "k3_model.keras", d / "model.keras",
                          {"model.weights.h5": (d / "w.h5").read_bytes()})
        (d / "w.h5").unlink()
    return make


def st_index(shard: str):
    def make(d):
        import numpy as np
        from safetensors.numpy import save_file
        save_file({"w": np.full(N, craft.SECRET_FLOAT, dtype=np.float32)}, str(d / "secret.safetensors"),
                  metadata={"note": craft.SECRET})
        (d / "sub").mkdir()
        save_file({"b": np.zeros(2, dtype=np.float32)}, str(d / "sub" / "model-1.safetensors"))
        target = str(d / "secret.safetensors") if shard == "abs" else "../secret.safetensors"
        (d / "sub" / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 4 * N + 8}, "weight_map": {"w": target, "b": "model-1.safetensors"}}))
    return make


SHARDED = Path(__file__).resolve().parent.parent / "fixtures" / "keras_sharded"


def keras_sharded(kind: str):
    """A real Keras 3 sharded save in sub/ whose index or shard points at ../secret.*."""
    def make(d):
        import h5py
        write_secrets(d)
        shutil.copytree(SHARDED, d / "sub", ignore=shutil.ignore_patterns("sharded.weights.h5", "*.npz", "*.json"))
        index = json.loads((SHARDED / "sharded.weights.json").read_text())
        shard = d / "sub" / "sharded_00000.weights.h5"
        if kind in ("dotdot", "abs"):
            index["weight_map"]["/layers/conv1d/vars"] = "../secret.h5" if kind == "dotdot" else str(d / "secret.h5")
        elif kind in ("symlink", "fifo"):
            shard.unlink()
            os.symlink("../secret.h5" if kind == "symlink" else "../secret_fifo.h5", shard)
        else:
            with h5py.File(shard, "r+") as f:
                put_outside(f, "layers/conv1d/vars/0", kind, _target(d, kind, False))
        (d / "sub" / "sharded.weights.json").write_text(json.dumps(index))
    return make


def keras_zip_slip(d):
    with zipfile.ZipFile(FIXTURES / "k3_model.keras") as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    craft.write_zip(d / "model.keras", [craft.RawMember(n, b) for n, b in members]
                    + [craft.RawMember("../../escaped.txt", b"escaped"),
                       craft.RawMember("/tmp/weightviz-escaped.txt", b"escaped")], align=0)


def npz_slip(d):
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, np.ones(3, dtype=np.float32))
    craft.write_zip(d / "weights.npz", [craft.RawMember("w.npy", buf.getvalue()),
                                        craft.RawMember("../../escaped.npy", buf.getvalue())], align=0)


def pt_slip(d):
    s = craft.Storage("0", "FloatStorage", 4, b"\0" * 16)
    craft.torch_zip(d / "model.pt", {"w": craft.rebuild(s, 0, (4,), (1,))},
                    members=[craft.RawMember("archive/../../escaped.txt", b"escaped")])


def _outside_cases() -> list[Case]:
    out = []
    for kind, exp in (("link", UNSAFE_EXT), ("external", UNSAFE_EXT), ("vds", UNSAFE_VDS)):
        out.append(Case(f"h5_plain_{kind}", "outside", "model.h5", plain_h5(kind), exp, secret=True))
        out.append(Case(f"h5_plain_{kind}_to_fifo", "outside", "model.h5", plain_h5(kind, True), exp, secret=True))
        out.append(Case(f"keras_h5_{kind}", "outside", "model.h5", keras_h5(kind), exp, secret=True, keras=True))
        out.append(Case(f"keras_weights_h5_{kind}", "outside", "model.h5", keras_h5(kind, "k2_weights.h5"),
                        exp, secret=True))
        out.append(Case(f"keras_zip_member_{kind}", "outside", "model.keras", keras_zip(kind), exp,
                        secret=True, keras=True))
        out.append(Case(f"keras_sharded_shard_{kind}", "outside", "sub/sharded.weights.json", keras_sharded(kind),
                        exp, secret=True))
    for kind, exp in (("dotdot", Refuse("UnsafeCheckpointError", r"outside")),
                      ("abs", Refuse("UnsafeCheckpointError", r"outside")),
                      ("symlink", Refuse("UnsafeCheckpointError", r"link out")),
                      ("fifo", Refuse("UnsafeCheckpointError", r"link out"))):
        out.append(Case(f"keras_sharded_index_{kind}", "outside", "sub/sharded.weights.json", keras_sharded(kind),
                        exp, secret=True))
    out.append(Case("keras_h5_external_to_fifo", "outside", "model.h5", keras_h5("external", fifo=True),
                    UNSAFE_EXT, secret=True, keras=True))
    return out


CASES: list[Case] = _outside_cases() + [
    Case("st_index_shard_dotdot", "outside", "sub/model.safetensors.index.json", st_index("dotdot"),
         Refuse("CorruptFileError", r"outside"), secret=True),
    Case("st_index_shard_absolute", "outside", "sub/model.safetensors.index.json", st_index("abs"),
         Refuse("CorruptFileError", r"outside"), secret=True),
    Case("keras_zip_slip_members", "outside", "model.keras", keras_zip_slip,
         Refuse("UnsafeCheckpointError", r"unsafe path|\.\."), keras=True),
    Case("npz_zip_slip_member", "outside", "weights.npz", npz_slip, Either("never extracted")),
    Case("pt_zip_slip_member", "outside", "model.pt", pt_slip, Either("never extracted")),
]

"""Files that would crash, hang or exhaust memory: declared sizes out of proportion to
the file, zip bombs, deep nesting, shared-reference DAGs, stride-0 and sparse tensors,
and the opposite edge (10,000 tiny tensors must load, not be refused)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from . import craft
from .catalog import Case, Either, Ok, Refuse

CORRUPT = "CorruptFileError"
ANYERR = ("CorruptFileError", "UnsafeCheckpointError", "UnknownFormatError")


def st_raw(header, data: bytes = b"", *, n: int | None = None):
    """A safetensors file with a given header (dict or raw bytes) and byte buffer."""
    def make(d: Path):
        h = header if isinstance(header, bytes) else json.dumps(header).encode()
        size = len(h) if n is None else n
        (d / "model.safetensors").write_bytes(struct.pack("<Q", size) + h + data)
    return make


def _t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


def st_10k(d):
    import numpy as np
    from safetensors.numpy import save_file
    save_file({f"layer{i:05d}.w": np.full((2,), i, dtype=np.float32) for i in range(10_000)},
              str(d / "many.safetensors"))


def st_deep_metadata(d):
    deep = b"[" * 100_000 + b"]" * 100_000
    h = b'{"__metadata__": {"x": ' + deep + b'}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 4)


# ------------------------------------------------------------------ numpy
def npy_raw(header: bytes, data: bytes = b"", name="weights.npy"):
    def make(d):
        (d / name).write_bytes(header + data)
    return make


def npz_bomb(d):
    """A genuine 1 GiB .npy member deflated ~1000:1 (plus an honest small member)."""
    hdr = craft.npy_header("<f4", (2**28,))
    member = craft.zero_bomb(len(hdr) + 2**30, prefix=hdr)
    member.name = b"w.npy"
    small = craft.RawMember("b.npy", craft.npy_header("<f4", (2,)) + b"\0" * 8)
    craft.write_zip(d / "weights.npz", [small, member], align=0)


def npz_declared(d):
    """A member whose directory entry claims 4 GB from 100 bytes (a lying size)."""
    data = craft.npy_header("<f4", (4,)) + b"\0" * 16
    m = craft.RawMember("w.npy", data, method=8, size=0xFFFFFF00)
    craft.write_zip(d / "weights.npz", [m], align=0)


def npz_10k(d):
    import numpy as np
    np.savez(d / "many.npz", **{f"a{i:05d}": np.full(2, i, dtype=np.float32) for i in range(10_000)})


# ------------------------------------------------------------------ zip members in .keras
def keras_bomb(d):
    from .cases_code import FIXTURES
    import zipfile
    with zipfile.ZipFile(FIXTURES / "k3_model.keras") as z:
        cfg, meta = z.read("config.json"), z.read("metadata.json")
    bomb = craft.zero_bomb(2**30, prefix=b"\x89HDF\r\n\x1a\n" + b"\0" * (2**24 - 8))
    bomb.name = b"model.weights.h5"
    craft.write_zip(d / "model.keras", [craft.RawMember("metadata.json", meta),
                                        craft.RawMember("config.json", cfg), bomb], align=0)


# ------------------------------------------------------------------ HDF5
def h5_huge(d):
    import h5py
    with h5py.File(d / "huge.h5", "w") as f:
        f.create_dataset("w", shape=(10**7, 10**7), dtype="f4", chunks=(1, 1024))
        f.create_dataset("b", data=[1.0, 2.0])


def h5_10k(d):
    import h5py
    import numpy as np
    with h5py.File(d / "many.h5", "w") as f:
        for i in range(10_000):
            f.create_dataset(f"g{i // 100:03d}/w{i:05d}", data=np.full(2, i, dtype=np.float32))


def h5_link_cycle(d):
    import h5py
    with h5py.File(d / "cycle.h5", "w") as f:
        g = f.create_group("a/b")
        g.create_dataset("w", data=[1.0, 2.0])
        g["up"] = f["a"]                              # hard-link cycle a/b/up -> a
        g["soft"] = h5py.SoftLink("/a")               # soft-link cycle


def h5_vlen_attr(keras: bool):
    """A variable-length string attribute whose datatype message is damaged (one bit) so that it
    reads as a variable-length *sequence*: libhdf5 segfaults converting it (found by fuzzing)."""
    def make(d):
        import h5py
        import numpy as np
        p = d / "model.h5"
        with h5py.File(p, "w") as f:
            vstr = h5py.string_dtype("ascii")
            if keras:
                f.attrs["layer_names"] = np.array([b"dense"])
                g = f.create_group("dense")
                g.attrs.create("weight_names", data=["dense/kernel:0", "dense/bias:0"], dtype=vstr)
                g.create_dataset("dense/kernel:0", data=np.ones((2, 2), "f4"))
                g.create_dataset("dense/bias:0", data=np.ones(2, "f4"))
            else:
                f.create_dataset("w", data=np.ones((2, 2), "f4"))
                f.attrs.create("weight_names", data=["a", "b"], dtype=vstr)
                f["w"].attrs.create("weight_names", data=["a", "b"], dtype=vstr)
        b = bytearray(p.read_bytes())
        i = 0
        while (i := b.find(b"weight_names\x00", i)) >= 0:
            j = b.index(b"\x19", i)        # datatype message: version 1, class 9 (variable-length)
            b[j + 1] ^= 4                    # type field 1 (string) -> 5 (not a valid kind)
            i = j
        p.write_bytes(bytes(b))
    return make


def h5_heap_size(d):
    """A Keras weights file whose vlen strings live in a global heap (GCOL) where one object's
    size field is damaged (one bit, found by fuzzing): libhdf5 loops forever reading them."""
    import struct

    import h5py
    import numpy as np
    p = d / "model.h5"
    with h5py.File(p, "w") as f:
        vstr = h5py.string_dtype("ascii")
        f.attrs.create("backend", data="tensorflow", dtype=vstr)
        f.attrs["layer_names"] = np.array([b"dense"])
        g = f.create_group("dense")
        g.attrs.create("weight_names", data=["dense/kernel:0", "dense/bias:0"], dtype=vstr)
        g.create_dataset("dense/kernel:0", data=np.ones((2, 2), "f4"))
    b = bytearray(p.read_bytes())
    o = b.index(b"GCOL") + 16                   # first heap object: index, refcount, reserved, size
    size = struct.unpack("<Q", b[o + 8:o + 16])[0]
    o += 16 + (size + 7) // 8 * 8               # the second object
    b[o + 9] ^= 4                               # its size grows by 1,024 bytes
    p.write_bytes(bytes(b))


def h5_vlen_fill_heap(keras: bool):
    """A variable-length string dataset whose fill value lives in a damaged global heap:
    libhdf5 loops forever as soon as the dataset's creation property list is asked for
    (the readers look at the dtype first and never ask)."""
    def make(d):
        import struct

        import h5py
        import numpy as np
        p = d / "model.h5"
        with h5py.File(p, "w") as f:
            g = f.create_group("dense") if keras else f
            if keras:
                f.attrs["layer_names"] = np.array([b"dense"])
                g.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/s:0"])
            g.create_dataset("dense/kernel:0", data=np.ones((2, 2), "f4"))
            g.create_dataset("dense/s:0", shape=(3,), dtype=h5py.string_dtype("ascii"),
                             fillvalue=b"a fill value long enough")
            g.create_dataset("t", data=["aaa", "bbb"], dtype=h5py.string_dtype("ascii"))
        b = bytearray(p.read_bytes())
        o = b.index(b"GCOL") + 16                   # the first heap object; then the second
        o += 16 + (struct.unpack("<Q", b[o + 8:o + 16])[0] + 7) // 8 * 8
        b[o + 9] ^= 4
        p.write_bytes(bytes(b))
    return make


def pt_pkl_bomb(d):
    """data.pkl itself deflated ~1000:1 to 1 GiB (inflated before any pickle opcode is read)."""
    bomb = craft.zero_bomb(2**30, prefix=b"")
    bomb.name = b"archive/data.pkl"
    craft.write_zip(d / "model.pt", [bomb, craft.RawMember("archive/version", b"3\n")], align=0)


# ------------------------------------------------------------------ torch
def pt_storage_huge(d):
    s = craft.Storage("0", "FloatStorage", 10**12, b"\0" * 16)
    craft.torch_zip(d / "model.pt", {"w": craft.rebuild(s, 0, (10**6, 10**6), (10**6, 1))})


def pt_view_past_storage(d):
    s = craft.Storage("0", "FloatStorage", 4, b"\0" * 16)
    craft.torch_zip(d / "model.pt", {"w": craft.rebuild(s, 2, (10**6, 10**6), (10**6, 1))})


def pt_stride0(d):
    import torch
    torch.save({"weight": torch.ones(1).expand(10**6, 10**6), "bias": torch.zeros(3)}, d / "model.pt")


def pt_dag(d):
    import torch
    a: list = [torch.zeros(2)]
    for _ in range(40):
        a = [a, a]
    torch.save({"weight": torch.ones(2, 2), "dag": a}, d / "model.pt")


def pt_deep(kind):
    def make(d):
        import pickle
        import torch
        torch.save({"weight": torch.ones(2, 2), "meta": "PLACEHOLDER"}, d / "tmp.pt")
        import zipfile
        with zipfile.ZipFile(d / "tmp.pt") as z:
            pkl = z.read("tmp/data.pkl")
        deep = craft.nested_dict_pickle(100_000) if kind == "dict" else craft.nested_list_pickle(100_000)
        body = deep[2:-1]                                  # strip PROTO and STOP
        ph = pickle.dumps("PLACEHOLDER", protocol=2)[2:-2]  # BINUNICODE + memo op
        i = pkl.index(ph)
        j = i + len(ph)
        new = pkl[:i] + body + pkl[j:]
        craft.rewrite_zip(d / "tmp.pt", d / "model.pt", {"tmp/data.pkl": new})
        (d / "tmp.pt").unlink()
    return make


def pt_sparse(kind):
    def make(d):
        import torch
        if kind == "coo":
            w = torch.sparse_coo_tensor(torch.tensor([[0, 10**6], [0, 1]]), torch.ones(2), (4, 4),
                                        check_invariants=False)
        else:
            import warnings
            with warnings.catch_warnings():      # "Sparse CSR tensor support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                w = torch.sparse_csr_tensor(torch.tensor([0, 5, 1, 2, 9]), torch.tensor([0, 1, 2, 3, 7]),
                                            torch.ones(5), (4, 4), check_invariants=False)
        torch.save({"weight": w, "bias": torch.zeros(4)}, d / "model.pt")
    return make


def pt_10k(d):
    import torch
    torch.save({f"layer{i:05d}.w": torch.full((2,), float(i)) for i in range(10_000)}, d / "many.pt")


def json_deep(d):
    (d / "model.json").write_text('{"class_name": "Sequential", "config": ' + "[" * 100_000 + "]" * 100_000 + "}")


def json_deep_ok(d):
    """900 levels (under Python's recursion limit) inside an initializer config."""
    from .cases_code import _k3_config
    cfg = _k3_config()
    deep: dict = {}
    cur = deep
    for _ in range(900):
        cur["x"] = {}
        cur = cur["x"]
    cfg["config"]["layers"][1]["config"]["kernel_initializer"]["config"] = deep
    (d / "model.json").write_text(json.dumps(cfg))


CASES: list[Case] = [
    Case("st_header_len_2e63", "size", "model.safetensors", st_raw(b"{}", n=2**63), Refuse(ANYERR, r"header|safetensors")),
    Case("st_header_len_past_eof", "size", "model.safetensors", st_raw(b"{}", n=10**6), Refuse(ANYERR, r"safetensors")),
    Case("st_1e12_elements", "size", "model.safetensors",
         st_raw({"w": _t("F32", [10**6, 10**6], 0, 4 * 10**12)}, b"\0" * 16), Refuse(CORRUPT, r"past the end|bytes")),
    Case("st_shape_overflow", "size", "model.safetensors",
         st_raw({"w": _t("F32", [2**62, 2**62, 2**62], 0, 16)}, b"\0" * 16), Refuse(CORRUPT, r"declares|bytes")),
    Case("st_overlapping_offsets", "size", "model.safetensors",
         st_raw({"a": _t("F32", [4], 0, 16), "b": _t("F32", [4], 0, 16)}, b"\0" * 16), Refuse(CORRUPT, r"overlap")),
    Case("st_offsets_outside_file", "size", "model.safetensors",
         st_raw({"a": _t("F32", [4], 10**9, 10**9 + 16)}, b"\0" * 16), Refuse(CORRUPT, r"past the end|gap")),
    Case("st_duplicate_names", "size", "model.safetensors",
         st_raw(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4),
         Refuse(CORRUPT, r"duplicate")),
    Case("st_metadata_nested_100k", "size", "model.safetensors", st_deep_metadata, Refuse(CORRUPT, r"json|metadata|deep")),
    Case("st_10k_tensors", "size", "many.safetensors", st_10k, Ok(count=10_000), heavy=True),
    Case("npy_shape_1e15", "size", "weights.npy", npy_raw(craft.npy_header("<f4", (10**15,)), b"\0" * 64),
         Refuse(CORRUPT, r"declares|bytes|truncat|shorter|size")),
    Case("npy_header_len_4gb", "size", "weights.npy",
         npy_raw(b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{'descr': '<f4'"),
         Refuse(CORRUPT, r"header")),
    Case("npz_deflate_bomb_1gib", "size", "weights.npz", npz_bomb, Refuse(CORRUPT, r"bomb|ratio|inflate"), heavy=True),
    Case("npz_member_declares_4gb", "size", "weights.npz", npz_declared, Refuse(CORRUPT, r"bomb|ratio|inflate|declare")),
    Case("npz_10k_members", "size", "many.npz", npz_10k, Ok(count=10_000), heavy=True),
    Case("keras_weights_deflate_bomb_1gib", "size", "model.keras", keras_bomb,
         Refuse(CORRUPT, r"bomb|ratio|inflate|declares"), keras=True, heavy=True),
    Case("h5_dataset_1e14_elements", "size", "huge.h5", h5_huge, Refuse(CORRUPT, r"declares|stores")),
    Case("keras_h5_attribute_vlen_type_damaged", "size", "model.h5", h5_vlen_attr(True),
         Refuse(CORRUPT, r"attribute|weight_names"), heavy=True),
    Case("h5_attribute_vlen_type_damaged", "size", "model.h5", h5_vlen_attr(False),
         Either("attributes skipped or refused"), heavy=True),
    Case("keras_h5_global_heap_object_size_damaged", "size", "model.h5", h5_heap_size,
         Refuse(CORRUPT, r"heap|attribute|damaged|read"), timeout=12),
    Case("keras_h5_vlen_fill_value_heap_damaged", "size", "model.h5", h5_vlen_fill_heap(True),
         Refuse(CORRUPT, r"object values"), timeout=12),
    Case("h5_vlen_fill_value_heap_damaged", "size", "model.h5", h5_vlen_fill_heap(False),
         Either("the string dataset skipped or refused, never read"), timeout=12),
    Case("pt_data_pkl_deflate_bomb_1gib", "size", "model.pt", pt_pkl_bomb,
         Refuse(ANYERR, r"bomb|ratio|inflate"), heavy=True),
    Case("h5_10k_datasets", "size", "many.h5", h5_10k, Ok(count=10_000), heavy=True),
    Case("h5_hard_and_soft_link_cycles", "size", "cycle.h5", h5_link_cycle, Either("cycles walked once or refused")),
    Case("pt_storage_declares_1e12", "size", "model.pt", pt_storage_huge, Refuse(CORRUPT, r"storage|bytes")),
    Case("pt_view_past_storage", "size", "model.pt", pt_view_past_storage, Refuse(CORRUPT, r"storage|past")),
    Case("pt_stride0_1e12_view", "size", "model.pt", pt_stride0, Either("listed apart or refused, never expanded")),
    Case("pt_shared_reference_dag_2e40", "size", "model.pt", pt_dag, Either("walked once per object")),
    Case("pt_dict_nested_100k", "size", "model.pt", pt_deep("dict"), Either("bounded walk")),
    Case("pt_list_nested_100k", "size", "model.pt", pt_deep("list"), Either("bounded walk")),
    Case("pt_sparse_coo_index_out_of_range", "size", "model.pt", pt_sparse("coo"), Either("validated or refused")),
    Case("pt_sparse_csr_bad_crow_indices", "size", "model.pt", pt_sparse("csr"), Either("validated or refused")),
    Case("pt_10k_tensors", "size", "many.pt", pt_10k, Ok(count=10_000), heavy=True),
    Case("keras_json_nested_100k", "size", "model.json", json_deep, Refuse(CORRUPT, r"json|deep"), keras=True),
    Case("keras_json_nested_900_in_initializer", "size", "model.json", json_deep_ok, Ok(),
         verbs={"build": Either("builder walks are bounded")}, keras=True),
]

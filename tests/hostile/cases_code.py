"""Files that would run code: pickle payloads in every container torch/NumPy use, and Keras
configs with Lambda bytecode or module/class_name gadgets at any depth. Each payload's
only effect would be to create ``<case dir>/PWNED``."""
from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path

from . import craft
from .catalog import Case, Either, Ok, Refuse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "keras_io"
DEEPSPEED = Path(__file__).resolve().parent.parent / "fixtures" / "deepspeed"
DCP_DEMO = Path(__file__).resolve().parents[2] / "weightviz" / "demo" / "data" / "cnn_dcp_step1"
UNSAFE = Refuse("UnsafeCheckpointError", r"exec|system|getattr|__import__|call|run code")
PICKLE = Refuse(("UnknownFormatError", "UnsafeCheckpointError"), r"pickle|run code|exec")


def _m(d: Path) -> Path:
    return d / craft.MARKER


def _tensor():
    import torch
    return torch.arange(6, dtype=torch.float32).reshape(2, 3)


# ------------------------------------------------------------------ torch / pickle
def pt_zip(payload):
    def make(d):
        import torch
        torch.save({"weight": _tensor(), "evil": payload(_m(d))}, d / "model.pt")
    return make


def pt_zip_nested(d):
    import torch
    torch.save({"epoch": 3, "state_dict": {"weight": _tensor(), "cfg": {"a": [craft.exec_payload(_m(d))]}}},
               d / "ckpt.pth")


def pt_zip_raw(pkl):
    def make(d):
        craft.torch_zip(d / "model.pt", data_pkl=pkl(d))
    return make


def pt_legacy(d):
    import torch
    torch.save({"weight": _tensor(), "evil": craft.exec_payload(_m(d))}, d / "legacy.pt",
               _use_new_zipfile_serialization=False)


def pt_legacy_magic_then_payload(d):
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    (d / "legacy.pt").write_bytes(magic + pickle.dumps(craft.exec_payload(_m(d)), protocol=2))


def plain_pickle(proto):
    def make(d):
        (d / "weights.pth").write_bytes(pickle.dumps({"w": craft.exec_payload(_m(d))}, protocol=proto))
    return make


def pickled_model_evilmod(d):
    """torch.save(model) of a class from a module whose import alone writes the marker."""
    (d / "evilmod.py").write_text(
        f"{craft.marker_code(_m(d))}\nimport torch\nclass Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(2, 2)\n")
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
    Net.__module__, Net.__qualname__ = "evilmod", "Net"
    import sys
    import types
    fake = types.ModuleType("evilmod")
    fake.Net = Net
    sys.modules["evilmod"] = fake
    try:
        torch.save(Net(), d / "model.pt")
    finally:
        del sys.modules["evilmod"]


def torchscript_like(d):
    craft.torch_zip(d / "scripted.pt", data_pkl=pickle.dumps(craft.exec_payload(_m(d)), protocol=2),
                    extra={"constants.pkl": pickle.dumps((), protocol=2),
                           "code/__torch__/evil.py": craft.marker_code(_m(d)).encode()})


def npy_object(d):
    import numpy as np
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = np.ones(2), craft.exec_payload(_m(d))
    np.save(d / "weights.npy", arr, allow_pickle=True)


def npy_header_eval(d):
    code = f"__import__('os').system('touch {_m(d)}')"
    hdr = craft.npy_raw_header("{'descr': '<f4', 'fortran_order': False, 'shape': (%s,), }" % code)
    (d / "weights.npy").write_bytes(hdr + b"\0" * 16)


def npz_member(d):
    import numpy as np
    arr = np.empty(1, dtype=object)
    arr[0] = craft.exec_payload(_m(d))
    np.savez(d / "weights.npz", w=np.ones(3, dtype=np.float32), evil=arr)


# ------------------------------------------------------------------ training-checkpoint folders
def dcp_metadata_payload(d):
    """A real DCP folder (the demo's) whose ``.metadata``, otherwise intact, rebuilds its
    ``storage_meta`` by calling os.system: torch's DCP loader would run it."""
    shutil.copytree(DCP_DEMO, d / "ckpt")
    md = pickle.loads((d / "ckpt" / ".metadata").read_bytes())     # our own: torch's classes
    md.storage_meta = craft.system_payload(_m(d))
    (d / "ckpt" / ".metadata").write_bytes(pickle.dumps(md, protocol=2))


def deepspeed_model_states_payload(d):
    """A DeepSpeed ZeRO-1 folder written by DeepSpeed (tests/fixtures/deepspeed) whose
    ``mp_rank_00_model_states.pt`` pickles an os.system call as its ``lr_scheduler``."""
    shutil.copytree(DEEPSPEED / "zero1" / "checkpoint", d / "ckpt")
    craft.resave_torch(d / "ckpt" / "global_step1" / "mp_rank_00_model_states.pt",
                       lambda sd: sd.__setitem__("lr_scheduler", craft.system_payload(_m(d))))


# ------------------------------------------------------------------ Keras configs
def _k2_config() -> dict:
    import h5py
    with h5py.File(FIXTURES / "k2_lambda.h5", "r") as f:
        return json.loads(f.attrs["model_config"])


def _k3_config() -> dict:
    import zipfile
    with zipfile.ZipFile(FIXTURES / "k3_lambda.keras") as z:
        return json.loads(z.read("config.json"))


def _layer(cfg: dict, name: str) -> tuple[list, int]:
    layers = cfg["config"]["layers"]
    for i, e in enumerate(layers):
        if e.get("name") == name or e.get("config", {}).get("name") == name:
            return layers, i
    raise KeyError(name)


def _lambda_obj(k3: bool, b64: str, name: str) -> dict:
    if k3:
        fn = {"class_name": "__lambda__", "config": {"code": b64, "defaults": None, "closure": None}}
        return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                "config": {"name": name, "trainable": True, "function": fn, "arguments": {}}}
    return {"class_name": "Lambda", "config": {"name": name, "trainable": True, "function": [b64, None, None],
                                               "function_type": "lambda", "module": "__main__",
                                               "output_shape": None, "output_shape_type": "raw",
                                               "output_shape_module": None, "arguments": {}}}


def _inbound(src: str, k3: bool) -> list:
    if k3:
        return [{"args": [{"class_name": "__keras_tensor__",
                           "config": {"shape": [None, 3], "dtype": "float32", "keras_history": [src, 0, 0]}}],
                 "kwargs": {}}]
    return [[[src, 0, 0, {}]]]


def mutate(cfg: dict, kind: str, marker: Path, k3: bool) -> dict:
    cfg = copy.deepcopy(cfg)
    b64 = craft.lambda_code_b64(marker)
    layers, i = _layer(cfg, "double")
    old = layers[i]
    if kind == "lambda_top":                   # the fixture's own Lambda, with a payload
        layers[i] = dict(old, **_lambda_obj(k3, b64, "double"))
    elif kind == "lambda_wrappers":            # Functional > TimeDistributed > Bidirectional > Lambda
        inner = _lambda_obj(k3, b64, "deep_lambda")
        bi = {"class_name": "Bidirectional", "config": {"name": "bi", "merge_mode": "concat", "layer": inner}}
        td = {"class_name": "TimeDistributed", "config": {"name": "td", "layer": bi}, "name": "td",
              "inbound_nodes": _inbound("inner_in", k3)}
        first = {"class_name": "InputLayer", "name": "inner_in", "inbound_nodes": [],
                 "config": {"name": "inner_in", "dtype": "float32",
                            ("batch_shape" if k3 else "batch_input_shape"): [None, 3]}}
        layers[i] = dict(old, class_name="Functional", config={
            "name": "double", "layers": [first, td],
            "input_layers": [["inner_in", 0, 0]], "output_layers": [["td", 0, 0]]})
    elif kind == "lambda_activation":          # modelscan bypass: a __lambda__ as an activation
        layers[i] = dict(old, class_name="Activation",
                         config={"name": "double", "activation": {
                             "class_name": "__lambda__",
                             "config": {"code": b64, "defaults": None, "closure": None}}})
        layers[i].pop("module", None)
    elif kind == "os_system":                  # CVE-2025-1550: module/class_name to anything
        layers[i] = dict(old, module="os", class_name="system", registered_name="system",
                         config={"name": "double", "command": f"touch '{marker}'"})
        _, j = _layer(cfg, "d2")
        cfg["config"]["layers"][j]["config"]["activation"] = {
            "module": "builtins", "class_name": "exec", "registered_name": "exec",
            "config": {"source": craft.marker_code(marker)}}
    elif kind == "evilmod":                    # a module next to the file whose import runs code
        layers[i] = dict(old, module="evilmod", class_name="Evil", registered_name="Evil",
                         config={"name": "double"})
    else:
        raise ValueError(kind)
    return cfg


def _evilmod(d: Path) -> None:
    (d / "evilmod.py").write_text(f"{craft.marker_code(_m(d))}\nclass Evil:\n    pass\n")


def keras_h5(kind):
    def make(d):
        import h5py
        shutil.copy(FIXTURES / "k2_lambda.h5", d / "model.h5")
        with h5py.File(d / "model.h5", "r+") as f:
            f.attrs["model_config"] = json.dumps(mutate(_k2_config(), kind, _m(d), k3=False))
        if kind == "evilmod":
            _evilmod(d)
    return make


def keras_zip(kind):
    def make(d):
        cfg = json.dumps(mutate(_k3_config(), kind, _m(d), k3=True)).encode()
        craft.rewrite_zip(FIXTURES / "k3_lambda.keras", d / "model.keras", {"config.json": cfg})
        if kind == "evilmod":
            _evilmod(d)
    return make


def keras_json(kind):
    def make(d):
        cfg = mutate(_k3_config(), kind, _m(d), k3=True)
        cfg.setdefault("keras_version", "3.15.1")
        (d / "model.json").write_text(json.dumps(cfg))
        if kind == "evilmod":
            _evilmod(d)
    return make


LAMBDA_BUILD = Refuse("UnsafeCheckpointError", r"lambda")
GADGET_BUILD = {"os_system": Refuse(("UnsafeCheckpointError", "UnsupportedLayerError"), r"system|os"),
                "evilmod": Refuse(("UnsafeCheckpointError", "UnsupportedLayerError"), r"evil")}


def _keras_cases() -> list[Case]:
    out = []
    for kind in ("lambda_top", "lambda_wrappers", "lambda_activation", "os_system", "evilmod"):
        lam = kind.startswith("lambda")
        build = LAMBDA_BUILD if lam else GADGET_BUILD[kind]
        for cont, fname, maker in (("h5", "model.h5", keras_h5), ("keras", "model.keras", keras_zip),
                                   ("json", "model.json", keras_json)):
            out.append(Case(f"keras_{cont}_{kind}", "payload", fname, maker(kind), Ok(lambdas=lam),
                            verbs={"build": build}, keras=True, syspath=kind == "evilmod"))
    return out


CASES: list[Case] = [
    Case("pt_zip_reduce_exec", "payload", "model.pt", pt_zip(craft.exec_payload), UNSAFE),
    Case("pt_zip_reduce_os_system", "payload", "model.pt", pt_zip(craft.system_payload), UNSAFE),
    Case("pt_zip_getattr_chain", "payload", "model.pt", pt_zip(craft.getattr_chain_payload), UNSAFE),
    Case("pt_zip_payload_nested_in_wrapper", "payload", "ckpt.pth", pt_zip_nested, UNSAFE),
    Case("pt_zip_inst_opcode", "payload", "model.pt", pt_zip_raw(lambda d: craft.inst_pickle(_m(d))), UNSAFE),
    Case("pt_zip_stack_global_proto4", "payload", "model.pt",
         pt_zip_raw(lambda d: pickle.dumps(craft.exec_payload(_m(d)), protocol=4)), UNSAFE),
    Case("pt_zip_stacked_pickles", "payload", "model.pt",
         pt_zip_raw(lambda d: craft.stacked_pickles(_m(d))), Either("second pickle is never read")),
    Case("pt_legacy_reduce", "payload", "legacy.pt", pt_legacy, UNSAFE),
    Case("pt_legacy_magic_then_payload", "payload", "legacy.pt", pt_legacy_magic_then_payload, UNSAFE),
    Case("pickle_proto2_named_pth", "payload", "weights.pth", plain_pickle(2), PICKLE),
    Case("pickle_proto5_named_pth", "payload", "weights.pth", plain_pickle(5), PICKLE),
    Case("pt_pickled_model_importable_evilmod", "payload", "model.pt", pickled_model_evilmod,
         Either("listed by recording, or refused naming evilmod.Net"), syspath=True),
    Case("torchscript_like_zip_payload", "payload", "scripted.pt", torchscript_like, UNSAFE),
    Case("npy_object_array_reduce", "payload", "weights.npy", npy_object,
         Refuse("UnsafeCheckpointError", r"exec|pickle|object")),
    Case("npy_header_python_expression", "payload", "weights.npy", npy_header_eval,
         Refuse("CorruptFileError", r"header")),
    Case("npz_member_object_reduce", "payload", "weights.npz", npz_member,
         Refuse("UnsafeCheckpointError", r"exec|pickle|object")),
    Case("dcp_folder_metadata_os_system", "payload", "ckpt", dcp_metadata_payload,
         Refuse("UnsafeCheckpointError", r"system")),
    Case("deepspeed_folder_model_states_reduce", "payload", "ckpt", deepspeed_model_states_payload,
         Refuse("UnsafeCheckpointError", r"system")),
] + _keras_cases()

"""Shared fixtures: one small torch model written in every format weightviz can write.

``model_files`` (session-scoped) maps a format label to
``(path, expected)`` where ``expected`` is the ``{name: torch.Tensor}`` the reader
must list, in the writer's order. NumPy and HDF5 have no bfloat16/float8, so their
``expected`` leaves those two buffers out.
"""
from __future__ import annotations

import json
import os
import warnings

import pytest

from _model_formats import FORMATS  # noqa: E402,F401


import torch  # noqa: E402
from torch import nn  # noqa: E402


from _model_formats import Tiny  # noqa: E402


def make_model():
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.num_batches_tracked.fill_(7)
    return model


def write_all(folder, model) -> dict:
    """Write ``model`` in every format; returns {label: (path, expected state dict)}."""
    import h5py
    import numpy as np
    from safetensors.torch import save_file

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plain = {k: v for k, v in sd.items() if v.dtype not in (torch.bfloat16, torch.float8_e4m3fn)}
    arrays = {k: v.numpy() for k, v in plain.items()}
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    out = {}

    torch.save(sd, p("model.pt"))
    out["pt"] = (p("model.pt"), sd)
    torch.save(sd, p("legacy.pt"), _use_new_zipfile_serialization=False)
    out["pt_legacy"] = (p("legacy.pt"), sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), p("scripted.pt"))
    out["torchscript"] = (p("scripted.pt"), sd)
    torch.save(model, p("whole.pth"))
    out["whole_model"] = (p("whole.pth"), sd)

    save_file(sd, p("model.safetensors"), metadata={"format": "pt"})
    out["safetensors"] = (p("model.safetensors"), sd)
    names = list(sd)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, p(shard))
        weight_map.update({k: shard for k in keys})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    with open(p("model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    out["sharded"] = (p("model.safetensors.index.json"), sd)

    np.save(p("model.npy"), np.array(arrays, dtype=object), allow_pickle=True)   # 0-d object: a dict
    out["npy"] = (p("model.npy"), plain)
    np.savez(p("model.npz"), **arrays)
    out["npz"] = (p("model.npz"), plain)
    np.savez_compressed(p("model_c.npz"), **arrays)
    out["npz_compressed"] = (p("model_c.npz"), plain)
    with h5py.File(p("model.h5"), "w") as f:
        for k, v in arrays.items():
            f[k.replace(".", "/")] = v
    out["h5"] = (p("model.h5"), {k.replace(".", "/"): v for k, v in plain.items()})
    out["gguf"] = (p("model.gguf"), write_gguf(p("model.gguf"), sd))
    out["onnx"] = (p("model.onnx"), write_onnx(p("model.onnx"), sd))
    return out


def write_onnx(path, sd) -> dict:
    """``sd`` as the initializers (raw_data) of an onnx.helper graph; every dtype has an ONNX twin."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper
    codes = {torch.float32: T.FLOAT, torch.int64: T.INT64, torch.bfloat16: T.BFLOAT16,
             torch.float8_e4m3fn: T.FLOAT8E4M3FN}
    inits = [helper.make_tensor(k, codes[v.dtype], tuple(v.shape),
                                v.contiguous().view(-1).view(torch.uint8).numpy().tobytes(), raw=True)
             for k, v in sd.items()]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 3, 8, 8])], inits)
    onnx.save(helper.make_model(graph, producer_name="weightviz-tests"), path)
    return sd


def write_gguf(path, sd) -> dict:
    """``sd`` through the gguf package's GGUFWriter (no float8 type in GGUF: left out)."""
    import gguf
    w = gguf.GGUFWriter(path, "tiny")
    kept = {k: v for k, v in sd.items() if v.dtype != torch.float8_e4m3fn}
    for k, v in kept.items():
        if v.dtype == torch.bfloat16:
            w.add_tensor(k, v.view(torch.int16).numpy().view("<u2"), raw_shape=tuple(v.shape),
                         raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(k, v.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return kept


@pytest.fixture(scope="session")
def tiny_model():
    return make_model()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory, tiny_model):
    return write_all(str(tmp_path_factory.mktemp("formats")), tiny_model)

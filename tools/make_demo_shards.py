"""Write weightviz/demo/data/cnn_sharded/: the demo CNN (cnn.safetensors) split into three
safetensors shards with a Hugging Face ``model.safetensors.index.json``, as
``save_pretrained(max_shard_size=...)`` lays them out. The notebook on remote checkpoints
serves this folder over HTTP; the tensors are the very bytes of cnn.safetensors.

    .venv/bin/python tools/make_demo_shards.py
"""
from __future__ import annotations

import json
import os
import sys

from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "weightviz", "demo", "data")
sys.path.insert(0, HERE)
from make_demo_data import update_manifest  # noqa: E402

GROUPS = (("conv1.", "bn1."), ("conv2.",), ("fc1.", "fc2."))


def main() -> None:
    tensors = load_file(os.path.join(DATA, "cnn.safetensors"))
    folder = os.path.join(DATA, "cnn_sharded")
    os.makedirs(folder, exist_ok=True)
    wmap, total = {}, 0
    for i, prefixes in enumerate(GROUPS, 1):
        name = f"model-{i:05d}-of-{len(GROUPS):05d}.safetensors"
        part = {k: v for k, v in sorted(tensors.items()) if k.startswith(prefixes)}
        save_file(part, os.path.join(folder, name), metadata={"format": "pt"})
        wmap.update({k: name for k in part})
        total += sum(v.nbytes for v in part.values())
    assert set(wmap) == set(tensors)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wmap.items()))}, f, indent=2)
        f.write("\n")
    update_manifest("sharded", {"files": ["cnn_sharded"], "source": "cnn.safetensors",
                                "index": "cnn_sharded/model.safetensors.index.json", "shards": len(GROUPS)})


if __name__ == "__main__":
    main()

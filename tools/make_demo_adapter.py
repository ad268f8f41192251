"""Write the demo LoRA adapters into weightviz/demo/data/ (the adapters notebook's material).

Run from the repository root, after tools/make_demo_data.py wrote cnn.pth:

    .venv/bin/python tools/make_demo_adapter.py      # or: tools/make_demo_data.py --only adapter

PEFT itself trains and saves everything (``pip install peft``; weightviz never imports it):

* ``cnn_lora/``       a LoRA (r=4, alpha=8) on the demo CNN's ``conv2``, ``fc1`` and ``fc2``,
  trained to read **upside-down** images (rows flipped: diag-down becomes diag-up), saved by
  ``PeftModel.save_pretrained`` (adapter_config.json + adapter_model.safetensors);
* ``cnn_lora_zero3/`` the same adapter as DeepSpeed ZeRO-3 saves it without gathering the
  parameters first: every tensor ``torch.Size([0])``;
* ``cnn_lora_r8/``    the same adapter with ``r`` edited to 8 in its config (the tensors hold rank 4);
* ``cnn_lora_merged_bf16.safetensors`` the base cast to bfloat16 and merged by PEFT's own
  ``merge_and_unload()``: what a user ships as "the fine-tuned model".

Seeded; the accuracies on upside-down test images before and after go to manifest.json.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from weightviz import demo  # noqa: E402

OUT = os.path.join(ROOT, "weightviz", "demo", "data")
TARGETS = ["conv2", "fc1", "fc2"]


def out(name):
    return os.path.join(OUT, name)


def upside_down(n, seed):
    x, y = demo.images(n=n, seed=seed)
    return x[:, ::-1].copy(), y


def save_adapter(model, folder):
    model.save_pretrained(folder)
    for extra in ("README.md",):                   # PEFT's model-card template: not weights
        if os.path.exists(os.path.join(folder, extra)):
            os.remove(os.path.join(folder, extra))


def main():
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from weightviz.demo.models import SmallCNN

    torch.set_num_threads(2)
    torch.manual_seed(7)
    base_sd = torch.load(out("cnn.pth"), weights_only=True)
    cnn = SmallCNN()
    cnn.load_state_dict(base_sd)
    cnn.eval()
    xt, yt = upside_down(2000, seed=1)
    with torch.no_grad():
        before = float((cnn(xt).argmax(1).numpy() == yt).mean())

    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0)
    model = get_peft_model(cnn, config)
    model.eval()                                   # BatchNorm statistics stay the base's
    x, y = upside_down(3000, seed=8)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(8)
    steps = 0
    for _ in range(3):
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model.base_model.model.logits(xs[idx]), ys[idx]).backward()
            opt.step()
            steps += 1
    with torch.no_grad():
        after = float((model(xt).argmax(1).numpy() == yt).mean())

    for name in ("cnn_lora", "cnn_lora_zero3", "cnn_lora_r8"):
        shutil.rmtree(out(name), ignore_errors=True)
    save_adapter(model, out("cnn_lora"))

    # ZeRO-3 without gathering: every saved parameter is an empty placeholder
    shutil.copytree(out("cnn_lora"), out("cnn_lora_zero3"))
    tensors = load_file(os.path.join(out("cnn_lora"), "adapter_model.safetensors"))
    save_file({k: torch.empty(0, dtype=v.dtype) for k, v in tensors.items()},
              os.path.join(out("cnn_lora_zero3"), "adapter_model.safetensors"))

    # r edited in the config: the file still holds rank-4 tensors
    shutil.copytree(out("cnn_lora"), out("cnn_lora_r8"))
    cfg_path = os.path.join(out("cnn_lora_r8"), "adapter_config.json")
    with open(cfg_path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    cfg["r"] = 8
    with open(cfg_path, "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")

    # what PEFT leaves when the base is bfloat16 and the adapter is merged into it
    bf16 = SmallCNN()
    bf16.load_state_dict(base_sd)
    bf16 = bf16.to(torch.bfloat16).eval()
    from peft import PeftModel
    merged = PeftModel.from_pretrained(bf16, out("cnn_lora")).merge_and_unload()
    save_file({k: v.detach().contiguous() for k, v in merged.state_dict().items()},
              out("cnn_lora_merged_bf16.safetensors"), metadata={"model": "weightviz.demo.SmallCNN"})

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_demo_data import update_manifest
    update_manifest("adapter", {
        "files": ["cnn_lora", "cnn_lora_zero3", "cnn_lora_r8", "cnn_lora_merged_bf16.safetensors"],
        "folder": "cnn_lora", "base": "cnn.pth", "method": "LoRA", "r": 4, "lora_alpha": 8,
        "target_modules": TARGETS, "task": "upside-down images (x[:, ::-1])", "steps": steps,
        "accuracy_upside_down_before": round(before, 4), "accuracy_upside_down_after": round(after, 4),
        "faults": {"cnn_lora_zero3": "every tensor torch.Size([0]) (ZeRO-3, not gathered)",
                   "cnn_lora_r8": "r edited to 8 in adapter_config.json; tensors hold rank 4"},
        "merged": {"file": "cnn_lora_merged_bf16.safetensors", "dtype": "bfloat16",
                   "by": "peft merge_and_unload on the bfloat16 base"},
        "peft": __import__("peft").__version__,
    })
    print(f"upside-down accuracy {before:.4f} -> {after:.4f} after {steps} LoRA steps")


if __name__ == "__main__":
    main()

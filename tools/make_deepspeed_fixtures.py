"""Write tests/fixtures/deepspeed/: DeepSpeed ZeRO-1, ZeRO-2 (bf16) and ZeRO-3 checkpoints
written by DeepSpeed itself, with the values a reader must give back. Regenerate (it needs
DeepSpeed, which the tests themselves do not; about 15 s) from the repository root with

    DS_BUILD_OPS=0 .venv/bin/pip install deepspeed   # once (no compiled ops needed)
    .venv/bin/python tools/make_deepspeed_fixtures.py [OUT_DIR]

Two CPU ranks (``DS_ACCELERATOR=cpu``, gloo) train :class:`make_dcp_fixtures.DsNet` (buffers,
a frozen layer, a tied weight, two parameter groups; seeded) for one Adam step with ZeRO
stage 1, 2 (bf16) and 3 and ``save_checkpoint`` it (``make_dcp_fixtures._worker_deepspeed``).
For each stage ``OUT_DIR/zero{N}/`` (default ``tests/fixtures/deepspeed/zero{N}/``) holds:

* ``checkpoint/``: what ``save_checkpoint`` wrote (``latest`` and ``global_step1/``), minus
  the ``zero_to_fp32.py`` / ``zero_to_torch.py`` scripts DeepSpeed copies beside it;
* ``expected_module.safetensors``: the model's own ``state_dict()`` after the step (ZeRO-3:
  gathered), the tied ``proj.weight`` cloned from ``embed.weight``;
* ``expected_fp32.safetensors``: DeepSpeed's own ``get_fp32_state_dict_from_zero_checkpoint``
  of ``checkpoint/`` (tied weights cloned).

The safetensors metadata (one key, ``fixture``: JSON) keeps the tensors' order as saved
(safetensors sorts names; :func:`order` reads it back) and the DeepSpeed and torch versions.
The ranks run in torch's deterministic mode, which fills the never-initialised padding of the
ZeRO-3 partitions (and so their Adam moments) with NaN: rerunning with the same versions gives
the same bytes (about 120 KB in all), and a reader that kept the padding would show NaN.
tests/test_formats_deepspeed.py reads these folders without DeepSpeed; only its live tests
(which write the folders again, or run DeepSpeed's own zero_to_fp32) need it installed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "deepspeed")
STAGES = (1, 2, 3)


def _dcp_tool():
    spec = importlib.util.spec_from_file_location("make_dcp_fixtures", os.path.join(HERE, "make_dcp_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _save(tensors: dict, path: str, about: str) -> None:
    """safetensors of ``tensors``, each its own contiguous copy (tied weights share storage),
    with their order (safetensors sorts its keys) in the one metadata key ``fixture``."""
    from safetensors.torch import save_file
    note = json.dumps({"written_by": about, "order": list(tensors)})
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, path,
              metadata={"fixture": note})
    os.chmod(path, 0o644)


def order(path) -> list[str]:
    """The names of an expected file in the order they were saved."""
    from safetensors import safe_open
    with safe_open(os.fspath(path), "np") as f:
        return json.loads(f.metadata()["fixture"])["order"]


def _zero_to_fp32(folder: str) -> dict:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        sd = get_fp32_state_dict_from_zero_checkpoint(folder)
    return {k: v if hasattr(v, "detach") else v.contiguous() for k, v in sd.items()}


def write(out: str = OUT) -> None:
    """Write the three stages into ``out`` (built beside it, then swapped in)."""
    import deepspeed
    import torch
    out = os.path.abspath(out)
    versions = f"deepspeed {deepspeed.__version__}, torch {torch.__version__.split('+')[0]}"
    with tempfile.TemporaryDirectory() as raw:
        _dcp_tool().run_ranks("deepspeed", raw)
        parent = os.path.dirname(out)
        os.makedirs(parent, exist_ok=True)
        new = tempfile.mkdtemp(prefix=".deepspeed-new-", dir=parent)
        for stage in STAGES:
            src, dst = os.path.join(raw, f"zero{stage}"), os.path.join(new, f"zero{stage}")
            shutil.copytree(src, os.path.join(dst, "checkpoint"),
                            ignore=shutil.ignore_patterns("zero_to_*.py"))
            module = torch.load(os.path.join(raw, f"zero{stage}-expected.pt"), weights_only=True)
            tag = f"tools/make_deepspeed_fixtures.py: ZeRO-{stage}, {versions}"
            _save(module, os.path.join(dst, "expected_module.safetensors"), tag)
            _save(_zero_to_fp32(os.path.join(dst, "checkpoint")),
                  os.path.join(dst, "expected_fp32.safetensors"), tag)
    os.chmod(new, 0o755)
    if os.path.exists(out):
        old = out + ".old"
        os.replace(out, old)
        os.replace(new, out)
        shutil.rmtree(old)
    else:
        os.replace(new, out)


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else OUT)

"""Write the demo training checkpoints into weightviz/demo/data/ (notebook 11's material).

Run from the repository root, after tools/make_demo_data.py wrote cnn.pth:

    .venv/bin/python tools/make_demo_dcp.py

Two CPU processes in one gloo process group load the demo CNN (``SmallCNN`` with
``cnn.pth``), shard it with FSDP2 (``fully_shard``: every parameter split in two along its
first dimension), and save it with ``torch.distributed.checkpoint`` exactly as FSDP2 and
torchtitan do (``get_state_dict`` + ``dcp.save``), into two folders of ``.metadata`` plus
``__0_0.distcp`` and ``__1_0.distcp``:

* ``cnn_dcp_step1/`` the loaded weights, as training starts (``{"model", "step": 0}``);
* ``cnn_dcp_step2/`` after a few SGD steps on upside-down demo images (``{"model", "optim":
  the SGD optimizer's state (its param_groups: pickled objects), "step"}``).

Seeded: the weights are the same on every run (the files are not byte for byte: torch
writes a random id into each archive). The step counts and the folders' sizes go to
manifest.json under "dcp".
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "weightviz", "demo", "data")
FOLDERS = ("cnn_dcp_step1", "cnn_dcp_step2")
STEPS, LR, BATCH = 5, 0.05, 64


def _rank():
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from weightviz import demo
    from weightviz.demo.models import SmallCNN

    dist.init_process_group("gloo")
    os.chdir(OUT)                     # relative checkpoint ids: no path of this machine in .metadata
    torch.manual_seed(0)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = SmallCNN()
    model.load_state_dict(torch.load(demo.path("cnn.pth"), weights_only=True))
    fully_shard(model, mesh=mesh)
    opt = torch.optim.SGD(model.parameters(), lr=LR)     # no momentum buffers: small files
    msd, _ = get_state_dict(model, opt)
    dcp.save({"model": msd, "step": 0}, checkpoint_id=FOLDERS[0])
    x, y = demo.images(STEPS * BATCH * dist.get_world_size(), seed=11)
    x = x[:, ::-1].copy()                       # upside down: the weights have to move
    per = STEPS * BATCH
    xs = torch.from_numpy(x[dist.get_rank() * per:(dist.get_rank() + 1) * per])
    ys = torch.from_numpy(y[dist.get_rank() * per:(dist.get_rank() + 1) * per])
    for i in range(STEPS):
        opt.zero_grad()
        probs = model(xs[i * BATCH:(i + 1) * BATCH])     # forward(): FSDP2 gathers the shards
        loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-9), ys[i * BATCH:(i + 1) * BATCH])
        loss.backward()
        opt.step()
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd, "step": STEPS}, checkpoint_id=FOLDERS[1])
    dist.barrier()
    dist.destroy_process_group()


def main():
    for name in FOLDERS:
        shutil.rmtree(os.path.join(OUT, name), ignore_errors=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        log = tempfile.TemporaryFile()
        procs.append((subprocess.Popen([sys.executable, os.path.abspath(__file__), "--rank"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT), log))
    for p, log in procs:
        p.wait()
        if p.returncode:
            log.seek(0)
            raise SystemExit(log.read().decode(errors="replace")[-3000:])
    sizes = {n: sum(os.path.getsize(os.path.join(OUT, n, f)) for f in os.listdir(os.path.join(OUT, n)))
             for n in FOLDERS}
    from make_demo_data import update_manifest
    update_manifest("dcp", {"files": list(FOLDERS), "class": "weightviz.demo.SmallCNN",
                            "base": "cnn.pth", "ranks": 2, "sharding": "FSDP2 fully_shard (dim 0)",
                            "steps": {FOLDERS[0]: 0, FOLDERS[1]: STEPS},
                            "optimizer": f"SGD lr={LR}, batches of {BATCH} upside-down "
                                         "images per rank",
                            "bytes": sizes})
    print(sizes)


if __name__ == "__main__":
    if sys.argv[1:] == ["--rank"]:
        _rank()
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        main()

"""Write training checkpoints of many ranks with the frameworks themselves, for the tests.

    .venv/bin/python tools/make_dcp_fixtures.py OUT_DIR [dcp-single dcp-2ranks dcp-hf deepspeed]

* ``dcp-single``: ``torch.distributed.checkpoint.save`` in one process (no process group) of
  ``{"model": state_dict, "optim": optimizer state_dict, "step": 7, "rng": {bytes}, "extra":
  {"nested": {"t": tensor}}}`` after one Adam step of :class:`Net`;
* ``dcp-2ranks``: two CPU processes in a gloo process group: :class:`Net` sharded by FSDP2
  ``fully_shard``, one Adam step, saved from ``get_state_dict`` (DTensors: truly sharded chunks)
  with DTensors ``Shard(1)``, ``Shard(0)`` (uneven: 7 rows) and replicated beside it (under ``extra``);
* ``dcp-hf``: the same two ranks saving the model with ``HuggingFaceStorageWriter(
  save_distributed=True)`` (``shard-*-model-*-of-*.safetensors``, local chunks with
  ``DCP_SHARDING_INFO``);
* ``deepspeed``: two CPU processes (``DS_ACCELERATOR=cpu``, gloo) training :class:`DsNet`
  (buffers, a frozen layer, a tied weight, two parameter groups) with DeepSpeed ZeRO 1, 2 and
  3, one ``save_checkpoint`` each under ``zero1/``, ``zero2/`` (bf16), ``zero3/``.

Each writes ``<kind>-expected.pt`` beside the checkpoint folder: the model's own full ``state_dict()`` after
the step (``torch.save``), which the reader must reproduce exactly. The DCP kinds are not
committed: tests/test_formats_dcp.py runs this at session start (a few seconds per world of
two processes). The DeepSpeed folders are committed in tests/fixtures/deepspeed/, written
through ``tools/make_deepspeed_fixtures.py`` (which runs the ``deepspeed`` kind), so that
the tests need no DeepSpeed.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 6)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(6, 6) for _ in range(2))
        self.norm = torch.nn.LayerNorm(6)
        self.head = torch.nn.Linear(6, 5, bias=False)

    def forward(self, x):
        h = self.embed(x)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.head(self.norm(h))


class DsNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(13, 8)
        self.frozen = torch.nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.fc = torch.nn.Linear(8, 7)
        self.norm = torch.nn.LayerNorm(7)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 7))
        self.out = torch.nn.Linear(7, 13, bias=False)
        self.proj = torch.nn.Linear(8, 13, bias=False)
        self.proj.weight = self.embed.weight            # tied: DeepSpeed lists it in shared_params

    def forward(self, x):
        h = self.frozen(self.embed(x))
        return self.proj(h) + self.out(self.norm(torch.relu(self.fc(h))) * self.scale.to(h.dtype))


def _inputs(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 11, (n, 3), generator=g)


# ---------------------------------------------------------------- DCP
def write_dcp_single(out: str) -> None:
    import torch.distributed.checkpoint as dcp
    import warnings
    torch.manual_seed(0)
    m = Net()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m(_inputs()).sum().backward()
    opt.step()
    sd = {"model": m.state_dict(), "optim": opt.state_dict(), "step": 7,
          "rng": {"torch": torch.get_rng_state().numpy().tobytes(), "note": b"abc"},
          "extra": {"nested": {"t": torch.arange(6).reshape(2, 3)}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "no process group: saving in one process"
        dcp.save(sd, checkpoint_id=os.path.join(out, "dcp-single"))
    torch.save({"model": m.state_dict(), "optim": opt.state_dict()},
               os.path.join(out, "dcp-single-expected.pt"))


def _worker_dcp(kind: str, out: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(0)
    m = Net()
    for layer in m.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m(_inputs()).sum().backward()
    opt.step()
    msd, osd = get_state_dict(m, opt)
    full, _ = get_state_dict(m, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if kind == "dcp-2ranks":
        sd = {"model": msd, "optim": osd, "extra": {
              "cols": distribute_tensor(torch.arange(15.0).reshape(5, 3), mesh, [Shard(1)]),
              "rows": distribute_tensor(torch.arange(14.0).reshape(7, 2), mesh, [Shard(0)]),
              "rep": distribute_tensor(torch.ones(3), mesh, [Replicate()])}}
        dcp.save(sd, checkpoint_id=os.path.join(out, kind))
    else:
        from torch.distributed.checkpoint import HuggingFaceStorageWriter
        writer = HuggingFaceStorageWriter(os.path.join(out, kind), save_distributed=True)
        dcp.save(msd, storage_writer=writer)
    if rank == 0:
        torch.save({"model": full}, os.path.join(out, f"{kind}-expected.pt"))
    dist.barrier()
    dist.destroy_process_group()


# ---------------------------------------------------------------- DeepSpeed
def _worker_deepspeed(out: str) -> None:
    import deepspeed
    import torch.distributed as dist
    # the padding of ZeRO partitions is never initialised: filled with NaN (torch's deterministic
    # mode) it is the same bytes on every run, and a reader that kept it would show NaN
    torch.use_deterministic_algorithms(True, warn_only=True)
    deepspeed.init_distributed(dist_backend="gloo")
    for stage in (1, 2, 3):
        torch.manual_seed(0)
        m = DsNet()
        decay = [p for n, p in m.named_parameters() if p.requires_grad and n.endswith("weight")]
        rest = [p for n, p in m.named_parameters() if p.requires_grad and not n.endswith("weight")]
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]
        cfg = {"train_batch_size": 2 * dist.get_world_size(), "steps_per_print": 10 ** 6,
               "optimizer": {"type": "Adam", "params": {"lr": 0.01, "torch_adam": True}},
               "zero_optimization": {"stage": stage}, "bf16": {"enabled": stage == 2}}
        engine, *_ = deepspeed.initialize(model=m, model_parameters=groups, config=cfg)
        x = torch.randint(0, 13, (2,), generator=torch.Generator().manual_seed(dist.get_rank()))
        engine.backward(engine(x).float().sum())
        engine.step()
        folder = os.path.join(out, f"zero{stage}")
        engine.save_checkpoint(folder)
        if stage == 3:
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # noqa
            with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
                full = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
        else:
            full = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
        if dist.get_rank() == 0:
            torch.save(full, os.path.join(out, f"zero{stage}-expected.pt"))
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()


# ---------------------------------------------------------------- launching ranks
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(kind: str, out: str, world: int = 2, timeout: float = 300) -> None:
    """Run ``world`` processes of this script (``--worker kind out``) in one gloo group."""
    import tempfile
    port = free_port()
    procs, logs = [], []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DS_ACCELERATOR="cpu",
                   OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        log = tempfile.TemporaryFile()          # a file, not a pipe: a chatty rank never blocks
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", kind, out],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise
    if any(p.returncode for p in procs):
        text = []
        for log in logs:
            log.seek(0)
            text.append(log.read().decode(errors="replace")[-3000:])
        raise RuntimeError(f"{kind}: a rank failed:\n" + "\n".join(text))
    for log in logs:
        log.close()


def write(out: str, kinds=("dcp-single", "dcp-2ranks", "dcp-hf", "deepspeed")) -> None:
    os.makedirs(out, exist_ok=True)
    for kind in kinds:
        if kind == "dcp-single":
            write_dcp_single(out)
        else:
            run_ranks(kind, out)


def _worker_main(kind: str, out: str) -> None:
    try:
        if kind == "deepspeed":
            _worker_deepspeed(out)
        else:
            _worker_dcp(kind, out)
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    os._exit(0)           # DeepSpeed's comm threads may abort a normal interpreter exit


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        write(sys.argv[1], tuple(sys.argv[2:]) or ("dcp-single", "dcp-2ranks", "dcp-hf", "deepspeed"))

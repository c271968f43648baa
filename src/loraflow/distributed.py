"""Several processes (GPUs) for one training job: torchrun launch, data-parallel gradient averaging.

`train.nproc_per_node > 1` makes the train job start itself again under torchrun. Every rank walks
the same seeded batch stream and takes its share of each optimizer step's micro-batches; gradients
(LoRA parameters only, so this is cheap) are summed across ranks, each rank having scaled its loss
by the step's global number of target tokens, which gives exactly the single-process gradient.
NCCL on GPUs, gloo on CPU. Only rank 0 writes outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch


def world() -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun."""
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def sum_gradients(params) -> None:
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def sum_value(value: float, device) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, module: str, kwargs: dict) -> None:
    """Run `python -m module kwargs.json` under torchrun with `nproc` processes on this node."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(kwargs, fh)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module, fh.name]
    try:
        subprocess.run(cmd, check=True)
    finally:
        os.unlink(fh.name)

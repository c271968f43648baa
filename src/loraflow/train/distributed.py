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


def rank_device() -> str | None:
    """The device this rank uses, as the job's allocation names it: the LOCAL_RANK-th entry of
    CUDA_VISIBLE_DEVICES (the train job claimed nproc_per_node GPU slots, or Slurm gave it
    --gpus=nproc_per_node), so the ranks of one job use distinct devices. None without a device list."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not visible:
        return None
    if local_rank >= len(visible):
        raise RuntimeError(
            f"rank {local_rank} of a train job has no GPU: the job sees {len(visible)} device(s) "
            f"(CUDA_VISIBLE_DEVICES={','.join(visible)}) for train.nproc_per_node processes"
        )
    return visible[local_rank]


def world() -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun. On GPUs rank i
    uses cuda:LOCAL_RANK, i.e. the LOCAL_RANK-th device of the job's CUDA_VISIBLE_DEVICES."""
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            rank_device()  # a clear error when the job got fewer devices than ranks
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


def launch(nproc: int, entry, kwargs: dict) -> None:
    """Run `entry(**kwargs)` (a module-level function, e.g. a train stage) as `nproc` processes on this
    node under torchrun: each rank runs `python -m loraflow.train.loop spec.json`."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"entry": f"{entry.__module__}:{entry.__qualname__}", "kwargs": kwargs}, fh)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "loraflow.train.loop",
        fh.name,
    ]
    try:
        subprocess.run(cmd, check=True)
    finally:
        os.unlink(fh.name)


def probe(out_dir: str) -> None:
    """One rank of `torchrun ... -m loraflow.train.distributed OUT_DIR`: join the process group and write
    rank<N>.json with the rank, world size and device this rank uses (a check that the ranks of a job
    see distinct devices)."""
    rank, size = world()
    info = {
        "rank": rank,
        "world": size,
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "device": rank_device(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    finish()


if __name__ == "__main__":
    probe(sys.argv[1])

"""One GPU per concurrently running job on a multi-GPU machine.

Snakemake's `--resources gpu=N` only bounds how many GPU jobs run at once; it does not say which
device each job may use. Each GPU job therefore claims a slot before torch is imported: it takes an
exclusive `flock` on one lock file per visible device and sets CUDA_VISIBLE_DEVICES to that device.
The kernel drops the lock when the process ends, also on kill -9, so a slot is never leaked. With at
most N jobs holding a gpu token and N slots, a free slot always exists; a job waits briefly otherwise.

A job of N processes (train.nproc_per_node = N requests gpu=N) claims N slots; its torchrun ranks use
one each (distributed.rank_device). Under Slurm (SLURM_JOB_ID set) the scheduler already isolates
devices (--gpus=N), so nothing is claimed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_held: list = []  # open lock files of this process (kept open = slot held)


def visible_devices() -> list[str]:
    """Devices this machine offers, without importing torch.

    LORAFLOW_GPU_COUNT overrides detection (tests simulate a multi-GPU machine with it)."""
    fake = os.environ.get("LORAFLOW_GPU_COUNT")
    if fake is not None:
        return [str(i) for i in range(int(fake))]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def lock_dir() -> Path:
    path = Path(
        os.environ.get("LORAFLOW_GPU_LOCK_DIR", Path(tempfile.gettempdir()) / f"loraflow-gpu-slots-{os.getuid()}")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_gpu(n_gpus: int = 1, timeout_s: float = 600.0) -> list[str] | None:
    """Claim `n_gpus` free devices and restrict this process to them (CUDA_VISIBLE_DEVICES).

    Returns the devices, or None when there is nothing to do (no or one GPU, or under Slurm)."""
    if n_gpus <= 0 or os.environ.get("SLURM_JOB_ID"):
        return None
    devices = visible_devices()
    if len(devices) <= 1:
        return None
    if n_gpus > len(devices):
        raise RuntimeError(f"a job asks for {n_gpus} GPUs but only {len(devices)} are visible")
    deadline = time.monotonic() + timeout_s
    while True:
        got = []
        for device in devices:
            fh = open(lock_dir() / f"gpu{device}.lock", "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            got.append((device, fh))
            if len(got) == n_gpus:
                break
        if len(got) == n_gpus:
            _held.extend(fh for _, fh in got)
            chosen = [d for d, _ in got]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
            log.info("GPU slot(s) %s claimed (of %s)", ",".join(chosen), ",".join(devices))
            return chosen
        for _, fh in got:
            fh.close()  # releases the lock; try again for a complete set
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no free GPU slot among {devices} after {timeout_s:.0f}s; is --resources gpu larger than the number "
                "of GPUs?"
            )
        time.sleep(0.2)


def check_ranks(slots: int, nproc: int) -> None:
    """A job of `nproc` processes (train.nproc_per_node) needs a device per process where there are
    devices. Snakemake scales a job's `gpu` request down to --resources gpu, so say so before starting."""
    if nproc > slots and visible_devices():
        raise RuntimeError(
            f"train.nproc_per_node is {nproc} but this job holds {slots} GPU slot(s): run with --resources gpu={nproc} "
            f"or more (Snakemake scales a job's gpu request down to --resources gpu), or lower train.nproc_per_node"
        )

"""A short measured calibration of a train job: a few real optimizer steps of the actual model, on this
machine, in the job's precision, attention, packing and forward-pass budget.

The pre-flight turns it into each grid point's training time (seconds per trained token and per
validated token, times the token counts of the token cache) and corrects its memory estimate by what
the step over the longest rows really took. The batches are synthetic: token ids drawn at random in the
lengths the token cache reports (the mean train row for time, the longest for memory), so the cost is the
real one without reading the training data. Layers are not compiled here (compiling takes longer than the
whole calibration); a job that compiles its layers (train.compile) is timed uncompiled.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loraflow.model.memory import TrainJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenSample:
    """The rows a calibration trains on: `batch_size` rows of `mean_length` tokens (time) and of `longest`
    tokens (memory), a `supervised` share of each row's tokens being targets."""

    mean_length: int
    longest: int
    supervised: float = 0.5
    mean_val_length: int = 0  # the validation rows' mean (0: as the train rows)


@dataclass(frozen=True)
class Calibration:
    """What the calibration measured: seconds per trained token (forward, backward and optimizer step of a
    typical micro-batch, padding included), seconds per validated token, seconds to load the model and
    wrap it, the peak memory of a step over the longest rows (peak RSS on a CPU, max allocated on a GPU)
    and the memory estimate of that same step's terms (memory.estimate_memory_mb), for the correction."""

    train_s_per_token: float
    eval_s_per_token: float
    load_s: float
    peak_mb: float
    estimate_mb: float
    device: str


def synthetic_rows(n: int, length: int, supervised: float, vocab: int, rng: np.random.Generator) -> list:
    """`n` rows of `length` random token ids, the last `supervised` share of each masked as targets."""
    rows = []
    for _ in range(n):
        ids = rng.integers(0, vocab, size=length, dtype=np.int32)
        mask = np.zeros(length, dtype=np.uint8)
        mask[length - max(1, round(supervised * length)) :] = 1
        rows.append((ids, mask))
    return rows


def reset_peak(device) -> None:
    """Start a new peak: the GPU's max allocated, or the process's resident high-water mark (Linux)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: ru_maxrss keeps the process's peak so far (an upper bound)
        pass


def peak_mb(device) -> float:
    """The peak since reset_peak: max allocated on a GPU, else the resident high-water mark (VmHWM)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def calibrate(
    model_dir: str, point: dict, job: TrainJob, sample: TokenSample, steps: int = 2, trust_remote_code: bool = False
) -> Calibration:
    """Load `model_dir` as the train stage would for grid `point` ({method, r, lora_alpha, target_modules})
    and `job` (its precision, attention, packing, forward-pass budget; `job.tokens_per_forward` as the
    pre-flight bounds it), then: one step over `job.batch_size` rows of the longest length (its peak), `steps`
    timed steps over rows of the mean length, and one timed validation pass over rows of the validation mean."""
    import torch

    from loraflow.model.batching import forward_batches
    from loraflow.model.counts import parameter_counts
    from loraflow.model.device import autocast, pick_device, set_seed, train_weight_dtype, training_precision
    from loraflow.model.kernels import attention_implementation, shape_granule
    from loraflow.model.loading import unwrap
    from loraflow.model.loss import mean_loss, supervised_loss
    from loraflow.model.memory import TRAIN_TERMS, estimate_memory_mb
    from loraflow.model.methods import load_base, make_optimizer, trainable_model

    set_seed(0)
    device = pick_device()
    precision = training_precision(job.precision, device)
    method = point["method"]
    tick = time.perf_counter()
    base = load_base(model_dir, device, method, trust_remote_code, dtype=train_weight_dtype(precision, method))
    model = trainable_model(
        base,
        method,
        point.get("r"),
        point.get("lora_alpha"),
        point.get("target_modules"),
        0.0,
        job.gradient_checkpointing,
    )
    attn = attention_implementation(job.attention, device, precision, job.seq_len)
    if attn != unwrap(model).config._attn_implementation:
        unwrap(model).set_attn_implementation(attn)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(method, params, 1e-5, 0.0, device)
    load_s = time.perf_counter() - tick

    granule = shape_granule(device, precision)
    vocab = unwrap(model).config.vocab_size
    rng = np.random.default_rng(0)
    longest = synthetic_rows(job.batch_size, sample.longest, sample.supervised, vocab, rng)
    typical = synthetic_rows(job.batch_size, sample.mean_length, sample.supervised, vocab, rng)

    def forwards(rows: list) -> list:
        return forward_batches(rows, 0, device, job.packing, job.seq_len, job.tokens_per_forward or 0, granule)

    def step(net: torch.nn.Module, opt: torch.optim.Optimizer, rows: list) -> None:
        # the model and optimizer come as arguments, not from the closure, so `del` below frees them
        n_target = sum(int(mask[1:].sum()) for _, mask in rows)
        for batch in forwards(rows):
            with autocast(precision, device):
                loss = supervised_loss(net, batch)[0]
            (loss / max(n_target, 1)).backward()
            del batch, loss
        opt.step()
        opt.zero_grad(set_to_none=True)

    def synced() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    model.train()
    reset_peak(device)
    step(model, optimizer, longest)  # also the warm-up: allocations, kernels
    measured = peak_mb(device)
    tick = synced()
    for _ in range(steps):
        step(model, optimizer, typical)
    train_s = (synced() - tick) / (steps * sum(len(ids) for ids, _ in typical))
    val_rows = (
        synthetic_rows(job.batch_size, sample.mean_val_length, sample.supervised, vocab, rng)
        if sample.mean_val_length
        else typical
    )
    tick = synced()
    mean_loss(model, val_rows, 2 * job.batch_size, 0, device, precision=precision, forwards=forwards)
    eval_s = (synced() - tick) / sum(len(ids) for ids, _ in val_rows)

    # the estimate's terms for the step just measured: no token cache, and oneDNN's kernel cache of a whole run
    # is not met yet
    trainable, total = parameter_counts(model)
    terms: dict = {}
    estimate_memory_mb(
        model,
        trainable,
        total,
        dataclasses.replace(job, method=method, device_type=device.type, train_rows=0),
        terms=terms,
    )
    step_terms = sum(terms[k] for k in TRAIN_TERMS if k not in ("tokens", "kernels"))
    del model, base, optimizer, params
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Calibration(train_s, eval_s, load_s, measured, step_terms, device.type)

"""bf16 on a CPU: training throughput and memory per shape granule (model.kernels.ONEDNN_GRANULE).

Each granule trains in a process of its own (oneDNN's kernel cache is per process, so the memory it
grows to belongs to one granule): the train stage's model and forward passes (tasks.causal_lm, LoRA
r=8 alpha=16 on q_proj+v_proj, packing and tokens per forward pass as the train stage sets them), on a
finished run's token cache, for --steps optimizer steps of --batch conversations. Timed after --warm
steps. With --rounds N the granules run in N interleaved rounds and the median is printed.

Prints per granule: real tokens/s (padding never counts), the share of padding in the forward passes,
RSS after the warm-up and at the end, peak RSS, and tokens/s as a ratio of the first granule's.

    .venv/bin/python benchmarks/bench_granule.py --results results [--batch 8] [--steps 60] [--warm 5] \\
        [--granules 64,16,1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def rss_mb() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20


def one(results: str, batch: int, steps: int, warm: int, granule: int) -> dict:
    import numpy as np
    import torch

    from loraflow.model import kernels
    from loraflow.model.batching import length_grouped_batches
    from loraflow.model.device import autocast, set_threads, training_precision
    from loraflow.tasks.causal_lm.settings import LMInputs, LMTrainSettings
    from loraflow.tasks.causal_lm.train import CausalLM
    from loraflow.train.settings import GridPoint

    kernels.ONEDNN_GRANULE = granule
    set_threads(None)
    device = torch.device("cpu")
    precision = training_precision("auto", device)
    r = Path(results)
    task = CausalLM(
        inputs=LMInputs(
            str(r / "base_model"), str(r / "tokens/train.npz"), str(r / "tokens/val.npz"), str(r / "tokens/meta.json")
        ),
        point=GridPoint(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], method="lora"),
        train=LMTrainSettings(lora_dropout=0.0, batch_size=batch),
    )
    model = task.build(device, precision)
    model.train()
    examples = task.examples("train")
    batches = length_grouped_batches([len(e[0]) for e in examples], batch, np.random.default_rng(0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    real = slots = 0
    tokens, start, after_warm = 0, time.perf_counter(), rss_mb()
    for step, b in enumerate((batches * (steps // max(len(batches), 1) + 1))[:steps]):
        if step == warm:
            tokens, start, after_warm = 0, time.perf_counter(), rss_mb()
        exs = [examples[i] for i in b]
        tokens += sum(len(e[0]) for e in exs)
        for fb in task.forwards(exs):
            slots += fb["input_ids"].numel()
            real += int((fb["example"] >= 0).sum())
            with autocast(precision, device):
                loss = task.loss_sum(model, fb)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - start
    return {
        "granule": granule,
        "precision": precision,
        "tokens_per_s": tokens / seconds,
        "padding_pct": 100 * (slots - real) / slots,
        "rss_after_warmup_mb": after_warm,
        "rss_end_mb": rss_mb(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, help="a finished run's results folder (base_model/, tokens/)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--granules", default="64,16,1")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.results, a.batch, a.steps, a.warm, a.one)))
        return
    granules = [int(g) for g in a.granules.split(",")]
    runs: dict[int, list[dict]] = {g: [] for g in granules}
    for r in range(a.rounds):
        for g in granules:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--results",
                    a.results,
                    "--batch",
                    str(a.batch),
                    "--steps",
                    str(a.steps),
                    "--warm",
                    str(a.warm),
                    "--one",
                    str(g),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs[g].append(json.loads(out.strip().splitlines()[-1]))
            x = runs[g][-1]
            print(f"round {r} granule {g:3d}: {x['tokens_per_s']:6.1f} real tokens/s", flush=True)
    first = statistics.median(x["tokens_per_s"] for x in runs[granules[0]])
    print(
        f"\n{a.results}: {a.steps} steps of {a.batch} conversations, timed after {a.warm}, precision "
        f"{runs[granules[0]][0]['precision']}, median of {a.rounds} round(s)"
    )
    print(
        f"{'granule':>7} {'tokens/s':>9} {'ratio':>6} {'padding %':>9} {'RSS warm':>9} {'RSS end':>8} {'peak RSS':>9}"
    )
    for g in granules:
        xs = runs[g]
        tps = statistics.median(x["tokens_per_s"] for x in xs)
        print(
            f"{g:7d} {tps:9.1f} {tps / first:6.2f} {statistics.median(x['padding_pct'] for x in xs):9.1f} "
            f"{max(x['rss_after_warmup_mb'] for x in xs):9.0f} {max(x['rss_end_mb'] for x in xs):8.0f} "
            f"{max(x['peak_rss_mb'] for x in xs):9.0f}"
        )


if __name__ == "__main__":
    main()

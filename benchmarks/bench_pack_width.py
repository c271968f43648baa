"""Training tokens/s with packed rows as wide as tokenize.max_length against rows as wide as the
micro-batch's longest conversation (what model.batching.forward_batches does), interleaved, one process.

SDPA with a block-diagonal mask costs width² per row whatever the mask holds (the CPU flash kernel does
not skip masked blocks), so short chats packed six to a 512-token row pay for attention that is masked
away. Both variants run the same micro-batches (length-grouped as the train stage draws them) through
the same LoRA model, forward + backward, in forward passes of at most --tokens-per-forward tokens, and
take the same gradient (tests/test_train_perf.py). Prints tokens/s per round, the medians, their ratio
and the padding share (computed tokens / real tokens).

Needs a finished run's results folder (results/base_model and results/tokens), e.g. the default run's:

    .venv/bin/python benchmarks/bench_pack_width.py --results results [--batch-size 8] [--batches 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def full_width_forwards(examples, pad_id, device, max_length, tokens_per_forward):
    """The forward passes as before: rows packed up to max_length, grouped up to the token budget."""
    from loraflow.model.batching import pack, pack_rows

    lengths = [len(ids) for ids, _ in examples]
    rows = sorted(pack_rows(lengths, max_length), key=lambda r: sum(lengths[i] for i in r), reverse=True)

    def fill(row: list[int]) -> int:
        return sum(lengths[i] for i in row)

    groups: list = []
    for row in rows:
        if groups and (len(groups[-1]) + 1) * fill(groups[-1][0]) <= tokens_per_forward:
            groups[-1].append(row)
        else:
            groups.append([row])
    return [pack(examples, pad_id, device, max_length, rows=g) for g in groups]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="a results folder with base_model/ and tokens/")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=10, help="micro-batches per round and variant")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens-per-forward", type=int, default=0, help="0 = tokenize.max_length (the CPU default)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from loraflow.model.batching import forward_batches, length_grouped_batches
    from loraflow.tasks.causal_lm.settings import LMInputs, LMTrainSettings
    from loraflow.tasks.causal_lm.train import CausalLM
    from loraflow.train.settings import GridPoint

    res = Path(args.results)
    task = CausalLM(
        inputs=LMInputs(
            str(res / "base_model"),
            str(res / "tokens/train.npz"),
            str(res / "tokens/val.npz"),
            str(res / "tokens/meta.json"),
        ),
        point=GridPoint(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], method="lora"),
        train=LMTrainSettings(lora_dropout=0.0, batch_size=args.batch_size),
    )
    device = torch.device("cpu")
    model = task.build(device, "fp32")
    model.train()
    train = task.examples("train")
    pad, max_length = task.tokenizer.pad_token_id, task.max_length
    budget = args.tokens_per_forward or max_length
    batches = length_grouped_batches([len(e[0]) for e in train], args.batch_size, np.random.default_rng(0))[
        : args.batches + 1
    ]
    variants = {
        f"rows of {max_length}": lambda ex: full_width_forwards(ex, pad, device, max_length, budget),
        "rows as wide as the longest": lambda ex: forward_batches(ex, pad, device, True, max_length, budget),
    }

    def run(make) -> tuple[float, float]:
        real = computed = 0
        start = time.perf_counter()
        for b in batches[1:]:
            ex = [train[i] for i in b]
            real += sum(len(e[0]) for e in ex)
            for batch in make(ex):
                computed += batch["input_ids"].numel()
                task.loss_sum(model, batch).backward()
        return real / (time.perf_counter() - start), computed / real

    for make in variants.values():  # warm-up, untimed
        for batch in make([train[i] for i in batches[0]]):
            task.loss_sum(model, batch).backward()
    lengths = [len(e[0]) for e in train]
    print(
        f"{len(train)} train conversations, tokens mean {np.mean(lengths):.0f}, max {max(lengths)}; max_length "
        f"{max_length}; micro-batch {args.batch_size}; {budget} tokens per forward pass; {torch.get_num_threads()} "
        "threads"
    )
    speeds: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, make in variants.items():
            tps, padding = run(make)
            speeds[name].append(tps)
            print(f"round {r + 1}  {name:<28} {tps:7.1f} tokens/s  computed/real tokens {padding:.3f}", flush=True)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    a, b = med.values()
    print(f"median tokens/s: {' | '.join(f'{k} {v:.1f}' for k, v in med.items())}; ratio {b / a:.2f}x")


if __name__ == "__main__":
    main()

"""Peak training memory, side by side: full fine-tuning vs LoRA vs LoRA + gradient checkpointing vs
QLoRA (4-bit NF4 base, gradient checkpointing, paged AdamW 8-bit where it runs, as `method: qlora` trains).

Each variant runs in its own process (peak RSS on CPU, max allocated on GPU) on the same model
(results/base_model), the same batches of the default train split, the train stage's optimizer, a few steps.
Checks the tutorials' claim that LoRA cuts training memory by ~70 %.

    .venv/bin/python benchmarks/bench_memory.py [--steps 3] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
VARIANTS = ("full", "lora", "lora+gc", "qlora")


def measure(variant: str, results: str, steps: int, batch_size: int) -> dict:
    """Runs in the child process."""
    import numpy as np

    from loraflow.data.tokenization import encode_example
    from loraflow.io import read_jsonl
    from loraflow.model.batching import collate
    from loraflow.model.device import peak_memory_mb, pick_device, set_seed, set_threads
    from loraflow.model.loading import load_tokenizer
    from loraflow.model.loss import supervised_loss
    from loraflow.model.methods import load_base, make_optimizer, trainable_model

    set_threads(0)
    set_seed(0)
    device = pick_device()
    model_dir = f"{results}/base_model"
    tok = load_tokenizer(model_dir)
    rows = read_jsonl(f"{results}/data/train.jsonl")[: steps * batch_size]
    examples = [tuple(np.asarray(a) for a in encode_example(tok, r["text"], r["assistant_spans"], 512)) for r in rows]
    method = {"lora+gc": "lora"}.get(variant, variant)  # full | lora | qlora: as the train stage loads and wraps them
    model = trainable_model(
        load_base(model_dir, device, method),
        method,
        8,
        16,
        ["q_proj", "v_proj"],
        0.05,
        gradient_checkpointing=variant == "lora+gc",
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(method, params, 1e-4, 0.0, device)
    model.train()
    for step in range(steps):
        batch = collate(examples[step * batch_size : (step + 1) * batch_size], tok.pad_token_id, device)
        loss, n = supervised_loss(model, batch)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {
        "variant": variant,
        "trainable_params": sum(p.numel() for p in params),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "optimizer": type(optimizer).__name__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(REPO / "results"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", choices=VARIANTS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.results, args.steps, args.batch_size)))
        return
    rows = []
    for variant in VARIANTS:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--results",
            args.results,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(
            f"{variant:8s} trainable {rows[-1]['trainable_params']:>12,}  peak {rows[-1]['peak_memory_mb']:8.0f} MB "
            f"({rows[-1]['device']}, {rows[-1]['optimizer']})",
            flush=True,
        )
    full = rows[0]["peak_memory_mb"]
    for r in rows[1:]:
        print(
            f"{r['variant']:8s} uses {100 * (1 - r['peak_memory_mb'] / full):5.1f} % less peak memory than full "
            "fine-tuning"
        )


if __name__ == "__main__":
    main()

"""Training throughput: loraflow's train stage vs two transformers.Trainer references, one process.

Same base model (results/base_model, the default SmolLM2-135M), same data (the default train split),
same LoRA (r=8, alpha=16, q_proj+v_proj, dropout 0.05), same examples and so the same real tokens,
same effective batch (16 conversations per optimizer step) and learning rate (2e-4), one epoch:

  ref1  the tutorials' recipe: Trainer, every example padded to 512 tokens, batch 4 x grad-accum 4
  ref2  a well-tuned Trainer: the same with dynamic padding and group_by_length=True
  loraflow  loraflow.tasks.causal_lm.train.train_lora (length-grouped dynamic padding, LM head and loss only on
            assistant positions, precision auto = bf16 mixed precision where the CPU has native bf16
            units (AMX / AVX512-BF16), else fp32), batch 8 x grad-accum 2 (its own choice of
            micro-batch: on these CPUs 8 runs faster than 16)
  extra     ref2 with bf16=True (Trainer's own mixed precision), printed for honesty: how much of
            loraflow's lead is precision and how much the loop

An untimed one-step warm-up runs first, so no contestant pays the process's cold start. With
--repeats N the contestants run in N interleaved rounds (A B C, A B C, ...) and the ratios are of the
median tokens/s, so a slow spell of this shared machine does not land on one contestant only.

Real tokens = non-padding tokens. Prints tokens/s, the ratios, and each model's validation loss
(mean NLL over assistant tokens, the same function for all three).

    .venv/bin/python benchmarks/bench_training.py [--examples 64] [--repeats 1] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

LORA = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.05)
LR, SEED = 2e-4, 0


def trainer_run(model_dir, examples, pad_to_max: bool, max_length: int = 512, bf16: bool = False):
    """Train with transformers.Trainer; returns (peft model, seconds, real tokens)."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from loraflow.model.loading import load_causal_lm, load_tokenizer
    from loraflow.model.methods import trainable_model

    tok = load_tokenizer(model_dir)
    rows = []
    for ids, mask in examples:
        ids, mask = [int(i) for i in ids], [int(m) for m in mask]
        labels = [i if m else -100 for i, m in zip(ids, mask)]
        if pad_to_max:
            pad = max_length - len(ids)
            rows.append(
                {
                    "input_ids": ids + [tok.pad_token_id] * pad,
                    "attention_mask": [1] * len(ids) + [0] * pad,
                    "labels": labels + [-100] * pad,
                }
            )
        else:
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    torch.manual_seed(SEED)
    model = trainable_model(load_causal_lm(model_dir, torch.device("cpu")), "lora", **LORA)
    import inspect

    # transformers >= 5 spells group_by_length=True as train_sampling_strategy="group_by_length"
    if "train_sampling_strategy" in inspect.signature(TrainingArguments.__init__).parameters:
        grouping = {"train_sampling_strategy": "random" if pad_to_max else "group_by_length"}
    else:
        grouping = {"group_by_length": not pad_to_max}
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        learning_rate=LR,
        num_train_epochs=1,
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        dataloader_num_workers=0,
        use_cpu=True,
        disable_tqdm=True,
        bf16=bf16,
        **grouping,
    )
    collator = None if pad_to_max else DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return model, seconds, sum(len(ids) for ids, _ in examples), "bf16" if bf16 else "fp32"


def loraflow_run(model_dir, tokens_dir: Path, threads: int, max_steps: int = 0, precision: str = "auto"):
    from loraflow.binding import bind
    from loraflow.tasks.causal_lm.train import train_lora

    out = Path(tempfile.mkdtemp())
    stats = train_lora(
        **bind(
            train_lora,
            dict(
                model_dir=model_dir,
                train_path=str(tokens_dir / "train.npz"),
                val_path=str(tokens_dir / "val.npz"),
                tokens_meta=str(tokens_dir / "meta.json"),
                out_adapter=str(out / "adapter"),
                out_log=str(out / "log.csv"),
                out_stats=str(out / "stats.json"),
                **LORA,
                learning_rate=LR,
                epochs=1,
                max_steps=max_steps,
                batch_size=8,
                grad_accum=2,
                eval_every=0,
                max_eval_batches=1,
                seed=SEED,
                threads=threads,
                precision=precision,
            ),
        )
    )
    import torch
    from peft import PeftModel

    from loraflow.model.loading import load_causal_lm

    model = PeftModel.from_pretrained(load_causal_lm(model_dir, torch.device("cpu")), str(out / "adapter"))
    # train_time_s is the training loop only (the final validation batch is timed apart)
    return model, stats["train_time_s"], stats["tokens_seen"], stats["precision"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(REPO / "results"))
    ap.add_argument("--examples", type=int, default=64, help="training conversations (a multiple of 16)")
    ap.add_argument("--val-examples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds; ratios of the median tokens/s")
    ap.add_argument("--skip-ref1", action="store_true", help="skip the slow padded-to-512 reference")
    ap.add_argument("--skip-extra", action="store_true", help="skip the extra ref2 + bf16 comparison")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="loraflow's train.precision")
    ap.add_argument("--json", help="also write the results there")
    args = ap.parse_args()

    import torch

    from loraflow.data.settings import SplitFiles, TokenFiles
    from loraflow.data.tokenization import load_split, tokenize_splits
    from loraflow.io import read_jsonl, write_jsonl
    from loraflow.model.device import set_threads
    from loraflow.model.loading import load_tokenizer
    from loraflow.model.loss import mean_loss

    threads = set_threads(args.threads)
    res = Path(args.results)
    model_dir = str(res / "base_model")
    if not (res / "data" / "train.jsonl").is_file():
        raise SystemExit("run the default pipeline first (snakemake --cores 1 --resources gpu=1)")
    tokens = Path(tempfile.mkdtemp())
    train_rows = read_jsonl(res / "data" / "train.jsonl")[: args.examples]
    val_rows = read_jsonl(res / "data" / "val.jsonl")[: args.val_examples]
    write_jsonl(tokens / "train.jsonl", train_rows)
    write_jsonl(tokens / "val.jsonl", val_rows)
    tokenize_splits(
        model_dir,
        SplitFiles(str(tokens / "train.jsonl"), str(tokens / "val.jsonl"), str(tokens / "val.jsonl")),
        TokenFiles(
            str(tokens / "train.npz"), str(tokens / "val.npz"), str(tokens / "test.npz"), str(tokens / "meta.json")
        ),
        512,
    )
    train = load_split(str(tokens / "train.npz"), str(tokens / "meta.json"), model_dir)
    val = load_split(str(tokens / "val.npz"), str(tokens / "meta.json"), model_dir)
    pad_id = load_tokenizer(model_dir).pad_token_id
    real = sum(len(i) for i, _ in train)
    from loraflow.model.device import cpu_has_fast_bf16

    print(
        f"{len(train)} conversations, {real} real tokens ({real / len(train):.0f} per example), {threads} threads, "
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{cpu_has_fast_bf16()}",
        flush=True,
    )

    loraflow_run(model_dir, tokens, threads, max_steps=1, precision=args.precision)  # warm-up, untimed
    results = {}
    plan = [
        ("loraflow", lambda: loraflow_run(model_dir, tokens, threads, precision=args.precision)),
        ("ref2 Trainer dynamic+grouped", lambda: trainer_run(model_dir, train, pad_to_max=False)),
    ]
    if not args.skip_ref1:
        plan.append(("ref1 Trainer padded-512", lambda: trainer_run(model_dir, train, pad_to_max=True)))
    if not args.skip_extra:
        plan.append(("extra: ref2 + bf16=True", lambda: trainer_run(model_dir, train, pad_to_max=False, bf16=True)))
    import statistics

    for round_ in range(args.repeats):
        for name, fn in plan:
            model, seconds, n_tokens, precision = fn()
            val_loss = mean_loss(model, val, 16, pad_id, torch.device("cpu"))
            entry = results.setdefault(
                name, {"real_tokens": n_tokens, "rounds_tokens_per_s": [], "val_loss": val_loss, "precision": precision}
            )
            entry["rounds_tokens_per_s"].append(n_tokens / seconds)
            entry["tokens_per_s"] = statistics.median(entry["rounds_tokens_per_s"])
            print(
                f"[round {round_ + 1}/{args.repeats}] {name:30s} {seconds:8.1f} s  {n_tokens / seconds:8.1f} real "
                f"tokens/s  val loss {val_loss:.4f}  ({precision})",
                flush=True,
            )
            del model
    if args.repeats > 1:
        for name, entry in results.items():
            print(f"median of {args.repeats} rounds: {name:30s} {entry['tokens_per_s']:8.1f} real tokens/s")

    lf = results["loraflow"]["tokens_per_s"]
    for name in results:
        if name != "loraflow":
            print(
                f"loraflow / {name}: {lf / results[name]['tokens_per_s']:.2f}x   (val loss "
                f"{results['loraflow']['val_loss']:.4f} vs {results[name]['val_loss']:.4f})"
            )
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()

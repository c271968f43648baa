"""Batched greedy generation (loraflow's evaluate) vs one prompt at a time, same model and prompts.

Prints both timings, the speed-up, and whether the answers are identical. Uses the default base
model and test split of a finished default run (results/), or converts/generates them if absent.

    .venv/bin/python benchmarks/bench_generation.py [--prompts 64] [--batch-size 32] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def ensure_inputs(results: Path) -> tuple[Path, list[str]]:
    model_dir, test = results / "base_model", results / "data" / "test.jsonl"
    if not model_dir.is_dir():
        from loraflow.model.base_model import prepare_base_model

        prepare_base_model(str(model_dir))
    if not test.is_file():
        raise SystemExit(f"{test} missing: run the default pipeline first (snakemake --cores 1 --resources gpu=1)")
    return model_dir, [json.loads(line)["prompt"] for line in test.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", default=str(REPO / "results"))
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    from loraflow.evaluate.run import generate, load_for_eval
    from loraflow.model.modeling import load_tokenizer, set_threads

    threads = set_threads(args.threads)
    model_dir, prompts = ensure_inputs(Path(args.results))
    prompts = prompts[: args.prompts]
    tokenizer = load_tokenizer(str(model_dir))
    model = load_for_eval(str(model_dir), None)
    generate(model, tokenizer, prompts[:2], 2, 4)  # warm-up

    t0 = time.perf_counter()
    batched, b_stats = generate(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single, s_stats = generate(model, tokenizer, prompts, 1, args.max_new_tokens)
    t_single = time.perf_counter() - t0

    same = sum(a == b for a, b in zip(batched, single))
    print(f"model: {model_dir} | prompts: {len(prompts)} | max_new_tokens: {args.max_new_tokens} | threads: {threads}")
    print(f"one at a time : {t_single:8.1f} s  {s_stats['generated_tokens']:6d} tokens  {s_stats['generation_tokens_per_s']:7.1f} tok/s")
    print(f"batched (bs={args.batch_size:<3}): {t_batched:6.1f} s  {b_stats['generated_tokens']:6d} tokens  {b_stats['generation_tokens_per_s']:7.1f} tok/s")
    print(f"speed-up: {t_single / t_batched:.2f}x")
    print(f"identical answers: {same}/{len(prompts)}")
    for i, (a, b) in enumerate(zip(batched, single)):
        if a != b:
            print(f"  differs at prompt {i}:\n    batched: {a!r}\n    single : {b!r}")


if __name__ == "__main__":
    main()

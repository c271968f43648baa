"""Batched greedy generation (loraflow's evaluate) vs one prompt at a time, same model and prompts.

Prints both timings, the speed-up, and whether the answers are identical. Uses the default base
model and test split of a finished default run (results/), or converts/generates them if absent.

With --decoders: the decoding loops side by side at one batch size, in interleaved rounds (same
prompts, same model, optionally base + --adapter): transformers' generate (greedy, dynamic KV cache:
the reference loraflow's own decoding is measured against), loraflow's greedy_decode with a dynamic
cache, with a static cache, and as evaluation runs it on a CPU (evaluate.cpu_kernels: auto: linears
prepacked for oneDNN and a static cache), the last also with stopped rows kept in the batch
(greedy_decode's drop_finished=False). Prints seconds per round, the ratios, and whether the texts are
identical.

    .venv/bin/python benchmarks/bench_generation.py [--prompts 64] [--batch-size 32] [--max-new-tokens 64]
    .venv/bin/python benchmarks/bench_generation.py --decoders --results R --adapter R/runs/X/adapter \\
        --batch-size 8 --rounds 2
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
    ap.add_argument("--decoders", action="store_true", help="compare the decoding loops instead (see above)")
    ap.add_argument("--adapter", help="with --decoders: a LoRA adapter on the base")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.decoders:
        return compare_decoders(args)

    from loraflow.evaluate.generation import generate
    from loraflow.evaluate.loading import load_for_eval
    from loraflow.model.device import set_threads
    from loraflow.model.loading import load_tokenizer

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
    print(
        f"one at a time : {t_single:8.1f} s  {s_stats['generated_tokens']:6d} tokens  "
        f"{s_stats['generation_tokens_per_s']:7.1f} tok/s"
    )
    print(
        f"batched (bs={args.batch_size:<3}): {t_batched:6.1f} s  {b_stats['generated_tokens']:6d} tokens  "
        f"{b_stats['generation_tokens_per_s']:7.1f} tok/s"
    )
    print(f"speed-up: {t_single / t_batched:.2f}x")
    print(f"identical answers: {same}/{len(prompts)}")
    for i, (a, b) in enumerate(zip(batched, single)):
        if a != b:
            print(f"  differs at prompt {i}:\n    batched: {a!r}\n    single : {b!r}")


def hf_generate(model, tokenizer, prompts, batch_size, max_new_tokens):
    """The reference decoder: transformers' generate, greedy, dynamic cache."""
    import torch

    from loraflow.evaluate.generation import stop_token_ids

    tokenizer.padding_side = "left"
    stops = stop_token_ids(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers = [""] * len(prompts)
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
                do_sample=False,
                top_p=None,
                top_k=None,
                temperature=None,
            )
            for row, i in enumerate(idx):
                gen = out[row, enc["input_ids"].shape[1] :].tolist()
                cut = next((k for k, t in enumerate(gen) if t in stops), len(gen))
                answers[i] = tokenizer.decode(gen[:cut], skip_special_tokens=True).strip()
    return answers


def keeping_stopped_rows(fn):
    """Run fn with greedy_decode keeping stopped rows in the batch to the end (drop_finished=False, as before)."""
    import loraflow.evaluate.generation as generation

    original = generation.greedy_decode
    generation.greedy_decode = lambda *a, **k: original(*a, **{**k, "drop_finished": False})
    try:
        return fn()
    finally:
        generation.greedy_decode = original


def compare_decoders(args) -> None:
    from loraflow.evaluate.generation import cpu_decoding, generate
    from loraflow.evaluate.loading import load_for_eval
    from loraflow.model.device import set_threads
    from loraflow.model.loading import load_tokenizer

    threads = set_threads(args.threads)
    model_dir, prompts = ensure_inputs(Path(args.results))
    prompts = prompts[: args.prompts]
    tokenizer = load_tokenizer(str(model_dir))
    model = load_for_eval(str(model_dir), args.adapter)
    fast = load_for_eval(str(model_dir), args.adapter)
    fast_static = cpu_decoding(fast, "auto", args.batch_size)
    plan = {
        "transformers generate (before)": lambda: hf_generate(
            model, tokenizer, prompts, args.batch_size, args.max_new_tokens
        ),
        "greedy_decode, dynamic cache": lambda: generate(
            model, tokenizer, prompts, args.batch_size, args.max_new_tokens
        )[0],
        "greedy_decode, static cache": lambda: generate(
            model, tokenizer, prompts, args.batch_size, args.max_new_tokens, static_cache=True
        )[0],
        "cpu_kernels auto (prepacked + static)": lambda: generate(
            fast, tokenizer, prompts, args.batch_size, args.max_new_tokens, static_cache=fast_static
        )[0],
        "the same, stopped rows kept in the batch": lambda: keeping_stopped_rows(
            lambda: generate(fast, tokenizer, prompts, args.batch_size, args.max_new_tokens, static_cache=fast_static)[
                0
            ]
        ),
    }
    generate(model, tokenizer, prompts[:2], 2, 4)  # warm-up
    generate(fast, tokenizer, prompts[:2], 2, 4)
    times = {k: [] for k in plan}
    texts = {}
    for r in range(args.rounds):
        for name, fn in plan.items():
            t0 = time.perf_counter()
            texts[name] = fn()
            times[name].append(time.perf_counter() - t0)
            print(f"[round {r + 1}] {name:42s} {times[name][-1]:7.1f} s", flush=True)
    print(
        f"model: {model_dir} + {args.adapter or 'no adapter'} | prompts: {len(prompts)} | batch {args.batch_size} | "
        f"max_new_tokens: {args.max_new_tokens} | threads: {threads}"
    )
    ref = texts["transformers generate (before)"]
    base = min(times["transformers generate (before)"])
    for name in plan:
        # the old loop kept a trailing incomplete character at the token cap; compare without it
        same = sum(a.rstrip("\ufffd").strip() == b for a, b in zip(ref, texts[name]))
        print(
            f"{name:42s} best {min(times[name]):7.1f} s  speed-up {base / min(times[name]):.2f}x  identical text "
            f"{same}/{len(prompts)}"
        )


if __name__ == "__main__":
    main()

"""What the trustworthy comparison adds to each evaluate job: validation generation and retention.

Reads the base model and splits of a finished (or data-only) run and, in one process, times what one
evaluate job does: the test part it always did (loss on every test row + generation on the test
rows), the validation part it now adds (loss on every val row + generation on `--val-samples` rows),
and the retention part (the base job asks every item, a run only those the base answers correctly;
the base model stands in for a run here). Prints generated tokens (machine independent) and seconds
for each part and the added cost as a ratio of the test part, measured side by side.

    .venv/bin/python benchmarks/bench_evaluation.py [--results results] [--val-samples 48] [--retention-items 380]

Build what it needs without training anything:
    snakemake results/tokens/meta.json --cores 1 --resources gpu=1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loraflow.evaluate.run import _rows_with_tokens, evaluate_retention, score_split  # noqa: E402
from loraflow.evaluate.settings import EvalSettings  # noqa: E402
from loraflow.model.device import set_threads  # noqa: E402
from loraflow.model.loading import load_tokenizer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--val-samples", type=int, default=48)
    ap.add_argument("--retention-items", type=int, default=380)
    ap.add_argument("--retention-max-new-tokens", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--test-rows",
        type=int,
        default=0,
        help="generate on the first N test rows only (0 = all; for a quick estimate)",
    )
    args = ap.parse_args()
    from loraflow.evaluate.loading import load_for_eval

    set_threads(args.threads)
    res = Path(args.results)
    model_dir = str(res / "base_model")
    tok = load_tokenizer(model_dir)
    model = load_for_eval(model_dir, None)
    meta = str(res / "tokens" / "meta.json")
    parts = {}

    test_rows, test_ex = _rows_with_tokens(str(res / "data/test.jsonl"), str(res / "tokens/test.npz"), meta, model_dir)
    t = time.perf_counter()
    decoding = EvalSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    m, _, _, speed = score_split(model, tok, test_rows, test_ex, args.test_rows, decoding)
    parts["test (loss + generation, as before)"] = (
        time.perf_counter() - t,
        speed["generated_tokens"],
        m["generated_examples"],
    )
    print(
        f"test: {m['generated_examples']} rows, ROUGE-L {m['rougeL']:.2f}, {speed['generated_tokens']} tokens, "
        f"{parts['test (loss + generation, as before)'][0]:.1f}s",
        flush=True,
    )

    val_rows, val_ex = _rows_with_tokens(str(res / "data/val.jsonl"), str(res / "tokens/val.npz"), meta, model_dir)
    t = time.perf_counter()
    m, _, _, speed = score_split(model, tok, val_rows, val_ex, args.val_samples, decoding)
    parts[f"val (loss on {len(val_rows)} rows + generation on {m['generated_examples']})"] = (
        time.perf_counter() - t,
        speed["generated_tokens"],
        m["generated_examples"],
    )
    print(
        f"val: ROUGE-L {m['rougeL']:.2f} on {m['generated_examples']} rows, {speed['generated_tokens']} tokens",
        flush=True,
    )

    t = time.perf_counter()
    summary, rows = evaluate_retention(model, tok, args.retention_items, args.batch_size, args.retention_max_new_tokens)
    parts[f"retention, base job ({summary['items']} items)"] = (
        time.perf_counter() - t,
        summary["generated_tokens"],
        summary["items"],
    )
    correct = {r["id"] for r in rows if r["correct"]}
    print(
        f"retention (base): {summary['score']:.1f} % of {summary['items']} correct "
        f"(en {sum(1 for r in rows if r['correct'] and r['lang'] == 'en')}/{summary['items_en']}, "
        f"zh {sum(1 for r in rows if r['correct'] and r['lang'] == 'zh')}/{summary['items_zh']})",
        flush=True,
    )
    by_kind = {}
    for r in rows:
        k = (r["lang"], r["kind"])
        by_kind.setdefault(k, [0, 0])
        by_kind[k][0] += bool(r["correct"])
        by_kind[k][1] += 1
    print(
        "  by language and kind:",
        ", ".join(f"{lang}/{kind} {c}/{n}" for (lang, kind), (c, n) in sorted(by_kind.items())),
        flush=True,
    )
    t = time.perf_counter()
    summary, _ = evaluate_retention(
        model, tok, args.retention_items, args.batch_size, args.retention_max_new_tokens, only=correct
    )
    parts[f"retention, run job ({summary['items']} base-correct items)"] = (
        time.perf_counter() - t,
        summary["generated_tokens"],
        summary["items"],
    )

    base_s = parts["test (loss + generation, as before)"][0]
    print(f"\n{'part':<52} {'rows':>5} {'tokens':>7} {'seconds':>8} {'s/row':>6} {'x test part':>11}")
    for name, (sec, tokens, rows_) in parts.items():
        print(f"{name:<52} {rows_:>5} {tokens:>7} {sec:>8.1f} {sec / max(rows_, 1):>6.2f} {sec / base_s:>11.2f}")
    added_run = sum(
        sec for name, (sec, _, _) in parts.items() if name.startswith("val") or name.startswith("retention, run")
    )
    added_base = sum(
        sec for name, (sec, _, _) in parts.items() if name.startswith("val") or name.startswith("retention, base")
    )
    print(
        f"\nadded per run job: {added_run:.1f}s ({added_run / base_s:.2f} x the test part); base job: "
        f"{added_base:.1f}s ({added_base / base_s:.2f} x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

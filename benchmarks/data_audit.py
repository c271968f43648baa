"""Run real data sets through the data stages (clean -> format -> split -> tokenise) with the schema's
default (lossless) clean settings and print, per set: rows in, clean, rejected by reason, changes per
fixer, truncated rows, and whether rows in = train + val + test + rejected holds.

    .venv/bin/python benchmarks/data_audit.py --model results/base_model [--data ../shared/data] [--out /tmp/audit]
        [--sets medical_csv,dolly] [--max-length 512] [--examples 3]

--model is a model directory with the tokenizer (the default run's results/base_model, built with
`snakemake --until base_model`); the sets are those of ../shared/data (README there). Every change
and rejection is in <out>/<set>/changes.jsonl and rejected.jsonl; --examples N prints N of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

DEFAULT_COLUMNS = {"messages": "messages", "instruction": "instruction", "input": "input", "output": "output",
                   "question": "question", "answer": "answer", "system": "system"}
# name -> (file, data.* settings)
SETS = {
    "medical_csv": ("zh_medical_dialogue_im_raw_gb18030.csv", {"encoding": "gb18030", "columns": {"question": "ask", "answer": "answer"}}),
    "medical_jsonl": ("zh_medical_dialogue_im.jsonl", {}),
    "cmrc2018": ("zh_cmrc2018_dev_qa.jsonl", {}),
    "cmrc2018_2048": ("zh_cmrc2018_dev_qa.jsonl", {"max_length": 2048}),  # its passages need more than 512 tokens
    "dolly": ("en_dolly15k_subset_nocontext.jsonl", {}),
    "self_instruct": ("en_self_instruct_user_oriented.jsonl", {}),
}


def find_data() -> Path | None:
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return None


def audit_set(name: str, path: Path, settings: dict, model: str, out: Path, max_length: int) -> dict:
    max_length = settings.get("max_length", max_length)
    from loraflow.chatml import format_dataset
    from loraflow.clean import clean_dataset
    from loraflow.split import split_dataset
    from loraflow.tokenization import tokenize_splits

    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    columns = {**DEFAULT_COLUMNS, **settings.get("columns", {})}
    t0 = time.perf_counter()
    stats = clean_dataset(str(path), model, str(d / "clean.jsonl"), str(d / "rejected.jsonl"), str(d / "clean_stats.json"),
                          columns, str(d / "changes.jsonl"), str(d / "clean_report.html"), encoding=settings.get("encoding", "utf-8"),
                          max_tokens=max_length, system_prompt="")
    t_clean = time.perf_counter() - t0
    format_dataset(str(d / "clean.jsonl"), model, str(d / "formatted.jsonl"), str(d / "format_stats.json"), "")
    splits = [str(d / f"{s}.jsonl") for s in ("train", "val", "test")]
    split = split_dataset(str(d / "formatted.jsonl"), str(d / "clean_stats.json"), *splits, str(d / "split_stats.json"),
                          {"train": 0.8, "val": 0.1, "test": 0.1}, 42)
    meta = tokenize_splits(model, *splits, *(str(d / f"{s}.npz") for s in ("train", "val", "test")), str(d / "tokens_meta.json"), max_length)
    truncated_tok = sum(s["truncated"] for s in meta["splits"].values())
    return {"set": name, "clean_stats": stats, "split": split, "truncated_by_tokenize": truncated_tok, "clean_s": round(t_clean, 1),
            "max_length": max_length}


def print_examples(out: Path, name: str, n: int) -> None:
    d = out / name
    changes = [json.loads(line) for line in open(d / "changes.jsonl", encoding="utf-8")]
    by_fixer: dict[str, list] = {}
    for c in changes:
        by_fixer.setdefault(c["fixer"], []).append(c)
    for fixer, items in by_fixer.items():
        for c in items[:n]:
            print(f"    {fixer} line {c['line']} {c['field']}: {c['before'][-60:]!r} -> {c['after'][-60:]!r}")
    rejected = [json.loads(line) for line in open(d / "rejected.jsonl", encoding="utf-8")]
    shown = Counter()
    for r in rejected:
        if shown[r["reason"]] < n:
            shown[r["reason"]] += 1
            print(f"    rejected {r['reason']} line {r['line']}: {r['detail'][:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "results" / "base_model"), help="model directory with the tokenizer")
    parser.add_argument("--data", default=None, help="directory of the real sets (default ../shared/data)")
    parser.add_argument("--out", default="/tmp/loraflow-data-audit")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--examples", type=int, default=0, help="print N examples of every change and rejection")
    args = parser.parse_args(argv)
    data = Path(args.data) if args.data else find_data()
    if data is None or not data.is_dir():
        print("no data directory (../shared/data); pass --data", file=sys.stderr)
        return 1
    if not Path(args.model, "tokenizer_config.json").is_file():
        print(f"{args.model}: no tokenizer; build results/base_model first (snakemake --until base_model)", file=sys.stderr)
        return 1
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    results = []
    for name in args.sets.split(","):
        file, settings = SETS[name]
        results.append(audit_set(name, data / file, settings, args.model, out, args.max_length))
    print(f"\nData audit: default clean settings, tokenize.max_length {args.max_length} (unless noted), overlong truncate, tokenizer {args.model}")
    for r in results:
        s, sp = r["clean_stats"], r["split"]
        o = s.get("overlong", {})
        print(f"\n{r['set']}: {s['file']['file_format']} {s['file']['encoding']}, rows {s['row_formats']}")
        print(f"  rows in {s['rows_in']}, clean {s['clean']}, rejected {s['rejected']} {s['rejected_by_reason']}")
        print(f"  changes per fixer (rows): {s['fixed'] or 'none'}")
        print(f"  over {r['max_length']} tokens: {o.get('over_max_length')} ({100 * o.get('share', 0):.1f} %), truncated {o.get('truncated')}"
              f" (tokenise stage cut {r['truncated_by_tokenize']}), prompt too long {o.get('prompt_too_long')}")
        print(f"  split train/val/test {sp['train']}/{sp['val']}/{sp['test']}, rows in = train+val+test+rejected: {sp['conserved']}"
              f"; clean stage {r['clean_s']} s")
        if args.examples:
            print_examples(out, r["set"], args.examples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

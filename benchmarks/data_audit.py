"""Run real data sets through the data stages (clean -> format -> split -> tokenise) with the schema's
default (lossless) clean settings and print, per set: rows in, clean, rejected by reason, changes per
fixer, truncated rows, and whether rows in = train + val + test + rejected holds.

    .venv/bin/python benchmarks/data_audit.py --model results/base_model [--data DIR] [--out data-audit]
        [--sets medical_csv,dolly] [--max-length 512] [--examples 3]

--model is a model directory with the tokenizer (the default run's results/base_model, built with
`snakemake --until base_model`); --data (or the environment variable LORAFLOW_DATA_DIR) is the
directory of the real sets (the file names are SETS and CLASSIFY_SETS below). Every change
and rejection is in <out>/<set>/changes.jsonl and rejected.jsonl; --examples N prints N of each.

Per set it also checks, against a fresh reading of the source file, that every clean row's messages
are its source record's fields unchanged unless changes.jsonl records the change ("kept rows changed
without a record" must be 0), and that every rejected row has a reason and a detail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

DEFAULT_COLUMNS = {
    "messages": "messages",
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "question": "question",
    "answer": "answer",
    "system": "system",
}
# name -> (file, data.* settings)
SETS = {
    "medical_csv": (
        "zh_medical_dialogue_im_raw_gb18030.csv",
        {"encoding": "gb18030", "columns": {"question": "ask", "answer": "answer"}},
    ),
    "medical_jsonl": ("zh_medical_dialogue_im.jsonl", {}),
    "cmrc2018": ("zh_cmrc2018_dev_qa.jsonl", {}),
    "cmrc2018_2048": ("zh_cmrc2018_dev_qa.jsonl", {"max_length": 2048}),  # its passages need more than 512 tokens
    "dolly": ("en_dolly15k_subset_nocontext.jsonl", {}),
    "self_instruct": ("en_self_instruct_user_oriented.jsonl", {}),
}
#: classification sets (task seq_cls: its own clean stage, which normalises text by design)
CLASSIFY_SETS = {"sst2": "en_sst2_test.jsonl"}


def find_data() -> Path | None:
    where = os.environ.get("LORAFLOW_DATA_DIR")
    return Path(where) if where and Path(where).is_dir() else None


def kept_and_explained(path: Path, settings: dict, d: Path) -> dict:
    """Clean rows whose messages differ from their source record without a change record (must be 0),
    rows changed with one, and rejected rows without a reason or detail (must be 0)."""
    from loraflow.data.conversations import to_messages
    from loraflow.data.readers import iter_raw_rows

    columns = {**DEFAULT_COLUMNS, **settings.get("columns", {})}
    source = {raw.record: raw for raw in iter_raw_rows(str(path), encoding=settings.get("encoding", "utf-8"))}
    changed_lines = {
        c["line"] for c in map(json.loads, open(d / "changes.jsonl", encoding="utf-8")) if c["fixer"] != "truncate"
    }
    silent = recorded = 0
    for row in map(json.loads, open(d / "clean.jsonl", encoding="utf-8")):
        raw = source[row["source"]["record"]]
        same = to_messages(raw.data, columns, raw.where) == row["messages"]
        silent += not same and row["line"] not in changed_lines
        recorded += not same and row["line"] in changed_lines
    rejected = [json.loads(line) for line in open(d / "rejected.jsonl", encoding="utf-8")]
    unexplained = sum(not (r.get("reason") and r.get("detail")) for r in rejected)
    return {"changed_silently": silent, "changed_with_record": recorded, "rejected_unexplained": unexplained}


def audit_set(name: str, path: Path, settings: dict, model: str, out: Path, max_length: int) -> dict:
    max_length = settings.get("max_length", max_length)
    from loraflow.data.chatml import format_dataset
    from loraflow.data.clean import clean_dataset
    from loraflow.data.readers import DataError
    from loraflow.data.settings import CleanOutputs, LengthSettings, ReaderSettings, SplitFiles, TokenFiles
    from loraflow.data.split import split_dataset
    from loraflow.data.tokenization import tokenize_splits

    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    columns = {**DEFAULT_COLUMNS, **settings.get("columns", {})}
    t0 = time.perf_counter()
    out_files = CleanOutputs(
        str(d / "clean.jsonl"),
        str(d / "rejected.jsonl"),
        str(d / "clean_stats.json"),
        str(d / "changes.jsonl"),
        str(d / "clean_report.html"),
    )
    stats = clean_dataset(
        str(path),
        model,
        out_files,
        ReaderSettings(columns, encoding=settings.get("encoding", "utf-8")),
        lengths=LengthSettings(max_tokens=max_length, system_prompt=""),
    )
    t_clean = time.perf_counter() - t0
    format_dataset(str(d / "clean.jsonl"), model, str(d / "formatted.jsonl"), str(d / "format_stats.json"), "")
    splits = [str(d / f"{s}.jsonl") for s in ("train", "val", "test")]
    try:
        split = split_dataset(
            str(d / "formatted.jsonl"),
            str(d / "clean_stats.json"),
            *splits,
            str(d / "split_stats.json"),
            {"train": 0.8, "val": 0.1, "test": 0.1},
            42,
        )
    except DataError as err:  # e.g. a tokenizer that leaves too few rows: reported, the other sets still run
        split = {"train": 0, "val": 0, "test": 0, "conserved": f"not split ({err})"}
        truncated_tok = None
    else:
        meta = tokenize_splits(
            model,
            SplitFiles(*splits),
            TokenFiles(*(str(d / f"{s}.npz") for s in ("train", "val", "test")), str(d / "tokens_meta.json")),
            max_length,
        )
        truncated_tok = sum(s["truncated"] for s in meta["splits"].values())
    return {
        "set": name,
        "clean_stats": stats,
        "split": split,
        "truncated_by_tokenize": truncated_tok,
        "clean_s": round(t_clean, 1),
        "max_length": max_length,
        "kept": kept_and_explained(path, settings, d),
    }


def audit_classification(name: str, path: Path, out: Path) -> dict:
    """The seq_cls clean stage on a text/label set, with the content check applied to its output."""
    from loraflow.data.conservation import check_coverage, reference_digests
    from loraflow.data.readers import iter_raw_rows
    from loraflow.tasks.seq_cls.data import clean_rows

    stream, raws = iter_raw_rows(str(path)), {}

    def tap():
        for raw in stream:
            raws[raw.line] = raw
            yield raw

    clean, rejected, stats = clean_rows(tap(), str(path))
    records = check_coverage(str(path), reference_digests(stream.info), [raws[r["line"]] for r in (*clean, *rejected)])
    normalised = sum(raws[c["line"]].data["text"] != c["text"] for c in clean)
    unexplained = sum(not (r.get("reason") and r.get("detail")) for r in rejected)
    return {"set": name, "stats": stats, "records": records, "normalised": normalised, "unexplained": unexplained}


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
    parser.add_argument(
        "--model", default=str(REPO / "results" / "base_model"), help="model directory with the tokenizer"
    )
    parser.add_argument("--data", default=None, help="directory of the real sets (default: $LORAFLOW_DATA_DIR)")
    parser.add_argument("--out", default="data-audit")
    parser.add_argument("--sets", default=",".join([*SETS, *CLASSIFY_SETS]))
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--examples", type=int, default=0, help="print N examples of every change and rejection")
    args = parser.parse_args(argv)
    data = Path(args.data) if args.data else find_data()
    if data is None or not data.is_dir():
        print("no data directory; pass --data or set LORAFLOW_DATA_DIR", file=sys.stderr)
        return 1
    if not Path(args.model, "tokenizer_config.json").is_file():
        print(
            f"{args.model}: no tokenizer; build results/base_model first (snakemake --until base_model)",
            file=sys.stderr,
        )
        return 1
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    results = []
    classified = []
    for name in args.sets.split(","):
        if name in CLASSIFY_SETS:
            classified.append(audit_classification(name, data / CLASSIFY_SETS[name], out))
            continue
        file, settings = SETS[name]
        results.append(audit_set(name, data / file, settings, args.model, out, args.max_length))
    print(
        f"\nData audit: default clean settings, tokenize.max_length {args.max_length} (unless noted), overlong "
        f"truncate, tokenizer {args.model}"
    )
    for r in results:
        s, sp = r["clean_stats"], r["split"]
        o = s.get("overlong", {})
        print(f"\n{r['set']}: {s['file']['file_format']} {s['file']['encoding']}, rows {s['row_formats']}")
        print(f"  rows in {s['rows_in']}, clean {s['clean']}, rejected {s['rejected']} {s['rejected_by_reason']}")
        print(f"  changes per fixer (rows): {s['fixed'] or 'none'}")
        print(
            f"  over {r['max_length']} tokens: {o.get('over_max_length')} ({100 * o.get('share', 0):.1f} %), truncated "
            f"{o.get('truncated')} (tokenise stage cut {r['truncated_by_tokenize']}), prompt too long "
            f"{o.get('prompt_too_long')}"
        )
        print(
            f"  split train/val/test {sp['train']}/{sp['val']}/{sp['test']}, rows in = train+val+test+rejected: "
            f"{sp['conserved']}; clean stage {r['clean_s']} s"
        )
        k = r["kept"]
        print(
            f"  content check (source records {s.get('source_records')}): {s['conserved']}; kept rows changed without "
            f"a record: {k['changed_silently']}, with a record: {k['changed_with_record']}; rejections without reason: "
            f"{k['rejected_unexplained']}"
        )
        if args.examples:
            print_examples(out, r["set"], args.examples)
    for r in classified:
        s = r["stats"]
        print(
            f"\n{r['set']} (seq_cls clean stage): rows in {s['rows_in']}, clean {s['clean']}, rejected {s['rejected']} "
            f"{s['rejected_by_reason']}, labels {s['labels']}"
        )
        print(
            f"  content check (source records {r['records']}): True; texts normalised by seq_cls (by design): "
            f"{r['normalised']}; rejections without reason: {r['unexplained']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

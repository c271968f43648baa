"""The `loraflow` command.

  loraflow init DATAFILE [-o config.yaml]   inspect a data file, write a config that reads it
  loraflow runs [RESULTS_DIR]               list the runs of a sweep with their status
  loraflow best [RESULTS_DIR]               the best run of results/comparison.csv and where its files are
  loraflow push RUN --repo ID [--gguf]      upload a run's adapter package (or GGUF export) to the Hugging Face Hub
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

# Column names people use, most specific first (matched case-insensitively).
PROMPT_NAMES = ("question", "prompt", "query", "ask", "input", "title", "problem", "q", "user", "human", "text")
ANSWER_NAMES = ("answer", "response", "output", "completion", "reply", "target", "solution", "a", "assistant", "gpt", "label")
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category")
TEXT_NAMES = ("text", "sentence", "review", "content", "document")
CONVERSATION_NAMES = ("messages", "conversations", "conversation", "dialog", "dialogue", "turns", "chat")
SAMPLE_ROWS = 500


class CliError(Exception):
    expected_error = True


# --------------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------------


def detect_encoding(path: str) -> tuple[str, str]:
    """(encoding, how it was found): a byte-order mark, valid UTF-8, or charset detection's guess."""
    from loraflow.data.readers import sniff_bom, suggest_encoding

    raw = Path(path).read_bytes()
    bom, _ = sniff_bom(raw)
    if bom:
        return bom, "byte-order mark"
    try:
        raw.decode("utf-8")
        return "utf-8", "valid UTF-8"
    except UnicodeDecodeError:
        pass
    guess = suggest_encoding(raw)
    if guess is None:
        raise CliError(f"{path}: cannot tell the encoding (not UTF-8, and charset detection has no guess); set data.encoding by hand")
    if guess.replace("_", "").lower() in ("gbk", "gb2312", "cp936", "hz"):
        guess = "gb18030"  # the superset: decodes every GBK/GB2312 file
    return guess, "charset detection"


def _find(keys: dict[str, str], names: tuple[str, ...], exclude: set[str] = frozenset()) -> str | None:
    for name in names:
        if name in keys and keys[name] not in exclude:
            return keys[name]
    return None


def detect_columns(rows: list[dict]) -> tuple[dict[str, str], str]:
    """data.columns entries (only those that differ from the defaults) and the row shape found."""
    keys_seen = Counter(k for row in rows for k in row)
    common = [k for k, n in keys_seen.items() if n >= 0.5 * len(rows)]
    lower = {k.lower(): k for k in common}
    if "messages" in lower:
        return ({} if lower["messages"] == "messages" else {"messages": lower["messages"]}), "messages"
    if "conversations" in lower:
        return ({} if lower["conversations"] == "conversations" else {"conversations": lower["conversations"]}), "sharegpt"
    conv = _find(lower, CONVERSATION_NAMES)
    if conv and all(isinstance(row.get(conv), list) for row in rows[:20]):
        first_turn = next((row[conv][0] for row in rows if row.get(conv)), {})
        key = "conversations" if isinstance(first_turn, dict) and "from" in first_turn else "messages"
        return {key: conv}, "sharegpt" if key == "conversations" else "messages"
    if "instruction" in lower and "output" in lower:
        columns = {k: lower[k] for k in ("instruction", "output", "input", "system", "history") if k in lower and lower[k] != k}
        return columns, "alpaca"
    label, text = _find(lower, LABEL_NAMES), _find(lower, TEXT_NAMES)
    if label and text and not _find(lower, tuple(n for n in ANSWER_NAMES if n != "label")):
        return {"text_column": text, "label_column": label}, "classification"
    answer = _find(lower, ANSWER_NAMES)
    prompt = _find(lower, PROMPT_NAMES, {answer} if answer else set())
    if not (prompt and answer):
        raise CliError(
            f"cannot find a prompt and an answer column among {', '.join(common) or 'no common columns'}; "
            "write data.columns by hand (question: <prompt column>, answer: <answer column>), see docs/data.md"
        )
    columns = {}
    if prompt != "question":
        columns["question"] = prompt
    if answer != "answer":
        columns["answer"] = answer
    if "system" in lower:
        columns["system"] = lower["system"]
    return columns, "qa"


def inspect_data(path: str) -> dict:
    """What `init` finds out about a data file: format, encoding, delimiter, columns, row shapes."""
    from loraflow.data.readers import DataError, SourceInfo, iter_raw_rows, to_conversation

    if not Path(path).is_file():
        raise CliError(f"{path}: no such file")
    info = SourceInfo(path)
    encoding, how = ("parquet", "binary") if Path(path).suffix.lower() in (".parquet", ".pq") else detect_encoding(path)
    rows, bad = [], 0
    try:
        for raw in iter_raw_rows(path, "auto", encoding if encoding != "parquet" else "utf-8", None, info):
            if raw.error or not isinstance(raw.data, dict):
                bad += 1
            else:
                rows.append(raw.data)
            if len(rows) + bad >= SAMPLE_ROWS:
                break
    except DataError as err:
        raise CliError(str(err)) from None
    if not rows:
        raise CliError(f"{path}: no readable rows in the first {SAMPLE_ROWS} ({bad} malformed)")
    columns, shape = detect_columns(rows)
    if shape == "classification":
        return {
            "path": path, "file_format": info.file_format, "encoding": info.encoding or encoding, "encoding_found_by": how,
            "delimiter": info.delimiter, "columns": columns, "shape": shape, "rows_sampled": len(rows) + bad,
            "malformed": bad, "row_formats": {"text + label": len(rows)}, "row_problems": {}, "notes": list(info.notes),
        }
    mapping = {"messages": "messages", "instruction": "instruction", "input": "input", "output": "output",
               "question": "question", "answer": "answer", "system": "system", **columns}
    formats, problems = Counter(), Counter()
    for i, row in enumerate(rows):
        try:
            formats[to_conversation(row, mapping, f"row {i + 1}").row_format] += 1
        except Exception as err:  # RowError: counted, shown as a summary
            problems[getattr(err, "reason", type(err).__name__)] += 1
    return {
        "path": path, "file_format": info.file_format, "encoding": info.encoding or encoding, "encoding_found_by": how,
        "delimiter": info.delimiter, "columns": columns, "shape": shape, "rows_sampled": len(rows) + bad,
        "malformed": bad, "row_formats": dict(formats), "row_problems": dict(problems), "notes": list(info.notes),
    }


def render_config(found: dict) -> str:
    """A complete config (every key, schema defaults) whose data section reads the inspected file."""
    import yaml

    from loraflow.config import validate_config

    encoding = found["encoding"] if found["file_format"] != "parquet" else "utf-8"
    if found["shape"] == "classification":  # text + label rows: task seq_cls (docs/seq_cls.md)
        if found["file_format"] not in ("jsonl", "json", "csv"):
            raise CliError(f"{found['path']}: task seq_cls reads .jsonl, .json and .csv files; convert the file first")
        config = validate_config({"task": "seq_cls", "classify": {"data": found["path"], "format": found["file_format"],
                                                                   "encoding": encoding, **found["columns"]}})
    else:
        data = {"path": found["path"], "format": found["file_format"], "encoding": encoding,
                "delimiter": found["delimiter"], "system_prompt": ""}
        if found["columns"]:
            data["columns"] = dict(found["columns"])
        config = validate_config({"data": data})
        config["data"].pop("builtin_rows", None)
    head = [
        f"# Written by `loraflow init {found['path']}`. Detected: {found['file_format']} file, encoding "
        f"{found['encoding']} ({found['encoding_found_by']})" + (f", delimiter {found['delimiter']!r}" if found["delimiter"] else "")
        + f", rows shaped as {found['shape']} ({found['row_formats']} in the first {found['rows_sampled']} rows).",
        "# Run: snakemake --configfile THIS_FILE --cores 1 --resources gpu=1   (every key: workflow/schemas/config.schema.yaml)",
    ]
    if found["shape"] == "classification":
        head.append("# Text + label rows: task seq_cls (docs/seq_cls.md).")
    else:
        head.append("# The clean stage keeps every character of your text; the clean.* fixers are off (docs/data.md).")
    for note in found["notes"]:
        head.append(f"# Note: {note}")
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return "\n".join(head) + "\n" + body


def cmd_init(args) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; choose another file with -o (and run snakemake --configfile {out.name}), or --force")
    found = inspect_data(args.data_file)
    text = render_config(found)
    from loraflow.io import write_text

    write_text(out, text)
    print(f"{args.data_file}: {found['file_format']}, encoding {found['encoding']} ({found['encoding_found_by']})"
          + (f", delimiter {found['delimiter']!r}" if found["delimiter"] else "")
          + f"; rows: {found['shape']} {found['row_formats']}" + (f"; columns {found['columns']}" if found["columns"] else ""))
    if found["row_problems"] or found["malformed"]:
        print(f"  in the first {found['rows_sampled']} rows: {found['malformed']} malformed, problems {found['row_problems']}"
              " (the clean stage reports each with file and line)")
    print(f"wrote {out}; run: snakemake --configfile {out} --cores 1 --resources gpu=1")
    return 0


# --------------------------------------------------------------------------------------------------
# runs / best
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _comparison(results: Path) -> list[dict]:
    path = results / "comparison.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run_status(results: Path, run: str) -> str:
    d = results / "runs" / run
    if (d / "merge_check.json").is_file():
        check = _read_json(d / "merge_check.json") or {}
        return "merged" if check.get("passed", True) else "merge check FAILED"
    if (d / "eval.json").is_file():
        return "evaluated"
    if (d / "adapter").is_dir() or (d / "train_stats.json").is_file():
        return "trained"
    state = _read_json(results / "checkpoints" / run / "state.json")
    if state:
        return f"training (checkpoint at step {state.get('step', '?')})"
    log = results / "logs" / "train" / f"{run}.log"
    if log.is_file():
        text = log.read_text(encoding="utf-8", errors="replace")
        return "failed (see " + str(log) + ")" if ("Traceback" in text or " ERROR " in text) else "training (no checkpoint yet)"
    return "planned"


def list_runs(results_dir: str) -> list[dict]:
    results = Path(results_dir)
    names = set()
    if (results / "runs").is_dir():
        names |= {p.name for p in (results / "runs").iterdir() if p.is_dir()}
    if (results / "checkpoints").is_dir():
        names |= {p.name for p in (results / "checkpoints").iterdir() if p.is_dir()}
    if (results / "logs" / "train").is_dir():
        names |= {p.stem for p in (results / "logs" / "train").glob("*.log")}
    table = {row["run"]: row for row in _comparison(results)}
    names |= {n for n in table if n != "base"}
    out = []
    for name in sorted(names):
        row = table.get(name, {})
        status = run_status(results, name)
        if row.get("status", "ok") not in ("ok", ""):
            status = row["status"]
        stats = _read_json(results / "runs" / name / "train_stats.json") or {}
        metrics = _read_json(results / "runs" / name / "eval.json") or {}
        out.append({"run": name, "status": status, "val_loss": stats.get("best_eval_loss"),
                    "rougeL": metrics.get("rougeL"), "best": row.get("best", "")})
    return out


def _fmt(v) -> str:
    if v is None or v == "":
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_runs(args) -> int:
    results = Path(args.results_dir)
    if not results.is_dir():
        raise CliError(f"{results}: no such results directory (results_dir in the config)")
    runs = list_runs(args.results_dir)
    if not runs:
        print(f"{results}: no runs yet")
        return 0
    cols = ["run", "status", "val_loss", "rougeL", "best"]
    cells = [[_fmt(r[c]) for c in cols] for r in runs]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def cmd_status(args) -> int:
    from loraflow.status import status_lines

    if not Path(args.results_dir).is_dir():
        raise CliError(f"{args.results_dir}: no such results directory (results_dir in the config)")
    print("\n".join(status_lines(args.results_dir)))
    return 0


def best_run(results_dir: str) -> dict:
    results = Path(results_dir)
    rows = _comparison(results)
    if not rows:
        raise CliError(f"{results / 'comparison.csv'}: not found; the sweep has not reached the table yet (loraflow runs {results_dir})")
    best = [r for r in rows if r.get("best")]
    if not best:
        raise CliError(f"{results / 'comparison.csv'}: no run is marked best (no run finished?)")
    return best[0]


def cmd_best(args) -> int:
    row = best_run(args.results_dir)
    results = Path(args.results_dir)
    name = row["run"]
    print(f"{name}  ({row['best']})")
    shown = ["method", "r", "alpha", "targets", "val_loss", "test_loss", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "accuracy", "macro_f1"]
    print("  " + ", ".join(f"{k} {row[k]}" for k in shown if row.get(k) not in (None, "")))
    for what in ("adapter", "merged"):
        path = results / "runs" / name / what
        if path.exists():
            print(f"  {what}: {path}")
    return 0


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loraflow", description="LoRA fine-tuning sweeps with Snakemake (see README.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="inspect a data file and write a config that reads it")
    p.add_argument("data_file")
    p.add_argument("-o", "--output", default="config.yaml", help="config file to write (default config.yaml; never overwritten without --force)")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("runs", help="list the runs of a results directory with their status")
    p.add_argument("results_dir", nargs="?", default="results")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("status", help="where a sweep stands: each run's state, progress and ETA (works while Snakemake runs)")
    p.add_argument("results_dir", nargs="?", default="results")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("best", help="the best run of results/comparison.csv")
    p.add_argument("results_dir", nargs="?", default="results")
    p.set_defaults(func=cmd_best)
    from loraflow.ship.push import add_parser as add_push_parser

    add_push_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"loraflow {args.command}: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if getattr(err, "expected_error", False) or type(err).__name__ == "ConfigError":
            print(f"loraflow {args.command}: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())

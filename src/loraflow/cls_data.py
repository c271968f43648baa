"""Data of task seq_cls: read text + label rows, clean them, split them stratified by label.

Rows come from JSONL, JSON or CSV (loraflow.readers, so a malformed line names its file and line);
the text and label columns are configurable. Labels may be strings ("positive") or integers (IMDB's
0/1); they are kept as strings and ordered by `classify.labels`, else sorted (numerically when they
are all integers), which fixes id2label. Every input row ends in exactly one of train, val, test or
rejected.jsonl, and both stages check it (`conserved: true`).

`check_config` holds the seq_cls checks that need to fail before any job runs; it is imported by the
Snakefile at parse time, so this module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from loraflow.clean import normalize_text
from loraflow.config import ConfigError
from loraflow.io import read_json, read_jsonl, write_json, write_jsonl
from loraflow.readers import DataError, RawRow, RowError, iter_raw_rows

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SEQ_CLS_METHODS = ("lora", "dora", "rslora")  # grid methods of seq_cls (their peft flags: methods.LORA_FLAGS)
# Problems with the file's structure (stop, or reject with on_bad_row: reject); the rest are always rejected.
STRUCTURAL = {"bad_json", "bad_encoding", "bad_csv", "bad_row", "missing_columns", "wrong_type"}


def check_method(method: str) -> str:
    """The grid method if seq_cls has it; anything but lora, dora and rslora is an error here."""
    if method not in SEQ_CLS_METHODS:
        raise ConfigError(
            f"config key grid.method: {method!r} is not available with task seq_cls; use one of {', '.join(SEQ_CLS_METHODS)}"
        )
    return method


def check_config(config: dict) -> None:
    """seq_cls checks a JSON schema cannot express (the Snakefile runs them before any job)."""
    for method in config["grid"]["method"]:
        check_method(method)
    if config.get("combine"):  # adapter combinations are a causal_lm feature
        raise ConfigError("config key combine: combining adapters is not available with task seq_cls")
    cls = config["classify"]
    if cls["data"] != "builtin" and not Path(cls["data"]).is_file():
        raise ConfigError(f"config key classify.data: data file {cls['data']!r} does not exist")
    model = cls["base_model"]
    if model != "builtin" and model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"config key classify.base_model: {model!r} is not a directory")
    if len(set(cls["labels"])) != len(cls["labels"]):
        raise ConfigError(f"config key classify.labels: duplicate labels {cls['labels']}")


def normalize_label(value) -> str | None:
    """A label as a string ('positive', 1 -> '1'); None when missing or empty."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError("wrong_type", f"label must be a string or an integer, got {type(value).__name__}")
    if isinstance(value, float):
        if not value.is_integer():
            raise RowError("wrong_type", f"label must be a string or an integer, got {value!r}")
        value = int(value)
    label = str(value).strip()
    return label or None


def label_order(found: Iterable[str], configured: list | None = None) -> list[str]:
    """The label list (index = class id): `configured` if given, else sorted; numerically if all integers."""
    if configured:
        return [str(x) for x in configured]
    found = set(found)
    if all(x.lstrip("-").isdigit() for x in found):
        return sorted(found, key=int)
    return sorted(found)


def _clean_row(raw: RawRow, where: str, text_column: str, label_column: str, max_chars: int, allowed: set[str] | None):
    """(text, label) of a usable row; raises RowError with the rejection reason otherwise."""
    if raw.error:
        raise raw.error
    row = raw.data
    if not isinstance(row, dict):
        raise RowError("bad_row", f"{where}: expected an object, got {type(row).__name__}")
    if text_column not in row:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise RowError("missing_columns", f"{where}: no column {text_column!r} (its keys: {keys}; set classify.text_column)")
    text = row[text_column]
    if text is not None and not isinstance(text, str):
        raise RowError("wrong_type", f"{where}: field {text_column!r} must be a string, got {type(text).__name__}")
    try:
        label = normalize_label(row.get(label_column))
    except RowError as err:
        raise RowError(err.reason, f"{where}: field {label_column!r}: {err.detail}") from None
    text = normalize_text(text or "")
    if not text:
        raise RowError("empty_text", f"no text in column {text_column!r}")
    if label is None:
        raise RowError("missing_label", f"empty label in column {label_column!r}" if label_column in row else f"no column {label_column!r}")
    if allowed is not None and label not in allowed:
        raise RowError("unknown_label", f"label {label!r} is not in classify.labels {sorted(allowed)}")
    if len(text) > max_chars:
        raise RowError("too_long", f"{len(text)} characters (> classify.max_chars={max_chars})")
    return text, label


def clean_rows(
    rows: Iterable[RawRow], source: str, text_column: str = "text", label_column: str = "label", on_bad_row: str = "error",
    max_chars: int = 2000, dedup: bool = True, labels: list | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """Pure cleaning logic: (clean rows, rejected rows, stats); rows in = clean + rejected."""
    allowed = {str(x) for x in labels} if labels else None
    clean, rejected, seen = [], [], {}
    rows_in = 0
    for raw in rows:
        rows_in += 1
        where = f"{source}:{raw.line}"
        try:
            text, label = _clean_row(raw, where, text_column, label_column, max_chars, allowed)
            if dedup and text in seen:
                first_line, first_label = seen[text]
                if first_label == label:
                    raise RowError("duplicate", f"same text as line {first_line}")
                raise RowError("label_conflict", f"same text as line {first_line}, which is labelled {first_label!r}, not {label!r}")
            seen.setdefault(text, (raw.line, label))
        except RowError as err:
            if err.reason in STRUCTURAL and on_bad_row == "error":
                detail = err.detail if err.detail.startswith(source) else f"{where}: {err.detail}"
                raise DataError(f"{detail} (set data.on_bad_row: reject to skip such rows with a reason)") from None
            rejected.append({"line": raw.line, "reason": err.reason, "detail": err.detail, "row": raw.data})
            continue
        clean.append({"id": str(raw.line), "line": raw.line, "text": text, "label": label})
    if rows_in == 0:
        raise DataError(f"{source}: no data rows found (empty file?)")
    if not clean:
        reasons = Counter(r["reason"] for r in rejected)
        raise DataError(f"{source}: all {rows_in} rows were rejected ({dict(reasons)}); check classify.text_column "
                        f"({text_column!r}) and classify.label_column ({label_column!r})")
    stats = {
        "input": source, "rows_in": rows_in, "clean": len(clean), "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
        "labels": dict(sorted(Counter(r["label"] for r in clean).items())),
    }
    stats["conserved"] = rows_in == len(clean) + len(rejected)
    if not stats["conserved"]:
        raise AssertionError(f"row conservation broken: {stats}")
    return clean, rejected, stats


def clean_classification_data(
    data_path: str, out_clean: str, out_rejected: str, out_stats: str, text_column: str = "text", label_column: str = "label",
    data_format: str = "auto", encoding: str = "utf-8", on_bad_row: str = "error", max_chars: int = 2000, dedup: bool = True,
    labels: list | None = None,
) -> dict:
    """Clean stage entry point."""
    clean, rejected, stats = clean_rows(
        iter_raw_rows(data_path, data_format, encoding), data_path, text_column, label_column, on_bad_row, max_chars, dedup, labels
    )
    write_jsonl(out_clean, clean)
    write_jsonl(out_rejected, rejected)
    write_json(out_stats, stats)
    log.info("clean: %d rows in, %d clean, %d rejected %s", stats["rows_in"], stats["clean"], stats["rejected"], stats["rejected_by_reason"])
    return stats


def _split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Rows per split for one label: floors, then the leftover rows to the largest remainders."""
    exact = {s: fractions[s] * n for s in SPLITS}
    counts = {s: int(exact[s]) for s in SPLITS}
    for s in sorted(SPLITS, key=lambda s: -(exact[s] - counts[s]))[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def stratified_split(rows: list[dict], fractions: dict[str, float], seed: int, labels: list[str]) -> dict[str, list[dict]]:
    """Split every label's rows by `fractions` (seeded), so each split has the label mix of the whole.
    Depends only on content and seed, not on row order; rows keep their file order within a split."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    rng = random.Random(seed)
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for label in labels:
        group = sorted(by_label.get(label, []), key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())
        rng.shuffle(group)
        start = 0
        for split, k in _split_counts(len(group), fractions).items():
            out[split].extend(group[start : start + k])
            start += k
    for split in SPLITS:
        if not out[split]:
            raise ValueError(f"split {split!r} is empty: {len(rows)} rows are too few for fractions {fractions} (config key split)")
        out[split].sort(key=lambda r: r["line"])
    return out


def split_classification_data(
    clean_path: str, clean_stats_path: str, out_train: str, out_val: str, out_test: str, out_labels: str, out_stats: str,
    fractions: dict, seed: int, labels: list | None = None,
) -> dict:
    """Split stage entry point: train/val/test JSONL (rows gain `label_id`), labels.json, split_stats.json."""
    rows = read_jsonl(clean_path)
    order = label_order((r["label"] for r in rows), labels)
    if len(order) < 2:
        raise DataError(f"{clean_path}: only one label ({order}) among the clean rows; classification needs at least two")
    label2id = {label: i for i, label in enumerate(order)}
    for row in rows:
        row["label_id"] = label2id[row["label"]]
    parts = stratified_split(rows, fractions, seed, order)
    for split, path in zip(SPLITS, (out_train, out_val, out_test)):
        write_jsonl(path, parts[split])
    write_json(out_labels, {"labels": order, "id2label": {str(i): label for i, label in enumerate(order)}, "label2id": label2id})
    clean_stats = read_json(clean_stats_path)
    counts = {s: len(parts[s]) for s in SPLITS}
    stats = {
        "rows_in": clean_stats["rows_in"], **counts, "rejected": clean_stats["rejected"],
        "fractions": {s: round(k / len(rows), 4) for s, k in counts.items()},
        "labels_per_split": {s: dict(Counter(r["label"] for r in parts[s])) for s in SPLITS},
        "seed": seed,
    }
    stats["conserved"] = stats["rows_in"] == sum(counts.values()) + stats["rejected"]
    if not stats["conserved"]:
        raise AssertionError(f"row conservation broken: {stats}")
    write_json(out_stats, stats)
    log.info("split: %s", stats)
    return stats

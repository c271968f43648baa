"""Data of task seq_cls: read text + label rows, clean them, split them stratified by label, with the
skeleton every task shares (loraflow.data.triage.triage_rows, loraflow.data.split.stratified_split and
write_splits); what is the task's own here is how a row becomes text + label, and the label order.

Rows come from JSONL, JSON or CSV (loraflow.data.readers, so a malformed line names its file and line);
the text and label columns are configurable. Labels may be strings ("positive") or integers (IMDB's
0/1); they are kept as strings and ordered by `classify.labels`, else sorted (numerically when they
are all integers), which fixes id2label. Every input row ends in exactly one of train, val, test or
rejected.jsonl, and both stages check it (`conserved: true`).

`check_config` holds the seq_cls checks that need to fail before any job runs; it is imported by the
Snakefile at parse time, so this module imports nothing heavy.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from loraflow.config import ConfigError, missing_file
from loraflow.data.readers import DataError, RawRow, RowError, iter_raw_rows
from loraflow.data.settings import CleanOutputs, SplitOutputs
from loraflow.data.split import SPLITS, stratified_split, write_splits
from loraflow.data.triage import check_conserved, triage_rows
from loraflow.io import read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

SEQ_CLS_METHODS = ("lora", "dora", "rslora")  # grid methods of seq_cls (their peft flags: methods.LORA_FLAGS)


def check_method(method: str) -> str:
    """The grid method if seq_cls has it; anything but lora, dora and rslora is an error here."""
    if method not in SEQ_CLS_METHODS:
        raise ConfigError(
            f"config key grid.method: {method!r} is not available with task seq_cls; use one of "
            f"{', '.join(SEQ_CLS_METHODS)}"
        )
    return method


def check_config(config: dict) -> None:
    """seq_cls checks a JSON schema cannot express (the Snakefile runs them before any job)."""
    for method in config["grid"]["method"]:
        check_method(method)
    if config.get("combine"):  # adapter combinations are a causal_lm feature
        raise ConfigError("config key combine: combining adapters is not available with task seq_cls")
    if config["train"].get("replay"):  # rehearsal of general chats is a causal_lm feature
        raise ConfigError("config key train.replay: replay of general conversations is not available with task seq_cls")
    if (config.get("reduce_intruders") or {}).get("runs"):
        raise ConfigError("config key reduce_intruders.runs: intruder reduction is not available with task seq_cls")
    cls = config["classify"]
    if cls["data"] != "builtin" and not Path(cls["data"]).is_file():
        raise ConfigError(f"config key classify.data: {missing_file(cls['data'])}")
    model = cls["base_model"]
    if model != "builtin" and model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"config key classify.base_model: {model!r} is not a directory")
    if len(set(cls["labels"])) != len(cls["labels"]):
        raise ConfigError(f"config key classify.labels: duplicate labels {cls['labels']}")


_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_SYMBOL_RUN = re.compile(r"([^\w\s])\1{3,}")
_SPACES = re.compile(r"[ \t\u3000]+")
_NEWLINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """The aggressive normaliser used for classification inputs: NFKC, HTML tags and entities removed,
    control/format characters removed, symbol runs and whitespace collapsed. Not used by the chat data
    stages, which are lossless (loraflow.data.textfix)."""
    text = html.unescape(_TAG.sub(" ", text))
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf"))
    text = _SYMBOL_RUN.sub(lambda m: "..." if m.group(1) == "." else m.group(1), text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _NEWLINES.sub("\n\n", text).strip()


@dataclass(frozen=True)
class ClassifyCleanSettings:
    """The classify.* settings of the clean stage: where text and label are, how the file is read, and
    which rows are kept (data.on_bad_row: what a structurally broken row does)."""

    text_column: str = "text"
    label_column: str = "label"
    data_format: str = "auto"
    encoding: str = "utf-8"
    on_bad_row: str = "error"
    max_chars: int = 2000
    dedup: bool = True
    labels: list | None = None


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
        raise RowError(
            "missing_columns", f"{where}: no column {text_column!r} (its keys: {keys}; set classify.text_column)"
        )
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
        raise RowError(
            "missing_label",
            f"empty label in column {label_column!r}" if label_column in row else f"no column {label_column!r}",
        )
    if allowed is not None and label not in allowed:
        raise RowError("unknown_label", f"label {label!r} is not in classify.labels {sorted(allowed)}")
    if len(text) > max_chars:
        raise RowError("too_long", f"{len(text)} characters (> classify.max_chars={max_chars})")
    return text, label


def clean_rows(
    rows: Iterable[RawRow],
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    on_bad_row: str = "error",
    max_chars: int = 2000,
    dedup: bool = True,
    labels: list | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """Pure cleaning logic: (clean rows, rejected rows, stats); rows in = clean + rejected."""
    allowed = {str(x) for x in labels} if labels else None
    seen: dict[str, tuple[int, str]] = {}  # text -> (its first line, its label)

    def accept(raw: RawRow, where: str) -> dict:
        text, label = _clean_row(raw, where, text_column, label_column, max_chars, allowed)
        if dedup and text in seen:
            first_line, first_label = seen[text]
            if first_label == label:
                raise RowError("duplicate", f"same text as line {first_line}")
            raise RowError(
                "label_conflict", f"same text as line {first_line}, which is labelled {first_label!r}, not {label!r}"
            )
        seen.setdefault(text, (raw.line, label))
        return {"id": str(raw.line), "line": raw.line, "text": text, "label": label}

    clean, rejected, rows_in = triage_rows(rows, source, on_bad_row, accept)
    if not clean:
        reasons = Counter(r["reason"] for r in rejected)
        raise DataError(
            f"{source}: all {rows_in} rows were rejected ({dict(reasons)}); check classify.text_column "
            f"({text_column!r}) and classify.label_column ({label_column!r})"
        )
    stats = {
        "input": source,
        "rows_in": rows_in,
        "clean": len(clean),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
        "labels": dict(sorted(Counter(r["label"] for r in clean).items())),
    }
    check_conserved(stats, len(clean) + len(rejected))
    return clean, rejected, stats


def clean_classification_data(
    data_path: str, out: CleanOutputs, settings: ClassifyCleanSettings = ClassifyCleanSettings()
) -> dict:
    """Clean stage entry point."""
    s = settings
    clean, rejected, stats = clean_rows(
        iter_raw_rows(data_path, s.data_format, s.encoding),
        data_path,
        s.text_column,
        s.label_column,
        s.on_bad_row,
        s.max_chars,
        s.dedup,
        s.labels,
    )
    write_jsonl(out.out_clean, clean)
    write_jsonl(out.out_rejected, rejected)
    write_json(out.out_stats, stats)
    log.info(
        "clean: %d rows in, %d clean, %d rejected %s",
        stats["rows_in"],
        stats["clean"],
        stats["rejected"],
        stats["rejected_by_reason"],
    )
    return stats


def split_classification_data(
    clean_path: str,
    clean_stats_path: str,
    out: SplitOutputs,
    out_labels: str,
    fractions: dict,
    seed: int,
    labels: list | None = None,
) -> dict:
    """Split stage entry point: train/val/test JSONL (rows gain `label_id`), labels.json, split_stats.json."""
    rows = read_jsonl(clean_path)
    order = label_order((r["label"] for r in rows), labels)
    if len(order) < 2:
        raise DataError(
            f"{clean_path}: only one label ({order}) among the clean rows; classification needs at least two"
        )
    label2id = {label: i for i, label in enumerate(order)}
    for row in rows:
        row["label_id"] = label2id[row["label"]]
    parts = stratified_split(rows, fractions, seed, order)
    write_json(
        out_labels,
        {"labels": order, "id2label": {str(i): label for i, label in enumerate(order)}, "label2id": label2id},
    )
    return write_splits(
        parts,
        (out.out_train, out.out_val, out.out_test),
        clean_stats_path,
        out.stats_path,
        seed,
        labels_per_split={s: dict(Counter(r["label"] for r in parts[s])) for s in SPLITS},
    )

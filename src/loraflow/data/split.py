"""Split stage: seeded, deterministic train/val/test split grouped by normalised prompt (causal_lm), or
stratified by label (seq_cls: stratified_split, called by loraflow.tasks.seq_cls.data).

All conversations that share a normalised prompt go to the same split, so a test question is never
seen in training under another spelling. The key is the clean stage's near-duplicate key
(loraflow.data.dedup.near_key: case, full-width forms, spacing and trailing punctuation folded;
letters, digits, marks and operators kept), so prompts that differ in content are never grouped
together. Rows are written as they are, `meta` included.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict

from loraflow.data.dedup import near_key
from loraflow.data.records import DataError
from loraflow.data.triage import check_conserved
from loraflow.io import read_json, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def prompt_key(row: dict) -> str:
    """Normalised prompt: every turn but the last assistant reply and the system prompt."""
    turns = [m for m in row["messages"][:-1] if m["role"] != "system"]
    return near_key(turns)


def assign_splits(rows: list[dict], fractions: dict[str, float], seed: int) -> dict[str, list[dict]]:
    """Group rows by prompt, shuffle the groups with `seed`, fill splits by cumulative row count."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[prompt_key(row)].append(row)
    # Sort by a digest first so the result does not depend on input order, only on content and seed.
    keys = sorted(groups, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    random.Random(seed).shuffle(keys)
    total = len(rows)
    bounds = {"train": fractions["train"] * total, "val": (fractions["train"] + fractions["val"]) * total}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    placed = 0
    for key in keys:
        group = groups[key]
        split = "train" if placed < bounds["train"] else "val" if placed < bounds["val"] else "test"
        out[split].extend(group)
        placed += len(group)
    for name in SPLITS:
        if not out[name]:
            raise DataError(
                f"too few rows to split: {total} rows in {len(keys)} distinct prompts leave split {name!r} empty "
                f"with fractions {_fractions(fractions)} (config key split; add rows or change the fractions)"
            )
    return out


def _fractions(fractions: dict[str, float]) -> str:
    return " / ".join(f"{s} {fractions[s]:g}" for s in SPLITS if s in fractions)


def _split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Rows per split for one label: floors, then the leftover rows to the largest remainders."""
    exact = {s: fractions[s] * n for s in SPLITS}
    counts = {s: int(exact[s]) for s in SPLITS}
    for s in sorted(SPLITS, key=lambda s: -(exact[s] - counts[s]))[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def stratified_split(
    rows: list[dict], fractions: dict[str, float], seed: int, labels: list[str]
) -> dict[str, list[dict]]:
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
            raise DataError(
                f"too few rows to split: {len(rows)} rows leave split {split!r} empty with fractions "
                f"{_fractions(fractions)} (config key split; add rows or change the fractions)"
            )
        out[split].sort(key=lambda r: r["line"])
    return out


def split_dataset(
    formatted_path: str,
    clean_stats_path: str,
    out_train: str,
    out_val: str,
    out_test: str,
    stats_path: str,
    fractions: dict,
    seed: int,
) -> dict:
    """Split stage entry point; checks that every row is in exactly one split (by id) and that
    rows in = train + val + test + rejected."""
    rows = read_jsonl(formatted_path)
    if not rows:
        raise DataError(f"{formatted_path}: no rows to split (config key split)")
    parts = assign_splits(rows, fractions, seed)
    check_partition(rows, parts)
    return write_splits(parts, (out_train, out_val, out_test), clean_stats_path, stats_path, seed)


def check_partition(rows: list[dict], parts: dict[str, list[dict]]) -> None:
    """Every row in exactly one split, by its id (its source record): a bug otherwise, never skipped."""
    ids_in = Counter(r["id"] for r in rows)
    ids_out = Counter(r["id"] for name in SPLITS for r in parts[name])
    if ids_in != ids_out or max(ids_in.values(), default=1) > 1:
        lost = sorted((ids_in - ids_out).elements())[:5]
        extra = sorted((ids_out - ids_in).elements())[:5]
        raise DataError(
            f"split: rows not placed exactly once (lost ids {lost}, extra ids {extra}, duplicate ids in "
            f"{[k for k, n in ids_in.items() if n > 1][:5]}; a loraflow bug: please report it)"
        )


def write_splits(
    parts: dict[str, list[dict]], paths, clean_stats_path: str, stats_path: str, seed: int, **extra
) -> dict:
    """Write the train/val/test rows (`paths` in SPLITS order) and split_stats.json (counts, fractions,
    `extra` keys, seed), checking that rows in = train + val + test + rejected (every task's splitter)."""
    for name, path in zip(SPLITS, paths):
        write_jsonl(path, parts[name])
    clean_stats = read_json(clean_stats_path)
    counts = {name: len(parts[name]) for name in SPLITS}
    stats = {
        "rows_in": clean_stats["rows_in"],
        **counts,
        "rejected": clean_stats["rejected"],
        "fractions": {k: round(v / max(sum(counts.values()), 1), 4) for k, v in counts.items()},
        **extra,
        "seed": seed,
    }
    check_conserved(stats, sum(counts.values()) + stats["rejected"])
    write_json(stats_path, stats)
    log.info("split: %s", stats)
    return stats

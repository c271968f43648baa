"""Merge summary: the checks of every merged model in one place (results/merges.{csv,md}).

Which runs get a merged model is `merge.runs` (best | all | none); the table does not wait for
merges, so their checks (max |Δlogit| of merged vs base + adapter, within merge.tolerance) and the
generation speed of base, base + adapter and merged model are collected here, printed at the end
of the run and shown in `snakemake --report`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_json, write_text

log = logging.getLogger(__name__)

COLUMNS = [
    "run",
    "passed",
    "max_abs_logit_diff",
    "tolerance",
    "dtype",
    "precision",
    "method",
    "prompts",
    "positions",
    "tok_s_base",
    "tok_s_adapter",
    "tok_s_merged",
]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_merge_summary(
    merge_checks: list[str], out_csv: str, out_md: str, policy: str = "best", best: Sequence[str] = ()
) -> pd.DataFrame:
    """Merge-summary stage entry point. `merge_checks`: runs/<run>/merge_check.json of the merged runs
    (the run is read from the path); `best`: [best.json] under merge.runs best."""
    rows = [{"run": Path(p).parent.name, **read_json(p)} for p in merge_checks]
    df = pd.DataFrame(rows).reindex(columns=[*COLUMNS, *sorted({k for r in rows for k in r} - set(COLUMNS))])
    df = df.dropna(axis=1, how="all") if len(df) else df[["run"]]
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    if policy == "best":
        chosen = read_json(best[0]) if best else {}
        head = (
            f"`merge.runs: best`: the best run by `{chosen.get('metric')}` ({chosen.get('split')} split) is "
            f"**{chosen.get('run')}**"
        )
        head += "." if len(df) else "; it has no adapter (full fine-tuning), so nothing was merged."
    elif policy == "all":
        head = f"`merge.runs: all`: {len(df)} run(s) with an adapter merged."
    else:
        head = "`merge.runs: none`: no merged model was made."
    md = f"# Merged models\n\n{head}\n"
    if len(df):
        cols = list(df.columns)
        md += (
            "\nEach merged model was checked: its logits equal those of base + adapter within the tolerance "
            "(max |Δlogit| over the checked prompts); tok/s is greedy generation speed.\n\n"
            "| "
            + " | ".join(cols)
            + " |\n|"
            + "|".join("---" for _ in cols)
            + "|\n"
            + "".join("| " + " | ".join(_cell(row[c]) for c in cols) + " |\n" for _, row in df.iterrows())
        )
    write_text(out_md, md)
    log.info("%s", head)
    return df

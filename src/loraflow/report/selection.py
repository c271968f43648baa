"""Forgetting-aware choice: which run the table names best, with a retention floor or on the Pareto set.

A run that learned the task but forgot what the base model knew is not worth shipping. The choice is
made on validation figures only: the task metric on the validation split, and retention on the
validation part of the retention set (loraflow.evaluate.retention splits its items by id), so the
test rows and the test part of the retention set stay held out for reporting.

- `select: best` (default): the best run on validation, among the runs that hold the floor.
- `select: pareto`: among the runs that hold the floor and lie on the learned-vs-forgotten Pareto set
  of (validation metric, validation retention), the one that keeps the most, as long as its validation
  metric is not significantly worse than the best such run (paired bootstrap over validation rows at
  the table's confidence); without per-row validation scores it is the same as `best`.
- `retention_floor` (percent of what the base answered, e.g. 90; 0 or null = none): runs whose
  validation retention is below it are rejected. When no run holds it, the run that keeps the most is
  chosen and the headline says that none held the floor.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from loraflow.report.rows import LABEL, choose_best, lower_is_better, metric_column
from loraflow.report.settings import Selection

SELECT = ("best", "pareto")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates higher is better; a point is
    dominated by one at least as good in both and better in one), in input order."""
    front = []
    for i, (x, y) in enumerate(points):
        if any(u >= x and v >= y and (u > x or v > y) for j, (u, v) in enumerate(points) if j != i):
            continue
        front.append(i)
    return front


def _runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["run"] != "base") & (df["status"] == "ok")]


def mark_pareto(df: pd.DataFrame, best_metric: str) -> list[int]:
    """Flag (`pareto`) the finished runs on the Pareto set of (validation metric, validation retention);
    returns their index. Empty without both figures."""
    runs = _runs(df)
    if "val_retention" not in runs or "val_metric" not in runs:
        return []
    runs = runs[runs["val_retention"].notna() & runs["val_metric"].notna()]
    sign = -1.0 if lower_is_better(metric_column(best_metric)) else 1.0
    front = [
        runs.index[i] for i in pareto_front([(sign * m, r) for m, r in zip(runs["val_metric"], runs["val_retention"])])
    ]
    df["pareto"] = ""
    df.loc[front, "pareto"] = "pareto"
    return front


def holds_floor(df: pd.DataFrame, floor: float | None) -> pd.Series:
    """Whether each row holds the floor on validation retention (every row when there is no floor)."""
    if floor is None or "val_retention" not in df:
        return pd.Series(True, index=df.index)
    return df["val_retention"].fillna(-math.inf) >= floor


def _most_kept(runs: pd.DataFrame, best_metric: str) -> int:
    """The run with the highest validation retention (ties: the better validation metric)."""
    sign = -1.0 if lower_is_better(metric_column(best_metric)) else 1.0
    order = runs.assign(_metric=sign * runs["val_metric"]).sort_values(
        ["val_retention", "_metric"], ascending=False, na_position="last"
    )
    return order.index[0]


def _pareto_pick(df: pd.DataFrame, pool: pd.Index, best: int, best_metric: str, val_boot) -> int:
    """The Pareto run in `pool` keeping the most whose validation metric is tied with `best`'s."""
    front = [i for i in df.index[df.get("pareto", pd.Series("", index=df.index)) == "pareto"] if i in pool]
    if val_boot is None or not front:
        return best
    lower = lower_is_better(metric_column(best_metric))
    tied = []
    for i in front:
        c = val_boot.compare(df.at[i, "run"], df.at[best, "run"], metric_column(best_metric))
        if i == best or c is not None and not (c.lo > 0 if lower else c.hi < 0):
            tied.append(i)
    return _most_kept(df.loc[tied], best_metric) if tied else best


def _better(df: pd.DataFrame, a: int, b: int) -> bool:
    """Whether run `a` was strictly better than run `b` on validation (a tie rejects nothing)."""
    column = "val_metric" if "val_metric" in df and not pd.isna(df.at[a, "val_metric"]) else None
    return column is None or df.at[a, column] != df.at[b, column]


def choose(df: pd.DataFrame, best_metric: str, selection: Selection, val_boot=None) -> dict:
    """{"chosen": index or None, "source": where the choice came from, "rejected": index of the best run
    on validation that the floor rejected (None), "none_hold": no run held the floor}."""
    runs = _runs(df)
    mark_pareto(
        df, best_metric
    )  # a run below the floor never dominates one above it: the front within the floor is this front's part
    best_all, source = choose_best(df, best_metric)
    out: dict[str, Any] = {"chosen": best_all, "source": source, "rejected": None, "none_hold": False}
    floor = selection.floor
    if floor is not None and "val_retention" in runs and runs["val_retention"].notna().any():
        keep = holds_floor(runs, floor)
        df["floor"] = ""
        df.loc[runs.index, "floor"] = ["holds" if k else "below floor" for k in keep]
        if not keep.any():
            out.update(
                chosen=_most_kept(runs, best_metric),
                none_hold=True,
                source="validation retention (no run holds the floor)",
            )
            return out
        chosen, source = choose_best(df.loc[[*df.index[df["run"] == "base"], *runs.index[keep]]], best_metric)
        out.update(chosen=chosen, source=source)
        if best_all is not None and chosen is not None and not keep[best_all] and _better(df, best_all, chosen):
            out["rejected"] = best_all
        pool = runs.index[keep]
    else:
        pool = runs.index
        if floor is not None and out["chosen"] is not None:  # e.g. scores from before the retention set had parts
            out["source"] += "; the retention floor was not applied: no validation retention scores"
    if selection.select == "pareto" and out["chosen"] is not None:
        picked = _pareto_pick(df, pool, out["chosen"], best_metric, val_boot)
        if picked != out["chosen"]:
            out.update(chosen=picked, source=f"{out['source']}, Pareto set (tied on validation, keeps more)")
    return out


def apply_selection(df: pd.DataFrame, best_metric: str, selection: Selection, val_boot=None) -> pd.DataFrame:
    """Mark the chosen run in `best` (as mark_best does) and keep the choice in df.attrs["selection"]."""
    info = choose(df, best_metric, selection, val_boot)
    df["best"] = ""
    df.attrs["best_source"] = info["source"]
    if info["chosen"] is not None:
        df.loc[info["chosen"], "best"] = f"best ({best_metric})"
    df.attrs["selection"] = {
        "select": selection.select,
        "floor": selection.floor,
        "chosen": None if info["chosen"] is None else df.at[info["chosen"], "run"],
        "rejected": None if info["rejected"] is None else df.at[info["rejected"], "run"],
        "none_hold": info["none_hold"],
    }
    return df


def _figures(row: pd.Series, best_metric: str) -> str:
    parts = []
    if not pd.isna(row.get("val_metric")):
        parts.append(f"val {LABEL.get(best_metric, best_metric)} {row['val_metric']:.2f}")
    if not pd.isna(row.get("val_retention")):
        parts.append(f"val retention {row['val_retention']:.1f} %")
    if not pd.isna(row.get("retention")):
        parts.append(f"test retention {row['retention']:.1f} %")
    return ", ".join(parts)


def selection_lines(df: pd.DataFrame, best_metric: str) -> list[str]:
    """Headline sentences on the forgetting-aware choice (none without a floor or `pareto`)."""
    info = df.attrs.get("selection") or {}
    if not info or (info.get("floor") is None and info.get("select") == "best"):
        return []
    rows = df.set_index("run")
    lines = []
    floor = info.get("floor")
    rule = (
        f"kept at least {floor:g} % of what the base answered on the validation part of the retention set"
        if floor is not None
        else ""
    )
    if info.get("chosen"):
        how = f"the best on validation among the runs that {rule}" if floor is not None else "chosen on validation"
        if info.get("select") == "pareto":
            how += (
                "; on the learned-vs-forgotten Pareto set, the run keeping the most whose validation metric is tied "
                "with the best"
            )
        if info.get("none_hold"):
            how = f"no run {rule}: the run that kept the most"
        lines.append(f"**Chosen**: {info['chosen']} ({how}): {_figures(rows.loc[info['chosen']], best_metric)}.")
    if info.get("rejected"):
        lines.append(
            f"**Rejected for forgetting**: {info['rejected']}, the best run on validation, "
            f"below the floor: {_figures(rows.loc[info['rejected']], best_metric)}."
        )
    return lines


def pareto_markdown(df: pd.DataFrame, best_metric: str) -> str:
    """The learned-vs-forgotten Pareto set on validation, one line per non-dominated run ("" without one)."""
    if "pareto" not in df or not (df["pareto"] == "pareto").any():
        return ""
    info = df.attrs.get("selection") or {}
    floor = info.get("floor")
    runs = df[df["pareto"] == "pareto"].sort_values("val_retention", ascending=False)
    head = ["run", f"val {LABEL.get(best_metric, best_metric)}", "val retention", "test retention", "floor", "chosen"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|---:|---|---|"]
    for _, r in runs.iterrows():
        held = "" if floor is None else ("holds" if r["val_retention"] >= floor else "below")
        lines.append(
            f"| {r['run']} | {r['val_metric']:.2f} | {r['val_retention']:.1f} | "
            f"{'' if pd.isna(r.get('retention')) else format(r['retention'], '.1f')} | {held} | "
            f"{'chosen' if r['best'] else ''} |"
        )
    text = (
        "Runs no other run beats on both the validation metric and validation retention (what it learned against what "
        "it kept); every other run gives up one without gaining the other. Test retention is reported, never "
        "used to choose" + (f"; the floor is {floor:g} %" if floor is not None else "") + ".\n\n"
    )
    return text + "\n".join(lines) + "\n"

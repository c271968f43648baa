"""The headline of the comparison, the answer first: the chosen run and how sure we are, the tied set,
which knob mattered, what it cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from loraflow.report.markdown import effects_line, format_p
from loraflow.report.rows import LABEL, lower_is_better, metric_column

if TYPE_CHECKING:
    from loraflow.report.bootstrap import Bootstrap


def headline(
    df: pd.DataFrame,
    best_metric: str,
    boot: Bootstrap | None,
    effects: pd.DataFrame,
    points: pd.DataFrame | None,
    notes: dict[str, list[str]] | None = None,
) -> str:
    """The answer first: the chosen run and how sure we are, the tied set, which knob mattered, what it cost.
    `notes`: sentences on the forgetting-aware choice (`choice`) and on certainty (`sure`)."""
    notes = notes or {}
    metric = metric_column(best_metric)
    lower = lower_is_better(metric)
    dec = 4 if lower else 2
    best = df[df["best"].fillna("").str.startswith("best")]
    pruned = df[df["status"].fillna("").str.startswith("pruned")]
    failed = df[(df["status"] != "ok") & ~df.index.isin(pruned.index)]
    lines = []
    if not len(best):
        lines.append("No run finished.")
    else:
        b = best.iloc[0]
        source = df.attrs.get("best_source", "validation")
        lines.append(f"Best run by `{best_metric}`: **{b['run']}** (chosen on {source}).")
        ci = (
            f" [{b[f'{metric}_lo']:.{dec}f}, {b[f'{metric}_hi']:.{dec}f}]"
            if f"{metric}_lo" in b and not pd.isna(b.get(f"{metric}_lo"))
            else ""
        )
        text = f"Held-out test {LABEL.get(metric, metric)}: {b[metric]:.{dec}f}{ci}"
        if "vs_base" in b and not pd.isna(b.get("vs_base")):
            text += (
                f", {b['vs_base']:+.{dec}f} [{b['vs_base_lo']:.{dec}f}, {b['vs_base_hi']:.{dec}f}] against the base "
                f"model ({format_p(b['vs_base_p'])})"
            )
        for extra in ("fact_acc", "answer_ok"):
            if extra != metric and extra in b and not pd.isna(b.get(extra)):
                ci_x = (
                    f" [{b[extra + '_lo']:.1f}, {b[extra + '_hi']:.1f}]"
                    if f"{extra}_lo" in b and not pd.isna(b.get(f"{extra}_lo"))
                    else ""
                )
                base_x = df.loc[df["run"] == "base", extra]
                text += (
                    f"; it states the right facts in {b[extra]:.1f} %{ci_x} of its answers"
                    if extra == "fact_acc"
                    else f"; answer check {b[extra]:.1f} %{ci_x}"
                ) + (f" (base {base_x.iloc[0]:.1f} %)" if len(base_x) and not pd.isna(base_x.iloc[0]) else "")
        lines.append(text + ".")
        lines += notes.get("choice", [])
        if boot is not None:
            tied = df[df.get("tied", pd.Series("", index=df.index)) == "tied for best"]
            ids = boot.loss_ids if lower else boot.gen_ids
            rows = (
                f"clustered paired bootstrap over the {len(ids)} test rows in {len({boot.groups[i] for i in ids})} "
                f"groups (table.cluster_by: {boot.group_key})"
                if boot.clustered(ids)
                else f"paired bootstrap over the {len(ids)} test rows"
            )
            desc = f"{rows}, {boot.n:,} resamples, {100 * boot.confidence:g} % intervals, seed {boot.seed}"
            if len(tied):
                items = ", ".join(
                    f"{r.run} ({r.vs_best:+.{dec}f} [{r.vs_best_lo:.{dec}f}, {r.vs_best_hi:.{dec}f}], "
                    f"{format_p(r.vs_best_p)})"
                    for r in tied.itertuples()
                )
                lines.append(
                    f"**Tied for best** (not significantly worse than {b['run']} on the test rows; {desc}): {items}. "
                    f"The data cannot separate these runs: treat the best as this set."
                )
            elif len(df[(df["status"] == "ok") & (df["run"] != "base")]) > 1:
                lines.append(f"Every other run is significantly worse than {b['run']} on the test rows ({desc}).")
            better = (
                df[
                    (df.get("tied", pd.Series("", index=df.index)) == "tied for best")
                    & ((df["vs_best_lo"] > 0) if not lower else (df["vs_best_hi"] < 0))
                ]
                if "vs_best_lo" in df
                else df.iloc[0:0]
            )  # one finished run: nothing to compare it with
            if len(better):
                lines.append(
                    f"Note: {', '.join(better['run'])} did significantly better on test than the run validation chose."
                )
    lines += [line for line in notes.get("sure", []) if line]
    if points is not None and len(points):
        bp = points[points["best"].str.startswith("best")]
        if len(bp):
            tied = points[points.get("tied", pd.Series("", index=points.index)) == "tied for best"]["point"].tolist()
            lines.append(
                f"Across seeds, the best grid point by mean `{best_metric}` (on "
                f"{points.attrs.get('best_source', 'validation')}) is **{bp.iloc[0]['point']}**"
                + (f"; tied with it: {', '.join(tied)}." if tied else ".")
            )
    line = effects_line(effects, metric)
    if line:
        lines.append(
            f"**Which knob mattered** (main effects on test {LABEL.get(metric, metric)}, mean over the other axes): "
            f"{line}."
        )
    base_acc = (
        df.loc[df["run"] == "base", "retention_base_acc"] if "retention_base_acc" in df else pd.Series(dtype=float)
    )
    if len(base_acc) and base_acc.iloc[0] == 0:
        lines.append(
            "**What it cost**: the base model answers none of the retention questions correctly, so there is nothing "
            "it could forget (a larger base model, or evaluate.lm_eval_tasks, measures general ability instead)."
        )
    if "retention" in df and df["retention"].notna().any() and "d_retention" in df:
        runs = df[(df["run"] != "base") & df["d_retention"].notna()]
        if len(runs):
            n_items = (
                int(df.loc[df["run"] == "base", "retention_items"].iloc[0])
                if "retention_items" in df and df.loc[df["run"] == "base", "retention_items"].notna().any()
                else None
            )
            worst = runs.loc[runs["d_retention"].idxmin()]
            best_row = df[df["best"].fillna("").str.startswith("best")]
            cost = ""
            if len(best_row) and not pd.isna(best_row.iloc[0].get("d_retention")):
                r = best_row.iloc[0]
                cost = (
                    f"the best run keeps {r['retention']:.1f} % ({r['d_retention']:+.1f} [{r['d_retention_lo']:.1f}, "
                    f"{r['d_retention_hi']:.1f}]); "
                )
            lines.append(
                f"**What it cost**: retention on the {n_items if n_items is not None else ''} built-in general "
                f"questions the base model answers correctly (test part of the set): {cost}the largest loss is "
                f"{worst['run']} ({worst['d_retention']:+.1f} "
                f"[{worst['d_retention_lo']:.1f}, {worst['d_retention_hi']:.1f}])."
            )
        line = effects_line(effects, "retention")
        if line:
            lines.append(f"Main effects on retention: {line}.")
    if len(pruned):
        floor_cut = pruned["status"].str.contains("under the floor").sum()
        why = f", {floor_cut} of them under the retention floor" if floor_cut else ""
        lines.append(
            f"**Successive halving** stopped {len(pruned)} of {len(df) - 1} runs early on their validation loss{why} "
            "(status `pruned at step N`, validation figures at that step, no test figures): "
            f"{', '.join(pruned['run'])}. The best was chosen among the runs that trained to the end."
        )
    if len(failed):
        lines.append(f"{len(failed)} run(s) did not finish: " + ", ".join(failed["run"]) + ".")
    return "\n\n".join(lines)

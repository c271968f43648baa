"""Successive halving in the table and the report: the pruned points' rows and each point's validation
loss rung by rung with the cuts marked (results/plots/halving.png).

Read from the last cut's file (search/select<k>.json), which carries every rung: its budget, every live
point's step and validation loss, and who was kept. The survivors' last figure is the validation loss
of their final training (train_stats.json), the point where the curve ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loraflow.io import read_json
from loraflow.report.rows import grid_columns
from loraflow.search.halving import pruned_points


def pruned_rows(halving: str, runs: dict[str, dict]) -> list[dict]:
    """One table row per pruned point of `runs`: status `pruned at step N` (and why, where a retention floor
    cut it), its validation loss at that step, no test figures (it was never evaluated)."""
    history = read_json(halving)
    floor_at_cut = {name: rung.get("floor") for rung in history["rungs"] for name in rung["points"]}
    return [
        {
            **grid_columns(name, runs[name]),
            "status": pruned_status(result, floor_at_cut.get(name)),
            "val_loss": result["eval_loss"],
        }
        for name, result in sorted(pruned_points(history).items())
        if name in runs
    ]


def pruned_status(result: dict, floor: float | None) -> str:
    """`pruned at step N`, plus the retention that put the point under the floor where the cut had one."""
    status = f"pruned at step {result['step']}"
    kept = result.get("val_retention")
    if floor and kept is not None and kept < floor:
        status += f" (validation retention {kept:.1f} % under the floor {floor:g} %)"
    return status


def curves(history: dict, final: dict[str, tuple[int, float]] | None = None) -> dict[str, list[tuple[int, float]]]:
    """{point: [(step, validation loss), ...]} rung by rung, plus the final (step, loss) of the points in `final`."""
    out: dict[str, list[tuple[int, float]]] = {}
    for rung in history["rungs"]:
        for name, result in rung["points"].items():
            out.setdefault(name, []).append((result["step"], result["eval_loss"]))
    for name, point in (final or {}).items():
        out.setdefault(name, []).append(point)
    return out


def plot_halving(halving: str, out_png: str, train_stats: Sequence[str] = ()) -> str:
    """results/plots/halving.png: each point's validation loss at every rung it reached (and at the end for the
    survivors, from `train_stats`: runs/<run>/train_stats.json), a vertical line at each cut's step, pruned
    points drawn grey and ending in a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loraflow.io import atomic_path

    history = read_json(halving)
    final = {}
    for path in train_stats:
        stats = read_json(path)
        final[Path(path).parent.name] = (stats["steps"], stats["best_eval_loss"])
    pruned = pruned_points(history)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for rung in history["rungs"]:
        ax.axvline(max(r["step"] for r in rung["points"].values()), color="0.8", lw=1, ls="--", zorder=0)
    for name, points in sorted(curves(history, final).items()):
        steps, losses = zip(*points)
        if name in pruned:
            ax.plot(steps, losses, color="0.6", lw=1, marker="o", ms=3)
            ax.plot(steps[-1], losses[-1], color="0.4", marker="x", ms=7, ls="none")
        else:
            ax.plot(steps, losses, lw=2, marker="o", ms=4, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss")
    ax.set_title(
        f"Successive halving: {len(pruned)} of {len(history['rungs'][0]['points'])} points pruned (x), cuts dashed"
    )
    if final:
        ax.legend(fontsize=8, title="trained to the end")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png

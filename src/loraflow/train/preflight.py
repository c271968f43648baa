"""Pre-flight: what a grid point will cost, and whether its target modules exist, before training.

The checks run on the meta device (grid_check.py); with the token cache's meta the bill calibrates each
point on this machine (preflight_bill.py). Snakemake schedules these jobs first, so a bad target module
stops the sweep before any training starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_json, write_json
from loraflow.model.targets import TargetModuleError
from loraflow.train.bill import SweepSettings
from loraflow.train.grid_check import GridCheck, PreflightSettings
from loraflow.train.preflight_bill import add_bill, terminal_bill

log = logging.getLogger(__name__)


def preflight_run(
    model_dir: str,
    out_json: str,
    run: str,
    r: int | None,
    lora_alpha: float | None,
    target_modules: str | list[str],
    method: str = "lora",
    settings: PreflightSettings = PreflightSettings(),
) -> dict:
    """Pre-flight of one grid point (the workflow checks the whole grid at once: preflight_grid)."""
    info = GridCheck(model_dir, settings).point(run, method, r, lora_alpha, target_modules)
    write_json(out_json, info)
    return info


def run_of(path: str) -> str:
    """The run a per-run file belongs to: results/runs/<run>/<file>."""
    return Path(path).parent.name


def preflight_grid(
    model_dir: str,
    out_jsons: list[str],
    runs: dict[str, dict],
    settings: PreflightSettings = PreflightSettings(),
    sweep: SweepSettings = SweepSettings(),
    checked_with: dict | None = None,
    out_csv: str | None = None,
    tokens_meta: str | None = None,
) -> pd.DataFrame:
    """Pre-flight stage entry point: grid points ({run: {method, r, lora_alpha, target_modules}}) in one
    process; writes runs/<run>/preflight.json per point (matched by run name; `checked_with` recorded
    in each, see workflow/rules/preflight.smk) and, if asked, a csv of them.

    With `tokens_meta` (the token cache's meta.json) the memory estimate counts the train rows there are
    and bounds a forward pass by the longest of them, as the train stage does; each point records them
    (`train_rows`, `longest_train_tokens`). Without it, rows of max_length (the worst case).

    With `tokens_meta` the bill comes first (add_bill), unless search.calibrate (`sweep.calibrate`) leaves
    it out: a few real optimizer steps per method and targets on this machine give each point's training
    time and calibrated peak memory (`planned_steps`, `est_train_tokens`, `est_train_time_s`,
    `calibrated_peak_memory_mb`) and the sweep's time under its search (`sweep` in each file,
    bill.sweep_bill), all logged before any training.

    Every point is checked before anything is written; any bad point (a target module that does not
    exist, a layer LoRA cannot wrap) fails the stage with one message listing all of them."""
    from loraflow.config import ConfigError

    paths = {run_of(p): p for p in out_jsons}
    if set(paths) != set(runs):
        raise ValueError(f"pre-flight outputs {sorted(paths)} do not match the grid's runs {sorted(runs)}")
    splits = read_json(tokens_meta)["splits"] if tokens_meta else {}
    train = splits.get("train", {})
    check = GridCheck(model_dir, settings, train.get("examples", 0), train.get("longest"))
    rows, bad = [], []
    for run, point in runs.items():
        try:
            rows.append(check.point(run, point["method"], point["r"], point["lora_alpha"], point["target_modules"]))
        except Exception as err:  # noqa: BLE001 (every bad point is reported, then the stage fails)
            bad.append(
                f"{run}: {err}"
                if isinstance(err, TargetModuleError)
                else f"{run}: grid point cannot be built: {type(err).__name__}: {err}"
            )
    if bad:
        for line in bad:
            log.error("%s", line)
        raise ConfigError(
            f"pre-flight: {len(bad)} of {len(runs)} grid point(s) cannot be trained, so no training starts:\n  "
            + "\n  ".join(bad)
        )
    bill, why_not = add_bill(check, model_dir, rows, sweep, splits) if splits else (None, "")
    for info in rows:
        extra = {
            **({"sweep": bill} if bill else {}),
            **({"checked_with": checked_with} if checked_with is not None else {}),
        }
        write_json(paths[info["run"]], {**info, **extra})
    df = pd.DataFrame(rows)
    df.attrs["terminal"] = terminal_bill(rows, bill, why_not)
    if out_csv:
        with atomic_path(out_csv) as tmp:
            df.to_csv(tmp, index=False)
    merge_runs = sweep.merge_runs
    merges = {"best": 1, "all": int((df["method"] != "full").sum()), "none": 0}[merge_runs]
    log.info(
        "%d grid point(s) checked; peft wrapped %d model copies. Each merged model takes %.0f MB (fp32) / %.0f MB "
        "(bf16); merge.runs=%s merges %d run(s)",
        len(rows),
        len(check.PROBES) * len(check._shapes),
        check.merged["merged_mb_fp32"],
        check.merged["merged_mb_bf16"],
        merge_runs,
        merges,
    )
    return df


def preflight_table(runs: list[str], out_csv: str) -> pd.DataFrame:
    """preflight.csv: one row per grid point, from runs/<run>/preflight.json."""
    df = pd.DataFrame([{k: v for k, v in read_json(p).items() if k not in ("checked_with", "sweep")} for p in runs])
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df

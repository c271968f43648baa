"""The pre-flight bill: a few real optimizer steps per (method, targets) of the grid on this machine give
each point's training time and calibrated peak memory, and the sweep's time under its search.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from loraflow.model.memory import TrainJob
from loraflow.train.bill import SweepSettings
from loraflow.train.grid_check import GridCheck, targets_key

log = logging.getLogger(__name__)


def room_mb() -> float | None:
    """Memory this process could still use: free GPU memory, or on a CPU its resident set plus what the
    system has available (None where unknown)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0] / 2**20
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        return int(info["MemAvailable"].split()[0]) / 1024 + resident
    except (OSError, KeyError, ValueError):
        return None


def _calibrate(model_dir: str, row: dict, job: TrainJob, sample, sweep: SweepSettings, trust_remote_code: bool):
    """calibration.calibrate for the point of `row`, or None (with a warning) where it cannot run here."""
    from loraflow.model.calibration import calibrate

    room = room_mb()
    if room is not None and row["est_peak_train_memory_mb"] > 0.9 * room:
        log.warning(
            "pre-flight: no calibration of %s: its estimated peak (%.0f MB) does not fit beside the memory free here "
            "(%.0f MB)",
            row["run"],
            row["est_peak_train_memory_mb"],
            room,
        )
        return None
    try:
        return calibrate(
            model_dir,
            row,
            dataclasses.replace(job, method=row["method"]),
            sample,
            sweep.calibration_steps,
            trust_remote_code,
        )
    except Exception as err:  # noqa: BLE001 (the bill is optional: training does not depend on it)
        log.warning("pre-flight: no calibration of %s on this machine: %s: %s", row["run"], type(err).__name__, err)
        return None


def add_bill(
    check: GridCheck, model_dir: str, rows: list[dict], sweep: SweepSettings, splits: dict
) -> tuple[dict | None, str]:
    """Calibrate once per (method, targets) of the grid (at its first point) and add to every row the
    run's planned steps, training tokens and time, and its calibrated peak memory. Returns the sweep's bill
    (bill.sweep_bill) and "", or None and why there is none: the calibration was not worth it
    (bill.calibration_skipped) or some point could not be calibrated here."""
    from loraflow.model.calibration import TokenSample
    from loraflow.train.bill import (
        calibrated_memory_mb,
        calibration_skipped,
        describe,
        job_time,
        planned_steps,
        point_cost,
        sweep_bill,
    )

    s = check.settings
    train, val = splits["train"], splits.get("val", {})
    sample = TokenSample(
        mean_length=max(2, round(train["tokens"] / max(train["examples"], 1))),
        longest=train.get("longest") or s.max_length,
        supervised=train.get("supervised_tokens", 0) / max(train["tokens"], 1) or 0.5,
        mean_val_length=round(val.get("tokens", 0) / max(val.get("examples", 0), 1)),
    )
    total_steps = planned_steps(sweep, train["examples"], s.batch_size)
    groups = {(row["method"], targets_key(row["target_modules"])) for row in rows}
    skipped = calibration_skipped(len(groups), len(rows), total_steps, sweep)
    if skipped:
        log.info("pre-flight: no bill (%s)", skipped)
        return None, skipped
    from loraflow.model.device import set_threads

    set_threads(s.threads)  # as the train stage does: the same threads whatever this job's share of --cores
    calibrations: dict = {}
    costs = []
    for row in rows:
        group = (row["method"], targets_key(row["target_modules"]))
        if group not in calibrations:
            calibrations[group] = _calibrate(model_dir, row, check.job, sample, sweep, s.trust_remote_code)
        cal = calibrations[group]
        if cal is None:
            continue
        cost = point_cost(cal, sweep, splits, s.batch_size, total_steps, s.rows_per_batch)
        costs.append(cost)
        row.update(
            planned_steps=total_steps,
            est_train_tokens=round(total_steps * cost.tokens_per_step),
            est_train_time_s=job_time(cost, 0, total_steps, sweep.eval_every),
            calibrated_peak_memory_mb=calibrated_memory_mb(
                check.terms[(row["method"], row["r"], targets_key(row["target_modules"]))], cal
            ),
        )
        log.info(
            "%s: peak memory about %.0f MB (estimate %.0f MB, calibrated on %s), training about %.0f s (%d steps, %s "
            "tokens)",
            row["run"],
            row["calibrated_peak_memory_mb"],
            row["est_peak_train_memory_mb"],
            cal.device,
            row["est_train_time_s"],
            total_steps,
            f"{row['est_train_tokens']:,}",
        )
    if len(costs) < len(rows):
        return None, "some point could not be calibrated on this machine (see the log)"
    bill = sweep_bill(costs, total_steps, sweep)
    bill["summary"] = describe(bill, sweep, next(iter(calibrations.values())).device)
    log.info("%s", bill["summary"])
    return bill, ""


def terminal_bill(rows: list[dict], bill: dict | None, why_not: str = "") -> str:
    """What the sweep will cost, for the terminal before any training: each point's peak memory and
    training time, and the sweep's time under its search; or why there is no bill."""
    if not bill:
        return f"pre-flight bill: none ({why_not})" if why_not else ""
    lines = ["pre-flight bill (calibrated on this machine; each point's peak memory and training time):"]
    for row in rows:
        lines.append(
            f"  {row['run']}: ~{row['calibrated_peak_memory_mb']:,.0f} MB, ~{row['est_train_time_s'] / 60:.1f} min "
            f"({row['planned_steps']} steps)"
        )
    return "\n".join([*lines, f"  {bill['summary']}"])

"""Experiment tracking: mirror a finished sweep's results into MLflow and TensorBoard (config `tracking`).

The results files are the results; the trackers get copies, written by rule `track` after the table,
so tracking can neither fail nor change a training job. A tracker that fails (server down, package
missing) is reported once, in the job's log, on the terminal and in results/tracking.json, and the rule
still succeeds.
"""

from __future__ import annotations

import logging
from pathlib import Path

from loraflow.io import write_json
from loraflow.tracking.records import RunRecord, read_sweep

log = logging.getLogger("loraflow.tracking")

__all__ = ["RunRecord", "read_sweep", "track"]


def _mirror_tensorboard(results: Path, records: list[RunRecord]) -> dict:
    from loraflow.tracking.tensorboard_events import write_events

    written = [r.name for r in records if write_events(results, r)]
    return {"state": "ok", "written": written, "logdir": str(results / "runs")}


def _mirror_mlflow(results: Path, records: list[RunRecord], settings: dict) -> dict:
    from loraflow.tracking.mlflow_mirror import local_uri, mirror_sweep

    done = mirror_sweep(settings["uri"], settings["experiment"], results, records)
    return {
        "state": "ok",
        "uri": settings["uri"] or local_uri(results),
        "experiment": settings["experiment"],
        "runs": done,
    }


def track(comparison_csv: str, out_status: str, points: dict[str, dict], tracking: dict) -> dict:
    """Mirror the rows of comparison.csv (runs in `points`, {run: its settings}, and baselines) into the trackers
    `tracking` switches on (keys mlflow, tensorboard, uri, experiment); write what happened to `out_status`.
    Never raises for a tracker: a failure is one warning and state "failed" in the status."""
    results = Path(comparison_csv).parent
    status: dict[str, dict] = {}
    try:
        records = read_sweep(comparison_csv, points)
    except Exception as err:  # unreadable results: nothing to mirror, and nothing to fail for
        records = []
        status["results"] = {"state": "failed", "error": f"{type(err).__name__}: {err}"}
    mirrors = {
        "tensorboard": lambda: _mirror_tensorboard(results, records),
        "mlflow": lambda: _mirror_mlflow(results, records, tracking),
    }
    for name, mirror in mirrors.items():
        if not tracking.get(name):
            status[name] = {"state": "off"}
            continue
        try:
            status[name] = mirror()
        except Exception as err:  # the tracker's failure, never the sweep's
            status[name] = {"state": "failed", "error": f"{type(err).__name__}: {err}"}
    for name, entry in status.items():
        if entry["state"] == "failed":
            log.warning("%s", warning(name, entry["error"]))
    write_json(out_status, status)
    return status


def warning(tracker: str, error: str) -> str:
    """The one line a failed tracker gets."""
    first = error.strip().splitlines()[0] if error.strip() else error
    return (
        f"tracking: {tracker} was not updated ({first[:300]}); the results files are complete. "
        "Mirror them again with `snakemake track --cores 1 --forcerun track`."
    )

"""Mirror a sweep's results into MLflow: one parent run for the sweep, one child run per grid point.

The results files stay the results; MLflow gets a copy that can be sorted, filtered and overlaid.
Each run is found again by its tags (`loraflow.sweep`, `loraflow.run`), so mirroring twice never makes
a second run. What changed since the last mirror decides what is done (`RunRecord`'s digests):
- nothing: the run is left alone;
- its table row or card only (a new best, a new bootstrap): the same MLflow run is updated in place;
- its training (settings, curves): MLflow keeps a run's parameters and metric history forever, so the
  old run is deleted (MLflow's soft delete: restorable, hidden from the run list) and the run is
  mirrored afresh under the same name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from loraflow.tracking.records import RunRecord

log = logging.getLogger("loraflow.tracking")

SWEEP, RUN, ROLE = "loraflow.sweep", "loraflow.run", "loraflow.role"
TRAIN_DIGEST, TABLE_DIGEST = "loraflow.digest.train", "loraflow.digest.table"
BATCH = 900  # MLflow takes at most 1000 metrics per log_batch call


def local_uri(results: Path) -> str:
    """The default store: an SQLite file in the results directory, no server needed."""
    return f"sqlite:///{(results / 'mlflow.db').resolve()}"


def sweep_id(results: Path) -> str:
    """The sweep's identity in a shared tracker: its results directory (two sweeps named `results` in
    different places stay apart)."""
    return hashlib.sha256(str(results.resolve()).encode()).hexdigest()[:16]


def connect(uri: str, results: Path, experiment: str):
    """(client, experiment id). A local store keeps its artifacts beside it in the results directory."""
    # Fail in seconds, not minutes, when a server is down: the mirror is retried by the next table change
    # (or `snakemake --forcerun track`), never by waiting here.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or local_uri(results))
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        if found.lifecycle_stage == "deleted":  # deleted in the UI: its name is still taken, so bring it back
            client.restore_experiment(found.experiment_id)
        return client, found.experiment_id
    artifacts = (
        (results / "mlflow-artifacts").resolve().as_uri() if not uri or uri.startswith(("sqlite:", "file:")) else None
    )
    return client, client.create_experiment(experiment, artifact_location=artifacts)


def find_runs(client, experiment_id: str, sweep: str) -> dict[str, list]:
    """{run name: [active MLflow runs]} of this sweep; the parent under the name ""."""
    from mlflow.entities import ViewType

    found: dict[str, list] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{SWEEP}` = '{sweep}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        for run in page:
            key = "" if run.data.tags.get(ROLE) == "sweep" else run.data.tags.get(RUN, run.info.run_name)
            found.setdefault(key, []).append(run)
        token = page.token
        if not token:
            return found


def _log(
    client,
    run_id: str,
    metrics: dict | None = None,
    steps: dict | None = None,
    params: dict | None = None,
    tags: dict | None = None,
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    entries = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
    entries += [Metric(k, v, now, step) for k, points in (steps or {}).items() for step, v in points]
    for start in range(0, len(entries), BATCH):
        client.log_batch(run_id, metrics=entries[start : start + BATCH])
    items = [Param(k, v) for k, v in (params or {}).items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def _finish(client, record: RunRecord, run_id: str) -> None:
    status = record.tags["status"]
    end = record.span_ms[1] if record.span_ms else None
    client.set_terminated(
        run_id, "FINISHED" if status == "ok" or status.startswith("pruned") else "FAILED", end_time=end
    )


def mirror_run(client, experiment_id: str, parent_id: str, sweep: str, record: RunRecord, existing: list) -> str:
    """Mirror one run; returns what was done: unchanged, updated, replaced or created."""
    current = existing[0] if existing else None
    for extra in existing[1:]:  # left by an interrupted mirror: one run per name
        client.delete_run(extra.info.run_id)
    digests = {TABLE_DIGEST: record.table_digest, TRAIN_DIGEST: record.train_digest}  # set last: what is complete
    if current is not None and current.data.tags.get(TRAIN_DIGEST) == record.train_digest:
        if current.data.tags.get("mlflow.parentRunId") != parent_id:  # the sweep's run was deleted and made anew
            client.set_tag(current.info.run_id, "mlflow.parentRunId", parent_id)
        if current.data.tags.get(TABLE_DIGEST) == record.table_digest:
            return "unchanged"
        run_id = current.info.run_id
        _log(client, run_id, metrics=record.metrics, tags=record.tags)
        for path in record.artifacts:
            client.log_artifact(run_id, str(path))
        _finish(client, record, run_id)
        _log(client, run_id, tags=digests)
        return "updated"
    if current is not None:
        client.delete_run(current.info.run_id)
    tags = {"mlflow.parentRunId": parent_id, SWEEP: sweep, RUN: record.name}
    start = record.span_ms[0] if record.span_ms else None  # the run list's Created and Duration: its training
    run_id = client.create_run(experiment_id, start_time=start, run_name=record.name, tags=tags).info.run_id
    _log(client, run_id, metrics=record.metrics, steps=record.steps, params=record.params, tags=record.tags)
    for path in record.artifacts:
        client.log_artifact(run_id, str(path))
    _finish(client, record, run_id)
    _log(client, run_id, tags=digests)
    return "replaced" if current is not None else "created"


def mirror_parent(
    client,
    experiment_id: str,
    sweep: str,
    name: str,
    tables: list[Path],
    existing: list,
    span_ms: tuple[int, int] | None,
) -> str:
    """The sweep's run, with the comparison table as artifacts; `span_ms`: from the first training's start to
    the table."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in tables if p.is_file())).hexdigest()[:32]
    if existing and existing[0].data.tags.get(TABLE_DIGEST) == digest:
        return existing[0].info.run_id
    if existing:
        run_id = existing[0].info.run_id
    else:
        run_id = client.create_run(
            experiment_id, start_time=span_ms[0] if span_ms else None, run_name=name, tags={SWEEP: sweep, ROLE: "sweep"}
        ).info.run_id
    _log(client, run_id, tags={"results_dir": name})
    for path in tables:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED", end_time=span_ms[1] if span_ms else None)
    _log(client, run_id, tags={TABLE_DIGEST: digest})
    return run_id


def mirror_sweep(uri: str, experiment: str, results: Path, records: list[RunRecord]) -> dict[str, str]:
    """Mirror every record under the sweep's parent run; {run: what was done}."""
    client, experiment_id = connect(uri, results, experiment)
    sweep = sweep_id(results)
    found = find_runs(client, experiment_id, sweep)
    tables = [results / "comparison.md", results / "comparison.csv"]
    starts = [r.span_ms[0] for r in records if r.span_ms]
    span = (min(starts), int(1000 * tables[1].stat().st_mtime)) if starts and tables[1].is_file() else None
    parent_id = mirror_parent(client, experiment_id, sweep, str(results), tables, found.get("", []), span)
    done = {}
    for record in records:
        done[record.name] = mirror_run(client, experiment_id, parent_id, sweep, record, found.get(record.name, []))
        log.info("mlflow: %s %s", record.name, done[record.name])
    return done

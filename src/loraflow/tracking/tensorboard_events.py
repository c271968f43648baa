"""TensorBoard event files per run (results/runs/<run>/tb/), written from train_log.csv after training,
so training itself never waits on or fails through TensorBoard. `tensorboard --logdir results/runs`
overlays every run of the sweep."""

from __future__ import annotations

from pathlib import Path

from loraflow.io import atomic_dir
from loraflow.tracking.records import RunRecord

DIGEST_FILE = ".loraflow-digest"  # what the event files were written from; equal: the run is left alone


def write_events(results: Path, record: RunRecord) -> bool:
    """Write (or replace) results/runs/<run>/tb/ for one run; False when it is already up to date or the
    run has no curves (a combination of adapters is not trained)."""
    from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package (extra `tracking`)

    if not record.steps:
        return False
    tb_dir = results / "runs" / record.name / "tb"
    digest_path = tb_dir / DIGEST_FILE
    if digest_path.is_file() and digest_path.read_text(encoding="utf-8").strip() == record.train_digest:
        return False
    with atomic_dir(tb_dir) as tmp:  # a rerun replaces the old curves instead of adding to them
        writer = SummaryWriter(log_dir=str(tmp))
        try:
            for name, points in record.steps.items():
                for step, value in points:
                    writer.add_scalar(name, value, step)
        finally:
            writer.close()
        (tmp / DIGEST_FILE).write_text(record.train_digest + "\n", encoding="utf-8")
    return True

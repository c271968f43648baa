"""Training progress for people watching a sweep: one log line at a fixed interval and progress.json.

The train stage logs `progress: step 12/60 (20 %), 352 tokens/s, elapsed 1m02s, ETA 4m08s` at most every
INTERVAL_S seconds and at the last step, and writes the same figures, atomically, to progress.json
beside the run's outputs, which `loraflow status` reads (on a cluster too: a shared filesystem is all it
needs). The ETA counts validation time as well, at the rate seen so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loraflow.io import write_json

INTERVAL_S = 30.0


def duration(seconds: float) -> str:
    """`45s`, `4m08s`, `1h02m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Progress:
    path: str | None  # progress.json (None: log lines only)
    total_steps: int
    interval_s: float = INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    _last: float | None = field(default=None, init=False)

    def update(self, step: int, tokens_seen: int, train_s: float, eval_s: float) -> str | None:
        """The progress line when it is due (the first step, every interval, the last step), else None."""
        now = self.clock()
        if not (self._last is None or now - self._last >= self.interval_s or step >= self.total_steps):
            return None
        self._last = now
        spent = train_s + eval_s
        eta = spent / max(step, 1) * (self.total_steps - step)
        figures = {
            "step": step,
            "total_steps": self.total_steps,
            "percent": 100.0 * step / max(self.total_steps, 1),
            "tokens_per_s": tokens_seen / max(train_s, 1e-9),
            "elapsed_s": spent,
            "eta_s": eta,
            "updated": time.time(),
        }
        if self.path:
            write_json(Path(self.path), figures)
        return (
            f"progress: step {step}/{self.total_steps} ({figures['percent']:.0f} %), {figures['tokens_per_s']:.0f} "
            f"tokens/s, elapsed {duration(spent)}, ETA {duration(eta)}"
        )

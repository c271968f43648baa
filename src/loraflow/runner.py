"""Glue between Snakemake's `script:` directive and the stage functions.

A rule names its inputs, outputs and params exactly like the arguments of its stage function, so
the scripts in workflow/scripts/ are one call each and the functions stay testable without Snakemake.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time


@contextlib.contextmanager
def log_to(path: str | None):
    """Send stdout, stderr (file-descriptor level, so C extensions too) and logging to `path`."""
    if not path:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1, encoding="utf-8") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True, stream=sys.stderr)
        try:
            yield
        except BaseException as exc:
            if is_expected_error(exc):  # one line, no traceback; call_stage prints it once more on the terminal
                logging.getLogger("loraflow").error("%s", exc)
            else:
                logging.getLogger("loraflow").exception("stage failed")
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def is_expected_error(exc: BaseException) -> bool:
    """Errors whose message is meant for the user as it is (bad data, bad config): loraflow's DataError
    and ConfigError, and any exception class with `expected_error = True`."""
    if getattr(exc, "expected_error", False):
        return True
    from loraflow.config import ConfigError

    return isinstance(exc, ConfigError)


def report_expected_error(exc: BaseException) -> None:
    """Print an expected error once, as one readable message without a traceback, and exit non-zero.

    The message also ends the job's log. Snakemake shows the job's stderr, so it appears once on the
    terminal (profiles/default therefore does not set show-failed-logs, which would print the log twice)."""
    print(f"loraflow error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _named(items) -> dict:
    """Named entries of a Snakemake Namedlist; file lists become plain lists."""
    return {k: list(v) if isinstance(v, list) else v for k, v in items.items()}


def call_stage(smk, module: str, function: str):
    """Call loraflow.<module>.<function> with the rule's named input/output/params (and threads).
    An expected error (bad data or config) ends the job with its message only (see report_expected_error)."""
    try:
        return _call_stage(smk, module, function)
    except Exception as exc:
        if is_expected_error(exc):
            report_expected_error(exc)
        raise


def _call_stage(smk, module: str, function: str):
    with log_to(smk.log[0] if smk.log else None):
        gpus = int(smk.resources.get("gpu", 0) or 0)
        if gpus:  # before torch is imported: pin this job to its own device(s) on a multi-GPU machine
            from loraflow.gpu_slots import claim_gpu

            claim_gpu(gpus)
        fn = getattr(importlib.import_module(module), function)
        kwargs = {**_named(smk.input), **_named(smk.output), **_named(smk.params)}
        logging.getLogger("loraflow").info("%s.%s(%s)", module, function, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
        start = time.perf_counter()
        result = fn(**kwargs)
        logging.getLogger("loraflow").info("done in %.1fs", time.perf_counter() - start)
        return result

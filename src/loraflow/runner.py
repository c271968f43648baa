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

from loraflow.binding import bind

# Third-party notices that are not the user's business and read like errors in a job log: the optional
# CPU kernels bitsandbytes looks for on a hub (it falls back to its own code, results are the same),
# and deprecations inside transformers/torch that loraflow does not call itself.
QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub", "kernels")
QUIET_WARNINGS = (
    (FutureWarning, r".*is_gradient_checkpointing.*deprecated"),
    (DeprecationWarning, r".*torch\.jit\.script_method.*deprecated"),
)


def quiet_third_party() -> None:
    import warnings

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


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
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True, stream=sys.stderr
        )
        quiet_third_party()
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


def config_value(config: dict, key: str):
    """`config["train"]["checkpoint_every"]` for key "train.checkpoint_every"."""
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def stage_kwargs(smk) -> dict:
    """The stage function's keyword arguments: the rule's named input, output and params, where

    - params `hp` (a dict: the rule's result-affecting settings, see `settings` in workflow/Snakefile)
      is spread into single keyword arguments, and
    - params `runtime` ({keyword argument: config key}) is looked up in the job's config now: settings
      that cannot change results (threads, checkpoint interval ...), kept out of what Snakemake compares
      to decide on reruns."""
    params = _named(smk.params)
    params.pop("task", None)  # which task's function a shared stage calls (call_task_stage), not an argument
    hp, runtime = params.pop("hp", {}), params.pop("runtime", {})
    kwargs = {**_named(smk.input), **_named(smk.output), **hp, **params}
    kwargs.update({name: config_value(smk.config, key) for name, key in runtime.items()})
    return kwargs


def log_threads(smk, kwargs: dict) -> None:
    """After the stage: the threads torch used next to the threads Snakemake gave the job."""
    if "torch" not in sys.modules or "threads" not in kwargs or (kwargs.get("nproc_per_node") or 1) > 1:
        return  # (several ranks: each process sets its own threads)
    import torch

    used, declared = torch.get_num_threads(), int(getattr(smk, "threads", 0) or 0)
    note = (
        ""
        if used <= declared
        else (
            f"; Snakemake gave this job {declared} (--cores is smaller than torch_threads): it ran alone, with "
            "torch_threads threads, so results do not depend on --cores"
        )
    )
    logging.getLogger("loraflow").info("torch threads: %d (job threads: %d)%s", used, declared, note)


def call_stage(smk, module: str, function: str):
    """Call loraflow.<module>.<function> with the rule's named input/output/params (and threads).
    An expected error (bad data or config) ends the job with its message only (see report_expected_error)."""
    try:
        result = _call_stage(smk, module, function)
    except Exception as exc:
        if is_expected_error(exc):
            report_expected_error(exc)
        raise
    # a stage's word for the terminal (the log holds everything else), e.g. the pre-flight's bill
    terminal = getattr(result, "attrs", {}).get("terminal")
    if terminal:
        print(terminal, file=sys.stderr, flush=True)
    return result


def call_task_stage(smk, stage: str):
    """A shared stage rule (one rule for every task): call the function loraflow.tasks.STAGES names for
    the rule's params `task` and `stage`, as call_stage does."""
    from loraflow.tasks import stage_function

    return call_stage(smk, *stage_function(smk.params.task, stage))


def _call_stage(smk, module: str, function: str):
    with log_to(smk.log[0] if smk.log else None):
        logging.getLogger("loraflow").info(
            "job started: pid %d, %s threads, resources %s",
            os.getpid(),
            getattr(smk, "threads", "?"),
            {k: v for k, v in smk.resources.items() if k in ("gpu", "mem_mb")},
        )
        kwargs = stage_kwargs(smk)
        gpus = int(smk.resources.get("gpu", 0) or 0)
        if gpus:  # before torch is imported: pin this job to its own device(s) on a multi-GPU machine
            from loraflow.train.gpu_slots import check_ranks, claim_gpu

            check_ranks(gpus, int(kwargs.get("nproc_per_node") or 1))
            claim_gpu(gpus)
        fn = getattr(importlib.import_module(module), function)
        bound = bind(fn, kwargs)  # flat rule params -> the settings dataclasses fn's signature names
        logging.getLogger("loraflow").info(
            "%s.%s(%s)", module, function, ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        )
        start = time.perf_counter()
        result = fn(**bound)
        log_threads(smk, kwargs)
        logging.getLogger("loraflow").info("done in %.1fs", time.perf_counter() - start)
        return result

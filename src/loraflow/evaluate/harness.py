"""lm-eval-harness stage (optional extra `lm-eval`): standard benchmarks on the base model and every run.

With internet, name lm-eval tasks in `evaluate.lm_eval_tasks` (e.g. `cmmlu_*`, `ceval-valid_*`, `mmlu_*`
subsets, `arc_easy`); offline, point `evaluate.lm_eval_include_path` at a folder of your own task YAML
files reading local data. Each job loads the model exactly as the evaluate stage does (base, base +
adapter, or a fully fine-tuned model; quantised bases as trained) and hands it to lm-eval's `HFLM`, so
what is scored is what the table reports. The table adds one column per task and metric
(`lm_<task>_<metric>`) and its change against the base model.
"""

from __future__ import annotations

import logging
import math

from loraflow.evaluate.settings import LmEvalSettings
from loraflow.io import write_json

log = logging.getLogger(__name__)


def local_task_names(include_path: str) -> set[str]:
    """Task names defined by the YAML files under `include_path` (files that do not parse are skipped)."""
    from pathlib import Path

    import yaml

    names = set()
    for f in Path(include_path).rglob("*.yaml"):
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("task"), str):
            names.add(doc["task"])
    return names


def run_lm_eval(
    model_dir: str,
    out_json: str,
    settings: LmEvalSettings,
    adapter_dir: str | None = None,
    method: str = "lora",
    threads: int | None = None,
) -> dict:
    """Stage entry point: lm_eval.simple_evaluate on the run's model; writes {task: {metric: value}}."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("evaluate.lm_eval_tasks needs the optional extra: pip install 'loraflow[lm-eval]'") from err
    from loraflow.evaluate.loading import load_for_eval
    from loraflow.model.device import set_seed, set_threads
    from loraflow.model.loading import load_tokenizer

    tasks, include_path, seed = list(settings.tasks), settings.include_path, settings.seed
    set_threads(threads)
    set_seed(seed)
    model = load_for_eval(model_dir, adapter_dir, settings.trust_remote_code, method, settings.precision)
    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(model_dir), batch_size=settings.batch_size)
    # lm-eval indexes its thousands of built-in task files unless every task is one of the user's own
    own = local_task_names(include_path) if include_path else set()
    manager = (
        TaskManager(include_path=include_path, include_defaults=not set(tasks) <= own)
        if include_path
        else TaskManager()
    )
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        limit=settings.limit,
        num_fewshot=settings.num_fewshot,
        task_manager=manager,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        log_samples=False,
        bootstrap_iters=1000,
    )
    results = {}
    for task, metrics in out["results"].items():
        clean = {}
        for key, value in metrics.items():
            if (
                key == "alias"
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and math.isnan(value))
            ):
                continue
            clean[key.replace(",none", "")] = float(value)
        results[task] = clean
    summary = {
        "model": "base" if adapter_dir is None else adapter_dir,
        "tasks": results,
        "limit": settings.limit,
        "n_samples": {
            t: v.get("effective", v.get("original")) if isinstance(v, dict) else v
            for t, v in out.get("n-samples", {}).items()
        },
    }
    write_json(out_json, summary)
    log.info("lm-eval: %s", {t: {k: round(v, 4) for k, v in m.items()} for t, m in results.items()})
    return summary


def lm_eval_columns(summary: dict) -> dict:
    """Table columns: `lm_<task>_<metric>` (standard errors left out), in percent for 0-1 scores."""
    cols = {}
    for task, metrics in summary.get("tasks", {}).items():
        for metric, value in metrics.items():
            if metric.endswith("_stderr"):
                continue
            cols[f"lm_{task}_{metric}"] = 100 * value if 0 <= value <= 1 else value
    return cols

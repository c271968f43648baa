# Successive halving (search.method: halving; loraflow/search/halving.py). Rung k trains every live point
# from its rung k-1 checkpoint to step RUNG_STEPS[k] of its own schedule; the cut after it is a checkpoint
# (halving_select) that keeps the best 1/eta by validation loss, whose file the next rung, the final
# training and the table read. Survivors of the last cut train to the end with `train`, resuming there.
# With search.method grid (the default) nothing here is defined and the per-run lists stay plain lists.
# Parsed on every invocation: no heavy imports here.
from loraflow.search.halving import rung_budgets

SEARCH = config["search"]
# The rungs' step budgets, fixed when the plan is built (train.max_steps, or the epochs at run time, caps them).
RUNG_STEPS = (
    rung_budgets(len(RUNS), SEARCH["eta"], SEARCH["min_steps"], config["train"]["max_steps"]) if HALVING else []
)
# Forgetting-aware cuts (table.retention_floor with retention items): each rung also measures the point's
# validation retention, and the cut keeps the points that hold the floor first. The keys are only added
# where the cut uses them, so a sweep without a floor keeps its params (and nothing reruns).
RUNG_FLOOR = (
    config["table"]["retention_floor"] or None
    if HALVING and CAUSAL_LM and config["evaluate"]["retention_items"]
    else None
)
RUNG_RETENTION = (
    dict(
        retention_items=config["evaluate"]["retention_items"],
        retention_max_new_tokens=config["evaluate"]["retention_max_new_tokens"],
        retention_batch_size=config["evaluate"]["batch_size"],
        retention_precision=EVAL_PRECISION,
    )
    if RUNG_FLOOR
    else {}
)
# The last cut's file: its survivors are the points that finish, its history the table's pruned rows.
LAST_SELECT = f"{R}/search/select{len(RUNG_STEPS) - 1}.json" if RUNG_STEPS else None

if HALVING:
    _why = (
        "the task is classification"
        if not CAUSAL_LM
        else (
            "train.nproc_per_node > 1"
            if config["train"]["nproc_per_node"] > 1
            else "combinations or intruder reductions name their adapters" if COMBOS or REDUCED else None
        )
    )
    if _why:
        raise WorkflowError(
            f"invalid configuration: search.method halving is not available here: {_why}; use search.method grid"
        )


def live_points(k: int) -> list[str]:
    """The points rung k trains: every grid point at rung 0, then the survivors of cut k-1 (a checkpoint)."""
    if k == 0:
        return sorted(RUNS)
    import json

    with open(checkpoints.halving_select.get(k=str(k - 1)).output.out_select, encoding="utf-8") as fh:
        return json.load(fh)["survivors"]


def finished_points(wildcards=None) -> list[str]:
    """The runs that train to the end and get evaluated: all of them for the grid, the last cut's survivors
    (and the combinations and reductions, which halving does not allow) under halving."""
    if not RUNG_STEPS:
        return list(ALL_RUNS)
    return live_points(len(RUNG_STEPS))


def runs_of(pattern, runs, evidence: bool = True) -> list[str] | object:
    """A per-run input over `runs`: the expanded list for the grid; under halving a function of the last cut,
    restricted to the points that finish. With `evidence` (an input of the table or the report's figures) it
    is recorded in HALVING_PER_RUN, so evidence.smk can expand it (halving_evidence); the export's and the
    tracker's inputs are not evidence of the table."""
    if not RUNG_STEPS:
        return expand(pattern, run=runs)
    if evidence:
        HALVING_PER_RUN.append((pattern, list(runs)))
    return lambda wc: expand(pattern, run=[r for r in runs if r in finished_points()])


# (pattern, runs) of every per-run input runs_of made. All are outputs of the survivors' train, evaluate and
# rank_analysis jobs: one missing reruns its job, and with it whatever the table and the figures read.
HALVING_PER_RUN = []


def halving_start(wildcards) -> str | list:
    """train's `resume_from` under halving: the point's checkpoint at the last rung."""
    return f"{R}/search/rung{len(RUNG_STEPS) - 1}/{wildcards.run}" if RUNG_STEPS else []


def halving_evidence() -> list[str]:
    """The per-run inputs runs_of made, for the survivors named by the last cut's file on disk, and the rung
    results that file reports: for evidence.smk, which cannot call input functions before the plan."""
    import json

    if not LAST_SELECT or not os.path.exists(LAST_SELECT):
        return []
    with open(LAST_SELECT, encoding="utf-8") as fh:
        cut = json.load(fh)
    files = [f"{R}/search/rung{rung['rung']}/{name}.json" for rung in cut["rungs"] for name in rung["points"]]
    for pattern, runs in HALVING_PER_RUN:
        files += expand(pattern, run=[r for r in runs if r in cut["survivors"]])
    return files

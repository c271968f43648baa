# The grid's pre-flight: one job, one process, for every grid point without a current check (new points,
# or all of them after a change of what a check depends on). Train jobs wait for their point's check.
#
# Why only the unchecked points: Snakemake does not look at the params of jobs downstream of a job that
# reruns (it assumes they rerun too) and, through an ancient() input, then never reruns them. So the
# train jobs of finished points must not hang below a pre-flight job that reruns: the pre-flight job
# writes only the missing or outdated checks, and a finished point's check is an ordinary file.
#
# A change of the data alone rechecks nothing: a point's counts do not depend on it. The memory estimate
# does (train rows, longest row); each check records what it assumed (train_rows, longest_train_tokens),
# and every train job estimates again from its own rows (train_stats.json).
from loraflow.train.bill import SweepSettings
from loraflow.train.grid_check import PreflightSettings

POINT_KEYS = ["method", "r", "lora_alpha", "target_modules"]  # what a point's counts depend on (not its seed)
# What a check depends on besides its point; recorded in each runs/<run>/preflight.json as `checked_with`.
# (gradient_checkpointing is not here: changing it reruns nothing, the next new check uses it.)
PREFLIGHT_WITH = settings(
    pick(config["train"], ["batch_size"]),
    pick(config["base_model"], ["source", "path", "gguf_file", "revision", "trust_remote_code"]),
    max_length=config["tokenize"]["max_length"],
)
PREFLIGHT_TODO = unchecked_points(RUNS, PREFLIGHT_WITH)
PREFLIGHT_RUNTIME = runtime_keys(
    PreflightSettings,
    SweepSettings,
    sections=("train", "search"),
    aliases={"threads": "torch_threads", "search_method": "search.method", "merge_runs": "merge.runs"},
    # in hp above; the calibration's step count is the bill's own
    skip=("batch_size", "max_length", "trust_remote_code", "calibration_steps"),
)


if PREFLIGHT_TODO:

    rule preflight:
        """The unchecked grid points on the meta device, in one job: target modules exist, parameter
        counts, memory estimate, disk of a merged model. A bad point fails the job, so no training
        starts; every bad point is named."""
        input:
            model_dir=rules.base_model.output.out_dir,
            # the memory estimate counts the train rows and bounds a forward pass by the longest (as the train stage does)
            tokens_meta=rules.tokenize.output.meta_path,
        output:
            out_jsons=expand(f"{R}/runs/{{run}}/preflight.json", run=PREFLIGHT_TODO),
        log:
            f"{R}/logs/preflight.log",
        benchmark:
            f"{R}/benchmarks/preflight.tsv"
        priority: 100
        conda:
            "../envs/train.yaml"
        # the bill times real train steps: on a train process's threads (torch_threads), and alone
        threads: JOB_THREADS
        params:
            hp=settings(
                runs={name: pick(RUNS[name], POINT_KEYS) for name in PREFLIGHT_TODO},
                checked_with=PREFLIGHT_WITH,
                batch_size=config["train"]["batch_size"],
                max_length=config["tokenize"]["max_length"],
                trust_remote_code=config["base_model"]["trust_remote_code"],
            ),
            # What the memory estimate assumes of the train jobs (PreflightSettings) and what the bill reads
            # (SweepSettings, an estimate): every field of both, read when the job runs, so none reruns a check.
            runtime=PREFLIGHT_RUNTIME,
        script:
            "../scripts/preflight.py"


rule preflight_table:
    """results/preflight.csv: the checks of every grid point, known before training."""
    input:
        runs=expand(f"{R}/runs/{{run}}/preflight.json", run=RUNS),
    output:
        out_csv=f"{R}/preflight.csv",
    log:
        f"{R}/logs/preflight_table.log",
    benchmark:
        f"{R}/benchmarks/preflight_table.tsv"
    localrule: True
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/preflight_table.py"

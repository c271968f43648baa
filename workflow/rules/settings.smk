# How every rule passes its settings and threads (included first, by every task).
import os

# Threads of a model job, declared to Snakemake as `threads:` and used by torch: torch_threads, or every
# CPU of this machine when it is 0. Never derived from --cores, so results do not depend on --cores; under
# a smaller --cores Snakemake scales the declaration down and runs that job alone.
JOB_THREADS = config["torch_threads"] or len(os.sched_getaffinity(0))
# A train job's: torch_threads in each of the train.nproc_per_node processes, or every CPU of the machine (split among them).
TRAIN_THREADS = config["torch_threads"] * config["train"]["nproc_per_node"] or JOB_THREADS


def settings(*parts, **values):
    """A rule's result-affecting settings as ONE params entry, `hp` (runner.call_stage passes its items as
    keyword arguments). One dict because Snakemake compares a job's params as a set of values without
    their names: with flat params x=0, y=1, changing x to 1 looks like no change and reruns nothing.
    `parts` are dicts (e.g. a run's grid point), `values` single settings; keys are sorted so the
    recorded value does not depend on their order here."""
    merged = {}
    for part in parts:
        merged.update(part)
    merged.update(values)
    return dict(sorted(merged.items()))


def pick(section, keys):
    """The named keys of a config section (a KeyError names a key that is not in the schema)."""
    return {key: section[key] for key in keys}


# Settings that cannot change a result, read from the config when the job runs (params `runtime`:
# {keyword argument: config key}). They stay out of `hp`, so changing them reruns nothing.
RUNTIME = {"threads": "torch_threads"}

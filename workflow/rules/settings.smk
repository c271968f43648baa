# How every rule passes its settings and threads (included first, by every task).
import os

from loraflow.binding import field_names

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


def runtime_keys(*classes, sections, aliases=None, skip=()):
    """params `runtime` for every field of the settings dataclasses `classes`, less `skip` (fields passed in
    `hp`, or left at their defaults): {field: config key}, the key its alias names or, else, the one key
    of its name in the config `sections`. A field found nowhere, or in two sections, stops the parse
    naming it, so a field added to a settings class reaches the rule or fails loudly, never silently
    keeps its default."""
    aliases = aliases or {}
    keys = {}
    for name in (n for cls in classes for n in field_names(cls) if n not in skip):
        found = [aliases[name]] if name in aliases else [f"{s}.{name}" for s in sections if name in config[s]]
        if len(found) != 1:
            where = f"in two of {list(sections)}" if found else f"in none of {list(sections)}, and it has no alias"
            raise WorkflowError(f"settings field {name!r} ({', '.join(c.__name__ for c in classes)}) is {where}")
        keys[name] = found[0]
    return dict(sorted(keys.items()))

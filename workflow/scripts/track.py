import sys

from loraflow.runner import call_stage
from loraflow.tracking import warning

# The job's log holds the details; a tracker that failed also gets its one line on the terminal.
status = call_stage(snakemake, "loraflow.tracking", "track")  # noqa: F821 (snakemake is injected)
for name, entry in status.items():
    if entry["state"] == "failed":
        print(warning(name, entry["error"]), file=sys.stderr)

# loraflow: raw chat/QA data -> LoRA adapters -> evaluated, merged models -> comparison table.
# Run:  snakemake --cores 1 --resources gpu=1      (see README.md)
# The workflow itself, `rule all` included, lives in workflow/ (usable as a Snakemake module; see
# config/README.md). This file only lets `snakemake` run from the repository root.
include: "workflow/Snakefile"


workflow.default_target = "all"  # an include keeps the includer's default target; take workflow/'s

# loraflow: raw chat/QA data -> LoRA adapters -> evaluated, merged models -> comparison table.
# Run:  snakemake --cores 1 --resources gpu=1      (see README.md)
include: "workflow/Snakefile"


rule all:
    """The comparison table (and everything it needs)."""
    default_target: True
    input:
        FINAL_TARGETS,

from loraflow.runner import call_task_stage

call_task_stage(snakemake, "evaluate_base")  # noqa: F821 (snakemake is injected); the task's function: loraflow.tasks.STAGES

"""loraflow: raw chat/QA data -> LoRA adapters -> a comparison table you can trust and rerun.

Packages follow the pipeline: data -> model -> train -> evaluate -> ship -> report (tasks: task-specific parts).
"""

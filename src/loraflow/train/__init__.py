"""Training: the loop, checkpoints and resume, pre-flight checks, processes and GPU slots, adapter combinations."""

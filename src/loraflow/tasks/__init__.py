"""Tasks: what differs between causal-LM tuning and classification, behind one interface (tasks.base.Task):
how rows become examples, how a batch becomes a loss, how a model is validated and saved. A new task
is one module implementing it; the training loop (train.loop) serves them all."""

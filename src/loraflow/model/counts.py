"""Parameter counts of a model as training builds it."""

from __future__ import annotations


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) as peft counts them (4-bit weights counted unpacked); plain sums for `full`."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())

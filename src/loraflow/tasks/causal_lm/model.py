"""What task causal_lm does to the decoder it trains, beyond the shared methods (model/methods.py):
gradient checkpointing switched on after wrapping, and compiled decoder layers."""

from __future__ import annotations

import logging

from loraflow.model.loading import unwrap

log = logging.getLogger(__name__)


def enable_checkpointing(model) -> None:
    """Gradient checkpointing on an already wrapped (peft) model: every decoder layer recomputes its
    activations in the backward pass."""
    unwrap(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def compile_layers(model, fall_back: bool = False) -> None:
    """torch.compile every decoder layer (one compiled graph shared by all layers, dynamic shapes). With
    `fall_back` (train.compile: auto) a layer that fails to compile runs uncompiled, with a warning."""
    if fall_back:
        import torch._dynamo

        torch._dynamo.config.suppress_errors = True
    lm = unwrap(model)
    layers = getattr(getattr(lm, lm.base_model_prefix), "layers", None)
    if layers is None:
        log.warning("train.compile: no decoder layers found on %s; not compiling", type(lm).__name__)
        return
    for layer in layers:
        layer.compile(dynamic=True)

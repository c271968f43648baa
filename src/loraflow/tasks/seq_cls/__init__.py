"""Sequence classification: an encoder with LoRA and a trained head."""

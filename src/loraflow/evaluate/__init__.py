"""Evaluation against the untouched base: loss, generation metrics, answer checks, retention, lm-eval, rank analysis."""

"""Shipping a run: verified merges, GGUF / Ollama export, model cards, serving recipes."""

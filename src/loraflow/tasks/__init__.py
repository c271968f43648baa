"""Task-specific pieces (how rows become examples and predictions become metrics)."""

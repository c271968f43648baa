"""Task causal_lm: supervised fine-tuning of a causal LM on chats (settings.py: its settings; model.py: what it
does to the decoder; train.py: the task and its train stage)."""

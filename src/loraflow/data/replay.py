"""Replay-data stage: general conversations to mix into training (train.replay), against forgetting.

Fine-tuning on a narrow task pulls a model away from what it could do before; rehearsing general
examples during training holds it back. The offline default source is the base model itself: its own
greedy answers to the built-in general prompts (data.builtin.general_prompts, disjoint from the
retention set), so replay needs no outside data and keeps the model's own distribution
(self-distillation). `train.replay_source` may instead name a chat file of the user's, in any format
the clean stage reads (its rows are taken as they are; unreadable rows are skipped and counted).

Output: the replay conversations (JSONL: id, source, messages, text, assistant_spans) and their token
cache (the tokenise stage's .npz layout and a meta file with the tokenizer's digest), read by the train
stage. Replay rows never reach the task's splits or metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from loraflow.io import atomic_path, write_json, write_jsonl

log = logging.getLogger(__name__)
BUILTIN = "builtin"
COLUMNS = ("messages", "instruction", "input", "output", "question", "answer", "system", "conversations", "history")


def builtin_conversations(model_dir: str, prompts: int, max_new_tokens: int, batch_size: int = 16) -> list[dict]:
    """The base model's greedy answers to the first `prompts` built-in general prompts (0 = all)."""
    from loraflow.data.builtin.general_prompts import build_prompts
    from loraflow.data.chatml import ensure_chat_template, render
    from loraflow.evaluate.generation import generate
    from loraflow.evaluate.loading import load_for_eval
    from loraflow.model.loading import load_tokenizer

    items = build_prompts()
    items = items[:prompts] if prompts else items
    tokenizer = load_tokenizer(model_dir)
    ensure_chat_template(tokenizer)
    model = load_for_eval(model_dir, None)
    asked = [render(tokenizer, [{"role": "user", "content": it["prompt"]}], add_generation_prompt=True) for it in items]
    answers, speed = generate(model, tokenizer, asked, batch_size, max_new_tokens)
    log.info("replay: the base model answered %d general prompts in %.1fs", len(items), speed["generation_s"])
    return [
        {"id": it["id"], "messages": [{"role": "user", "content": it["prompt"]}, {"role": "assistant", "content": a}]}
        for it, a in zip(items, answers)
        if a
    ]


def file_conversations(path: str) -> tuple[list[dict], int]:
    """The conversations of a user's replay file and how many rows could not be read."""
    from loraflow.data.conversations import to_messages
    from loraflow.data.readers import DataError, iter_raw_rows

    if not Path(path).is_file():
        raise DataError(f"config key train.replay_source: {path} is not a file (builtin, or a chat data file)")
    columns = {k: k for k in COLUMNS}  # the common formats under their usual column names
    rows, skipped = [], 0
    for raw in iter_raw_rows(path):
        try:
            if raw.error is not None:
                raise raw.error
            messages = to_messages(raw.data, columns, raw.where or f"{path}:{raw.line}")
        except ValueError:
            skipped += 1
            continue
        if any(m["role"] == "assistant" for m in messages):
            rows.append({"id": f"replay-{raw.line}", "messages": messages})
        else:
            skipped += 1
    if not rows:
        raise DataError(f"config key train.replay_source: {path} holds no readable conversation with an assistant turn")
    return rows, skipped


def write_tokens(tokenizer, rows: list[dict], max_length: int, out_tokens: str) -> dict:
    """Token ids and assistant masks of `rows` in the token cache's layout; counts for the meta file."""
    from loraflow.data.tokenization import encode_example

    ids, masks, offsets = [], [], [0]
    for row in rows:
        i, m = encode_example(tokenizer, row["text"], row["assistant_spans"], max_length, truncate=True)
        ids.extend(i)
        masks.extend(m)
        offsets.append(len(ids))
    with atomic_path(out_tokens) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            input_ids=np.asarray(ids, dtype=np.int32),
            labels_mask=np.asarray(masks, dtype=np.uint8),
            offsets=np.asarray(offsets, dtype=np.int64),
        )
    return {"examples": len(rows), "tokens": len(ids), "supervised_tokens": int(sum(masks))}


def build_replay(
    model_dir: str,
    out_rows: str,
    out_tokens: str,
    out_meta: str,
    max_length: int,
    source: str = BUILTIN,
    generation: dict | None = None,
    threads: int | None = None,
) -> dict:
    """Replay-data stage entry point. `generation`: replay_prompts (how many built-in prompts, 0 = all)
    and replay_max_new_tokens of the base model's answers (train.replay_* in the config)."""
    from loraflow.data.chatml import ensure_chat_template, format_example
    from loraflow.data.tokenization import tokenizer_digest
    from loraflow.model.device import set_threads
    from loraflow.model.loading import load_tokenizer

    set_threads(threads)
    generation = {"replay_prompts": 0, "replay_max_new_tokens": 128, **(generation or {})}
    if source == BUILTIN:
        conversations = builtin_conversations(
            model_dir, generation["replay_prompts"], generation["replay_max_new_tokens"]
        )
        skipped = 0
        if not conversations:
            from loraflow.data.readers import DataError

            raise DataError(
                "config key train.replay_source: the base model answered none of the built-in general prompts "
                "(every answer empty), so it has nothing to replay; name a chat file of your own"
            )
    else:
        conversations, skipped = file_conversations(source)
    tokenizer = load_tokenizer(model_dir)
    ensure_chat_template(tokenizer)
    rows = [
        {
            "id": c["id"],
            "source": source,
            **{
                k: v
                for k, v in format_example(tokenizer, c["messages"], "").items()
                if k in ("messages", "text", "assistant_spans")
            },
        }
        for c in conversations
    ]
    write_jsonl(out_rows, rows)
    meta = {
        "tokenizer_sha256": tokenizer_digest(model_dir),
        "max_length": max_length,
        "source": source,
        "skipped_rows": skipped,
        **write_tokens(tokenizer, rows, max_length, out_tokens),
    }
    write_json(out_meta, meta)
    log.info(
        "replay data: %d conversations from %s (%d supervised tokens)%s",
        len(rows),
        source,
        meta["supervised_tokens"],
        f", {skipped} unreadable rows skipped" if skipped else "",
    )
    return meta

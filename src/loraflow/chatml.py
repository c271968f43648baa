"""Format stage: render conversations as ChatML text and locate the assistant spans to train on.

The tokenizer's own chat template is used when it has one, otherwise the built-in ChatML template.
Assistant spans are found by rendering the conversation turn by turn, so they are exact character
ranges of the final text; the tokenise stage turns them into label masks.
"""

from __future__ import annotations

import logging

from loraflow.io import read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(ValueError):
    pass


def ensure_chat_template(tokenizer) -> str:
    """Give the tokenizer the built-in ChatML template if it has none; return which one is used."""
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    tokenizer.chat_template = CHATML_TEMPLATE
    return "builtin-chatml"


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def with_system_prompt(messages: list[dict], system_prompt: str) -> list[dict]:
    if system_prompt and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def render_with_spans(tokenizer, messages: list[dict]) -> tuple[str, list[list[int]]]:
    """Full text and [start, end) character spans of every assistant reply (including its end marker)."""
    text = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = text if i == len(messages) - 1 else render(tokenizer, messages[: i + 1])
        if not upto.startswith(prompt) or not text.startswith(upto):
            raise TemplateError(
                "the chat template does not render conversations prefix-stably, so assistant tokens "
                "cannot be located; use a model whose template is ChatML-like"
            )
        spans.append([len(prompt), len(upto)])
    return text, spans


def format_example(tokenizer, messages: list[dict], system_prompt: str) -> dict:
    """One training example: rendered text, assistant spans, and the prompt/reference of the last turn."""
    messages = with_system_prompt(messages, system_prompt)
    text, spans = render_with_spans(tokenizer, messages)
    return {
        "messages": messages,
        "text": text,
        "assistant_spans": spans,
        "prompt": render(tokenizer, messages[:-1], add_generation_prompt=True),
        "reference": messages[-1]["content"],
    }


def format_dataset(clean_path: str, model_dir: str, out_path: str, stats_path: str, system_prompt: str) -> dict:
    """Format stage entry point: clean.jsonl -> formatted.jsonl (one row out per row in)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = ensure_chat_template(tokenizer)
    rows = read_jsonl(clean_path)
    # Extra fields of the source row (`meta`) travel with the example unchanged, through the split too.
    out = [{"id": row["id"], "meta": row.get("meta", {}), **format_example(tokenizer, row["messages"], system_prompt)} for row in rows]
    write_jsonl(out_path, out)
    stats = {"rows_in": len(rows), "rows_out": len(out), "template": template}
    write_json(stats_path, stats)
    log.info("formatted %d conversations with the %s chat template", len(out), template)
    return stats

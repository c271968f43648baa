"""Format stage: render conversations as ChatML text and locate the assistant spans to train on.

The tokenizer's own chat template is used when it has one, otherwise the built-in ChatML template.
Assistant spans are found by rendering the conversation turn by turn, so they are exact character
ranges of the final text; the tokenise stage turns them into label masks. An assistant turn with
`"weight": 0` (the axolotl/ShareGPT convention) stays in the text as context but gets no span, so it
is not trained on.

Some chat templates add a default system prompt of their own to a conversation without a system turn
(SmolLM2: "You are a helpful AI assistant named SmolLM, ..."; Qwen2.5: "You are Qwen, ..."): that is
the text the model was tuned with, so it is kept, and `template_system_prompt` finds it so that the
format stage can report it (data.system_prompt puts another in its place).
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


def is_trained(message: dict) -> bool:
    """An assistant turn is trained on unless its `weight` is 0."""
    return message["role"] == "assistant" and message.get("weight", 1) != 0


_PROBE_SYSTEM, _PROBE_USER = "\x1fsystem-probe\x1f", "\x1fuser-probe\x1f"


def template_system_prompt(tokenizer) -> str:
    """The system prompt the chat template adds by itself to a conversation without a system turn
    ('' when it adds none): the text it renders where an explicit system prompt would stand."""
    plain = render(tokenizer, [{"role": "user", "content": _PROBE_USER}])
    try:
        with_system = render(
            tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": _PROBE_USER}]
        )
    except Exception:  # a template that refuses system turns cannot add one either
        return ""
    if _PROBE_SYSTEM not in with_system:
        return ""
    head, tail = with_system.split(_PROBE_SYSTEM, 1)
    if len(plain) > len(head) + len(tail) and plain.startswith(head) and plain.endswith(tail):
        return plain[len(head) : len(plain) - len(tail)]
    return ""


def render_with_spans(tokenizer, messages: list[dict]) -> tuple[str, list[list[int]]]:
    """Full text and [start, end) character spans of every assistant reply (including its end marker),
    weight 0 or not (format_example keeps the spans of the trained ones)."""
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
    assistants = [m for m in messages if m["role"] == "assistant"]
    return {
        "messages": messages,
        "text": text,
        "assistant_spans": [span for span, m in zip(spans, assistants) if is_trained(m)],
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
    out = [
        {
            "id": row["id"],
            **({"source": row["source"]} if "source" in row else {}),
            "meta": row.get("meta", {}),
            **format_example(tokenizer, row["messages"], system_prompt),
        }
        for row in rows
    ]
    write_jsonl(out_path, out)
    untrained = sum(1 for row in out for m in row["messages"] if m["role"] == "assistant" and not is_trained(m))
    added = template_system_prompt(tokenizer)
    without_system = sum(1 for row in out if row["messages"][0]["role"] != "system")
    stats = {
        "rows_in": len(rows),
        "rows_out": len(out),
        "template": template,
        "untrained_turns": untrained,
        "template_system_prompt": added or None,
        "rows_with_template_system_prompt": without_system if added else 0,
    }
    write_json(stats_path, stats)
    log.info(
        "formatted %d conversations with the %s chat template; %d assistant turns with weight 0 (context, not trained "
        "on)",
        len(out),
        template,
        untrained,
    )
    if added and without_system:
        log.info(
            "the chat template adds its own system prompt to the %d conversations without one: %r "
            "(data.system_prompt puts another in its place)",
            without_system,
            added,
        )
    return stats

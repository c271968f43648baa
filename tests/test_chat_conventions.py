"""Chat conventions: per-turn `weight` 0 is context, not trained on; a template's own default system
prompt is found and reported (what reaches the tokenizer is what the docs say)."""

import json

import numpy as np
import pytest

from loraflow.data.chatml import format_dataset, format_example, template_system_prompt
from loraflow.data.tokenization import encode_example

# SmolLM2-Instruct's chat template as it ships (tokenizer.chat_template of SmolLM2-135M-Instruct).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CONVERSATION = [
    {"role": "user", "content": "What does the X1 cost?"},
    {"role": "assistant", "content": "Ask me later.", "weight": 0},
    {"role": "user", "content": "How long is the warranty?"},
    {"role": "assistant", "content": "Two years.", "weight": 1},
]


@pytest.fixture
def tokenizer(tiny_model):  # a fresh one per test: tests change its chat template
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def labels_of(tokenizer, example: dict) -> tuple[list[int], list[int], list]:
    ids, mask = encode_example(tokenizer, example["text"], example["assistant_spans"], 10_000)
    offsets = tokenizer(example["text"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return ids, [i if m else -100 for i, m in zip(ids, mask)], offsets


def test_a_weight_0_turn_is_context_with_no_labels(tokenizer):
    example = format_example(tokenizer, CONVERSATION, "")
    text = example["text"]
    assert "Ask me later." in text  # the turn stays in the text as context
    ids, labels, offsets = labels_of(tokenizer, example)
    skipped = text.index("Ask me later.")
    trained = text.index("Two years.")
    in_skipped = [lab for lab, (a, b) in zip(labels, offsets) if a >= skipped and b <= skipped + len("Ask me later.")]
    in_trained = [lab for lab, (a, b) in zip(labels, offsets) if a >= trained and b <= trained + len("Two years.")]
    assert in_skipped and all(lab == -100 for lab in in_skipped)
    assert in_trained and all(lab != -100 for lab in in_trained)
    # without weights both turns are trained on: the weight alone makes the difference
    plain = format_example(tokenizer, [{k: v for k, v in m.items() if k != "weight"} for m in CONVERSATION], "")
    assert plain["text"] == text and len(plain["assistant_spans"]) == 2 and len(example["assistant_spans"]) == 1
    assert np.count_nonzero(np.array(labels_of(tokenizer, plain)[1]) != -100) > np.count_nonzero(
        np.array(labels) != -100
    )


def test_a_templates_default_system_prompt_is_found_and_reported(tokenizer, tmp_path):
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    no_system = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    rendered = format_example(tokenizer, no_system, "")["text"]  # exactly what the tokenise stage encodes
    assert rendered.startswith(f"<|im_start|>system\n{SMOLLM2_DEFAULT}<|im_end|>\n<|im_start|>user\nHi")
    assert template_system_prompt(tokenizer) == SMOLLM2_DEFAULT
    assert (
        SMOLLM2_DEFAULT not in format_example(tokenizer, no_system, "Be brief.")["text"]
    )  # data.system_prompt replaces it

    model_dir = tmp_path / "tok"
    tokenizer.save_pretrained(model_dir)
    clean = tmp_path / "clean.jsonl"
    clean.write_text(
        "\n".join(json.dumps({"id": str(i), "messages": m}) for i, m in enumerate([no_system, CONVERSATION])) + "\n",
        encoding="utf-8",
    )
    stats = format_dataset(str(clean), str(model_dir), str(tmp_path / "f.jsonl"), str(tmp_path / "s.json"), "")
    assert stats["template_system_prompt"] == SMOLLM2_DEFAULT and stats["rows_with_template_system_prompt"] == 2
    assert stats["untrained_turns"] == 1


def test_a_chatml_template_adds_no_system_prompt(tokenizer):
    from helpers import CHATML

    tokenizer.chat_template = CHATML
    assert template_system_prompt(tokenizer) == ""
    assert format_example(
        tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], ""
    )["text"].startswith("<|im_start|>user\nHi")

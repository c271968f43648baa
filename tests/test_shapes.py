"""Preflight counts at the sizes users train (7-8B), on the meta device: the total equals the published
parameter count of the checkpoint, the trainable count equals peft's own count of a meta model and
the closed form of LoRA (r x (in + out) per adapted matrix)."""

import pytest

from loraflow.model.shapes import PUBLISHED_PARAMS, SHAPES, model_config
from loraflow.train.grid_check import lora_counts, meta_model


def lora_closed_form(shape: str, r: int, modules: tuple[str, ...]) -> int:
    c = SHAPES[shape]
    d, kv = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"] * c["num_key_value_heads"]
    dims = {
        "q_proj": (d, d),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (d, d),
        "gate_proj": (d, c["intermediate_size"]),
        "up_proj": (d, c["intermediate_size"]),
        "down_proj": (c["intermediate_size"], d),
    }
    return c["num_hidden_layers"] * sum(r * (dims[m][0] + dims[m][1]) for m in modules)


def peft_meta_count(shape: str, r: int, targets) -> tuple[int, int]:
    """peft's own count, on a separately built meta model, with a LoraConfig written here."""
    import torch
    from peft import LoraConfig, get_peft_model

    with torch.device("meta"):
        return get_peft_model(
            meta_model(model_config(shape)),
            LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM"),
        ).get_nb_trainable_parameters()


@pytest.mark.parametrize("shape", ["llama-3-8b", "qwen2.5-7b", "mistral-7b", "qwen2.5-0.5b", "smollm2-135m"])
def test_meta_model_has_the_published_parameter_count(shape):
    model = meta_model(model_config(shape))
    assert type(model).__name__ == SHAPES[shape]["architectures"][0]
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[shape]


@pytest.mark.parametrize("shape", ["llama-3-8b", "qwen2.5-7b", "mistral-7b"])
def test_preflight_counts_at_7_to_8b_match_peft_and_the_closed_form(shape):
    published = PUBLISHED_PARAMS[shape]
    qv = lora_counts(meta_model(model_config(shape)), 8, 16, "qv")
    assert qv == peft_meta_count(shape, 8, ["q_proj", "v_proj"])
    assert qv == (lora_closed_form(shape, 8, ("q_proj", "v_proj")), published + qv[0])
    every = lora_counts(meta_model(model_config(shape)), 16, 32, "all-linear")
    assert every == peft_meta_count(shape, 16, "all-linear")
    assert every[0] == lora_closed_form(
        shape, 16, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )
    assert lora_counts(meta_model(model_config(shape)), None, None, None, "full") == (published, published)


def test_known_peft_figures_for_r8_on_q_and_v():
    """The figures peft's print_trainable_parameters shows for these models (r=8 on q_proj, v_proj)."""
    assert lora_counts(meta_model(model_config("llama-3-8b")), 8, 16, "qv") == (3_407_872, 8_033_669_120)
    assert lora_counts(meta_model(model_config("mistral-7b")), 8, 16, "qv") == (3_407_872, 7_245_139_968)
    assert lora_counts(meta_model(model_config("qwen2.5-7b")), 8, 16, "qv") == (2_523_136, 7_618_139_648)

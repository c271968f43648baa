"""Target-module presets resolve per model family, and a mismatch lists the model's linear layers."""

import pytest

from loraflow.model.targets import TargetModuleError, resolve, resolve_for_model


def meta(config):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def tiny(family: str):
    from transformers import BloomConfig, GPT2Config, LlamaConfig, Qwen2Config

    small = dict(vocab_size=64)
    return {
        "llama": LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, **small),
        "qwen2": Qwen2Config(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            **small,
        ),
        "gpt2": GPT2Config(n_embd=16, n_layer=2, n_head=2, **small),
        "bloom": BloomConfig(hidden_size=16, n_layer=2, n_head=2, **small),
    }[family]


@pytest.mark.parametrize(
    "family, preset, expected",
    [
        ("llama", "qv", ["q_proj", "v_proj"]),
        ("qwen2", "attn", ["q_proj", "k_proj", "v_proj", "o_proj"]),
        ("gpt2", "qv", ["c_attn"]),
        ("gpt2", "mlp", ["c_fc", "mlp.c_proj"]),
        ("bloom", "qv", ["query_key_value"]),
        ("bloom", "mlp", ["dense_h_to_4h", "dense_4h_to_h"]),
    ],
)
def test_presets_resolve_to_the_familys_names_and_peft_accepts_them(family, preset, expected):
    from peft import LoraConfig, get_peft_model

    model = meta(tiny(family))
    targets = resolve_for_model(model, preset)
    assert targets == expected
    wrapped = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets, task_type="CAUSAL_LM"))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in wrapped.named_parameters() if ".lora_A" in n}
    assert len(adapted) == 2 * len(expected)  # every target in both layers


def test_bert_presets_for_encoders():
    assert resolve("qv", "roberta") == ["query", "value"]
    assert resolve("all-linear", "gpt2") == "all-linear"


def test_a_preset_that_does_not_fit_lists_the_linear_layers():
    model = meta(tiny("gpt2"))
    with pytest.raises(TargetModuleError) as err:
        resolve_for_model(model, ["q_proj"])
    assert "grid.target_modules: q_proj not found in GPT2LMHeadModel" in str(err.value)
    assert "c_attn" in str(err.value) and "c_fc" in str(err.value)
    model.config.model_type = "llama"  # a preset resolved for the wrong family fails the same way
    with pytest.raises(TargetModuleError, match=r"preset 'qv' \(llama names\): q_proj, v_proj not found"):
        resolve_for_model(model, "qv")

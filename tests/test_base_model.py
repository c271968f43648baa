"""The base-model stage reads user weights from safetensors only, never from pickle files."""

import shutil

import pytest

from loraflow.config import ConfigError
from loraflow.model.base_model import prepare_base_model


def test_a_pickle_only_model_directory_is_refused(tmp_path, tiny_model):
    """A directory with pytorch_model.bin only (pickle: loading it can run code) stops the stage with
    the config key and what to do; nothing is written."""
    import torch
    from transformers import AutoModelForCausalLM

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model, pickled)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    assert not list(pickled.glob("*.safetensors"))
    with pytest.raises(ConfigError) as err:
        prepare_base_model(str(tmp_path / "out"), source="local", path=str(pickled))
    msg = str(err.value)
    assert (
        msg.startswith("config key base_model.path:")
        and "only pickle weights (pytorch_model.bin)" in msg
        and "safetensors" in msg
    )
    assert not (tmp_path / "out").exists()


def test_safetensors_are_used_even_next_to_a_pickle(tmp_path, tiny_model):
    """With both files present the safetensors weights are loaded (use_safetensors=True) and the
    pickle is never opened: it is garbage here, and loading it would fail."""
    both = tmp_path / "both"
    shutil.copytree(tiny_model, both)
    (both / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    info = prepare_base_model(str(tmp_path / "out"), source="local", path=str(both), threads=1)
    assert info["parameters"] > 0 and (tmp_path / "out" / "model.safetensors").is_file()


def test_a_bf16_model_keeps_its_dtype(tmp_path, tiny_model):
    """Safetensors weights are written in the dtype they are stored in: a bf16 model is not doubled to fp32
    (at 7B that is 28 GB instead of 15 GB), and its weights are unchanged."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(bf16)
    shutil.copy(tiny_model / "tokenizer.json", bf16)
    shutil.copy(tiny_model / "tokenizer_config.json", bf16)
    info = prepare_base_model(str(tmp_path / "out"), source="local", path=str(bf16), threads=1)
    assert info["dtype"] == "bfloat16"
    before, after = load_file(bf16 / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert {t.dtype for t in after.values()} == {torch.bfloat16}
    assert all(torch.equal(before[k], after[k]) for k in after)
    fp32 = prepare_base_model(str(tmp_path / "out32"), source="local", path=str(tiny_model), threads=1)
    assert fp32["dtype"] == "float32"  # an fp32 model stays fp32

"""The base-model stage reads user weights from safetensors only, never from pickle files."""

import shutil

import pytest

from loraflow.base_model import prepare_base_model
from loraflow.config import ConfigError


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
    assert msg.startswith("config key base_model.path:") and "only pickle weights (pytorch_model.bin)" in msg and "safetensors" in msg
    assert not (tmp_path / "out").exists()


def test_safetensors_are_used_even_next_to_a_pickle(tmp_path, tiny_model):
    """With both files present the safetensors weights are loaded (use_safetensors=True) and the
    pickle is never opened: it is garbage here, and loading it would fail."""
    both = tmp_path / "both"
    shutil.copytree(tiny_model, both)
    (both / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    info = prepare_base_model(str(tmp_path / "out"), source="local", path=str(both), threads=1)
    assert info["parameters"] > 0 and (tmp_path / "out" / "model.safetensors").is_file()

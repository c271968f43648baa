"""Safe loading: YAML without code execution, safetensors only, no remote code unless configured."""

import pytest
import torch
import yaml

from loraflow.config import load_yaml, validate_config
from loraflow.model.loading import load_causal_lm


def test_yaml_with_python_tags_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(yaml.constructor.ConstructorError):
        load_yaml(path)


def test_trust_remote_code_is_off_by_default():
    assert validate_config({})["base_model"]["trust_remote_code"] is False


def test_pickle_weights_are_refused(tmp_path, tiny_model):
    import shutil

    from safetensors.torch import load_file

    shutil.copy(tiny_model / "config.json", tmp_path / "config.json")
    torch.save(load_file(tiny_model / "model.safetensors"), tmp_path / "pytorch_model.bin")  # a pickle checkpoint only
    with pytest.raises(OSError):
        load_causal_lm(str(tmp_path), torch.device("cpu"))

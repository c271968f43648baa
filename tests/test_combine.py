"""Several adapters on one base: switching is verified and weighted combinations are real adapters."""

import json

import pytest
import torch

from loraflow.binding import bind
from loraflow.ship.merge import merge_adapter
from loraflow.ship.settings import MergeSettings
from loraflow.tasks.causal_lm.train import train_lora
from loraflow.train.combine import combine_adapters


@pytest.fixture(scope="module")
def parts(tiny_data, tiny_model, tmp_path_factory):
    """Two trained adapters with different ranks and seeds: {name: adapter dir}. With dropout, so a
    combination left in training mode would show (dropout is part of the adapter's layers)."""
    paths, npz = tiny_data
    root = tmp_path_factory.mktemp("parts")
    out = {}
    for name, r, seed in (("r2_a8_qv", 2, 1), ("r4_a8_qv", 4, 2)):
        d = root / name
        train_lora(
            **bind(
                train_lora,
                dict(
                    model_dir=str(tiny_model),
                    train_path=npz[0],
                    val_path=npz[1],
                    tokens_meta=str(paths["meta"]),
                    out_adapter=str(d / "adapter"),
                    out_log=str(d / "log.csv"),
                    out_stats=str(d / "stats.json"),
                    r=r,
                    lora_alpha=8,
                    target_modules="qv",
                    max_steps=6,
                    batch_size=4,
                    eval_every=0,
                    learning_rate=0.05,
                    lora_dropout=0.1,
                    threads=1,
                    seed=seed,
                    precision="fp32",
                ),
            )
        )
        out[name] = str(d / "adapter")
    return out


def combine(tiny_model, tiny_data, parts, tmp_path, name="mix", **kw):
    paths, _ = tiny_data
    args = dict(adapter_names=list(parts), weights=[0.7, 0.3], combination_type="cat", threads=1)
    args.update(kw)
    d = tmp_path / name
    stats = combine_adapters(
        **bind(
            combine_adapters,
            dict(
                model_dir=str(tiny_model),
                adapter_dirs=list(parts.values()),
                test_path=str(paths["dir"] / "test.jsonl"),
                out_adapter=str(d / "adapter"),
                out_stats=str(d / "train_stats.json"),
                out_check=str(d / "switch_check.json"),
                **args,
            ),
        )
    )
    return d, stats


def delta_weights(model_dir, adapter_dir) -> dict[str, torch.Tensor]:
    """What merging the adapter adds to each base weight."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    merged = (
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir)
        .merge_and_unload()
        .state_dict()
    )
    return {k: merged[k] - base[k] for k in base if not torch.equal(merged[k], base[k])}


@pytest.mark.parametrize("precision", [None, "bf16"])
def test_switching_is_verified_and_cat_is_the_weighted_sum(tiny_model, tiny_data, parts, tmp_path, precision):
    """Also with the deploy precision bf16 (precision auto on a GPU or a CPU with bf16 units): the checks run
    on a bf16 base, the combination is still the exact fp32 weighted sum (peft would make it in bf16)."""
    d, stats = combine(tiny_model, tiny_data, parts, tmp_path, precision=precision)
    check = json.loads((d / "switch_check.json").read_text())
    assert check["precision"] == ("bf16" if precision else "fp32") and check["combined_in"] == "fp32"
    assert all(v <= 1e-4 for v in check["switching_max_abs_logit_diff"].values())
    assert min(check["between_adapters_max_abs_logit_diff"].values()) > 1e-3  # the parts really differ
    assert check["reload_max_abs_logit_diff"] <= 1e-4
    cfg = json.loads((d / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 2 + 4 == stats["r"]  # cat: ranks add up
    assert not (d / "adapter" / "combined").exists() and (d / "adapter" / "adapter_model.safetensors").is_file()
    d1, d2 = (delta_weights(str(tiny_model), p) for p in parts.values())
    combined = delta_weights(str(tiny_model), str(d / "adapter"))
    assert combined.keys() == d1.keys() == d2.keys() and len(combined) == 4  # q_proj, v_proj in 2 layers
    for k in combined:
        torch.testing.assert_close(combined[k], 0.7 * d1[k] + 0.3 * d2[k], atol=1e-6, rtol=1e-4)
    assert stats["trainable_params"] == 2 * (6 * 32 + 32 * 6 + 6 * 32 + 16 * 6)
    assert stats["method"] == "combine" and stats["final_train_loss"] is None


def test_the_combination_merges_like_any_adapter(tiny_model, tiny_data, parts, tmp_path):
    paths, _ = tiny_data
    d, _ = combine(tiny_model, tiny_data, parts, tmp_path, combination_type="svd", weights=[1.0, 1.0])
    check = merge_adapter(
        str(tiny_model),
        str(d / "adapter"),
        str(paths["dir"] / "test.jsonl"),
        str(d / "merged"),
        str(d / "merge_check.json"),
        MergeSettings(threads=1, speed_tokens=2),
    )
    assert check["passed"]


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(weights=[1.0]), "combine.mix.weights: 1 weights for 2 adapters"),
        (dict(combination_type="linear"), "combine.mix.combination_type: linear needs adapters of equal r"),
        (dict(combination_type="ties"), "combine.mix.density: combination_type ties needs a density"),
        (dict(combination_type="avg"), "combine.mix.combination_type: 'avg' is not one of"),
    ],
)
def test_bad_combinations_are_refused_before_loading(tiny_model, tiny_data, parts, tmp_path, kw, fragment):
    with pytest.raises(ValueError) as err:
        combine(tiny_model, tiny_data, parts, tmp_path, **kw)
    assert fragment in str(err.value)
    assert not (tmp_path / "mix" / "adapter").exists()

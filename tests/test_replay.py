"""Replay against forgetting: the general prompts stay apart from the retention set, the replay data is
the base model's own answers (or the user's file), and replay rows reach training but not the metrics."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from loraflow.binding import bind
from loraflow.data.builtin.general_prompts import build_prompts
from loraflow.data.readers import DataError
from loraflow.data.replay import build_replay
from loraflow.data.tokenization import load_split
from loraflow.evaluate.retention import build_items
from loraflow.train.replay import ReplayMix


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def test_general_prompts_are_disjoint_from_the_retention_items():
    """No replay prompt is a retention question, and none names what a retention item asks about or
    accepts as its answer (countries, capitals, planets ...), so replay cannot rehearse the measurement."""
    prompts = build_prompts()
    items = build_items()
    assert len({p["id"] for p in prompts}) == len(prompts) > 100
    assert {p["lang"] for p in prompts} == {"en", "zh"}
    assert not {_norm(p["prompt"]) for p in prompts} & {_norm(it["prompt"]) for it in items}
    from loraflow.evaluate.retention import _CAPITALS

    names = {n for row in _CAPITALS for n in row} | {
        a for it in items if it["check"] in ("contains", "cased") for a in it["answers"] if not str(a).isdigit()
    }
    names = {n for n in names if len(n) >= 2}
    text = "\n".join(p["prompt"] for p in prompts)
    assert not [n for n in names if (n in text if not n.isascii() else re.search(rf"\b{re.escape(n)}\b", text, re.I))]


def test_mix_takes_its_share_of_each_micro_batch_and_draws_deterministically():
    mix = ReplayMix(list(range(50)), 0.2)
    assert [mix.rows_for(n) for n in (0, 1, 4, 8, 16)] == [0, 1, 1, 2, 4]  # 2 of 10 rows, 4 of 20
    assert ReplayMix([], 0.0).rows_for(8) == 0
    assert mix.draw(5, 3, 0, 8) == mix.draw(5, 3, 0, 8) and len(set(mix.draw(5, 3, 0, 8))) == 2
    assert {tuple(mix.draw(5, 3, j, 16)) for j in range(4)} != {tuple(mix.draw(5, 3, 0, 16))}
    with pytest.raises(ValueError, match="train.replay"):
        ReplayMix([1], 1.0)
    with pytest.raises(ValueError, match="no example"):
        ReplayMix([], 0.3)


@pytest.mark.slow
def test_builtin_replay_data_is_the_base_models_own_answers(smollm2, tmp_path):
    from loraflow.evaluate.generation import generate
    from loraflow.evaluate.loading import load_for_eval
    from loraflow.model.loading import load_tokenizer

    model_dir, _ = smollm2  # conftest: SmolLM2-135M-Instruct, a base model that answers general prompts
    out = {k: str(tmp_path / f"replay.{k}") for k in ("rows", "tokens", "meta")}
    meta = build_replay(
        str(model_dir),
        out["rows"],
        out["tokens"],
        out["meta"],
        max_length=128,
        generation={"replay_prompts": 6, "replay_max_new_tokens": 24},
    )
    rows = [json.loads(line) for line in open(out["rows"], encoding="utf-8")]
    asked = build_prompts()[:6]
    tok = load_tokenizer(str(model_dir))
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": p["prompt"]}], tokenize=False, add_generation_prompt=True)
        for p in asked
    ]
    answers, _ = generate(load_for_eval(str(model_dir), None), tok, prompts, 16, 24)
    assert len(rows) == 6 and all(answers)  # the real model answers every prompt
    assert [r["messages"][0]["content"] for r in rows] == [p["prompt"] for p in asked]
    assert [r["messages"][1]["content"] for r in rows] == answers
    examples = load_split(out["tokens"], out["meta"], str(model_dir))
    assert len(examples) == meta["examples"] == 6 and meta["source"] == "builtin"
    assert all(mask.sum() > 0 for _, mask in examples) and meta["supervised_tokens"] == sum(
        int(m.sum()) for _, m in examples
    )


def test_a_base_model_that_answers_nothing_has_nothing_to_replay(tiny_model, tmp_path):
    """The tiny random model answers every prompt with nothing: one clear error naming the key, before training."""
    out = {k: str(tmp_path / f"replay.{k}") for k in ("rows", "tokens", "meta")}
    with pytest.raises(DataError, match="train.replay_source: the base model answered none"):
        build_replay(
            str(tiny_model),
            out["rows"],
            out["tokens"],
            out["meta"],
            max_length=64,
            generation={"replay_prompts": 4, "replay_max_new_tokens": 8},
        )


def test_a_users_replay_file_is_read_and_bad_rows_are_counted(tiny_model, tmp_path):
    src = tmp_path / "general.jsonl"
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]}
    src.write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
                json.dumps({"instruction": "Say yes", "output": "Yes."}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = {k: str(tmp_path / f"replay.{k}") for k in ("rows", "tokens", "meta")}
    meta = build_replay(str(tiny_model), out["rows"], out["tokens"], out["meta"], max_length=64, source=str(src))
    rows = [json.loads(line) for line in open(out["rows"], encoding="utf-8")]
    assert [r["messages"][-1]["content"] for r in rows] == ["Hello there.", "Yes."]
    assert meta["skipped_rows"] == 2 and meta["source"] == str(src)
    with pytest.raises(DataError, match="train.replay_source"):
        build_replay(
            str(tiny_model),
            out["rows"],
            out["tokens"],
            out["meta"],
            max_length=64,
            source=str(tmp_path / "missing.jsonl"),
        )


ARGS = dict(
    r=8,
    lora_alpha=16,
    target_modules="all-linear",
    max_steps=40,
    batch_size=2,
    eval_every=10,
    learning_rate=0.05,
    lora_dropout=0.0,
    threads=1,
    seed=5,
)


def train(tiny_data, out, **kw):
    from loraflow.tasks.causal_lm.train import train_lora

    d, npz = tiny_data
    return train_lora(
        **bind(
            train_lora,
            dict(
                model_dir=str(d["model"]),
                train_path=npz[0],
                val_path=npz[1],
                tokens_meta=str(d["meta"]),
                out_adapter=str(out / "adapter"),
                out_log=str(out / "log.csv"),
                out_stats=str(out / "stats.json"),
                **{**ARGS, **kw},
            ),
        )
    )


@pytest.fixture(scope="module")
def replay_data(tiny_data, tmp_path_factory):
    """A replay file whose answers are one fixed phrase the task rows never use."""
    d = tmp_path_factory.mktemp("replay")
    src = d / "general.jsonl"
    src.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Question {i}?"},
                        {"role": "assistant", "content": "zebra zebra zebra"},
                    ]
                }
            )
            + "\n"
            for i in range(12)
        ),
        encoding="utf-8",
    )
    out = {k: str(d / f"replay.{k}") for k in ("rows", "tokens", "meta")}
    build_replay(str(tiny_data[0]["model"]), out["rows"], out["tokens"], out["meta"], max_length=64, source=str(src))
    return out


def replay_loss(model_dir: str, adapter_dir, replay_data) -> float:
    from peft import PeftModel

    from loraflow.model.loading import load_causal_lm, load_tokenizer
    from loraflow.model.loss import mean_loss

    model = PeftModel.from_pretrained(
        load_causal_lm(model_dir, torch.device("cpu"), dtype=torch.float32), str(adapter_dir)
    ).eval()
    examples = load_split(replay_data["tokens"], replay_data["meta"], model_dir)
    return mean_loss(model, examples, 4, load_tokenizer(model_dir).pad_token_id, torch.device("cpu"))


def test_replay_rows_reach_training_and_not_the_metrics(tiny_data, replay_data, tmp_path):
    """With replay 0.5 each micro-batch of 2 task rows gets 2 replay rows: the stats count them, the
    model learns the replay answers (their loss falls below the run without replay), and validation
    is still the task's own (the same validation rows at the same steps)."""
    plain = train(tiny_data, tmp_path / "plain", eval_every=0)
    mixed = train(
        tiny_data,
        tmp_path / "mixed",
        eval_every=0,
        replay=0.5,
        replay_tokens=replay_data["tokens"],
        replay_meta=replay_data["meta"],
    )
    assert plain["replay_rows_seen"] == 0 and mixed["replay_rows_seen"] == 2 * ARGS["max_steps"]
    lengths = [
        len(ids) for ids, _ in load_split(replay_data["tokens"], replay_data["meta"], str(tiny_data[0]["model"]))
    ]
    assert (
        min(lengths) * mixed["replay_rows_seen"]
        <= mixed["replay_tokens_seen"]
        <= max(lengths) * mixed["replay_rows_seen"]
    )
    assert (
        mixed["tokens_seen"] == plain["tokens_seen"] + mixed["replay_tokens_seen"]
    )  # same task rows, plus the replay rows
    model = str(tiny_data[0]["model"])
    # Without the replay rows both runs would be the same run (same seed, same task rows): the gap is replay's.
    assert (
        replay_loss(model, tmp_path / "mixed" / "adapter", replay_data)
        < replay_loss(model, tmp_path / "plain" / "adapter", replay_data) - 0.1
    )
    log_plain = np.genfromtxt(tmp_path / "plain" / "log.csv", delimiter=",", names=True)
    log_mixed = np.genfromtxt(tmp_path / "mixed" / "log.csv", delimiter=",", names=True)
    assert (
        np.isnan(log_plain["eval_loss"]).sum() == np.isnan(log_mixed["eval_loss"]).sum()
    )  # validated at the same steps


def test_a_resumed_replay_run_ends_identical(tiny_data, replay_data, tmp_path):
    """Replay rows are drawn per (seed, step, micro-batch): a run resumed from its checkpoint draws what
    the uninterrupted run drew and ends with the same adapter."""
    from helpers import kill_after_first_checkpoint

    kw = dict(replay=0.5, replay_tokens=replay_data["tokens"], replay_meta=replay_data["meta"], checkpoint_every=5)
    reference = train(tiny_data, tmp_path / "ref", checkpoint_dir=str(tmp_path / "ckpt_ref"), **kw)
    d, npz = tiny_data
    args = dict(
        model_dir=str(d["model"]),
        train_path=npz[0],
        val_path=npz[1],
        tokens_meta=str(d["meta"]),
        out_adapter=str(tmp_path / "killed" / "adapter"),
        out_log=str(tmp_path / "killed" / "log.csv"),
        out_stats=str(tmp_path / "killed" / "stats.json"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        **ARGS,
        **kw,
    )
    assert (
        kill_after_first_checkpoint("loraflow.tasks.causal_lm.train", "train_lora", args, tmp_path / "ckpt")
        < ARGS["max_steps"]
    )
    from loraflow.tasks.causal_lm.train import train_lora

    resumed = train_lora(**bind(train_lora, args))
    a = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["replay_rows_seen"] == reference["replay_rows_seen"]


@pytest.mark.slow
def test_replay_in_the_workflow_retrains_and_stays_out_of_evaluation(finished_run, tiny_model, tmp_path):
    """train.replay on a finished sweep: the replay data is built once (the base model's own answers),
    every point retrains with it, and the evaluated rows are still exactly the test split's."""
    import shutil

    from helpers import planned_jobs, snakemake, tiny_config, write_config

    first, _ = finished_run
    shutil.copytree(first, tmp_path, dirs_exist_ok=True)
    cfg = tiny_config(tiny_model)
    # the tiny random model answers nothing, so this sweep replays a file (the built-in source: the SmolLM2 test above)
    source = tmp_path / "general.jsonl"
    source.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"Tip {i}?"},
                        {"role": "assistant", "content": f"Rest well, {i}."},
                    ]
                }
            )
            + "\n"
            for i in range(10)
        )
    )
    cfg["train"] = {**cfg.get("train", {}), "replay": 0.25, "replay_source": str(source)}
    write_config(tmp_path, cfg)
    jobs = planned_jobs(tmp_path)
    assert jobs["replay_data"] == 1 and jobs["train"] == 2 and "clean" not in jobs and "tokenize" not in jobs
    snakemake(tmp_path, "--cores", "1", "--resources", "gpu=1")
    res = tmp_path / "results"
    replay_ids = {json.loads(line)["id"] for line in (res / "data" / "replay.jsonl").read_text().splitlines()}
    assert len(replay_ids) == 10 and all(i.startswith("replay-") for i in replay_ids)
    test_ids = {json.loads(line)["id"] for line in (res / "data" / "test.jsonl").read_text().splitlines()}
    for run in ("r2_a8_qv", "r4_a8_qv"):
        stats = json.loads((res / "runs" / run / "train_stats.json").read_text())
        assert stats["replay"] == 0.25 and stats["replay_rows_seen"] > 0
        scored = {
            json.loads(line)["id"]
            for line in (res / "runs" / run / "scores.jsonl").read_text().splitlines()
            if json.loads(line).get("split") == "test"
        }
        assert scored <= test_ids and not scored & replay_ids

"""Export stage: GGUF writing and read-back, Modelfile, model cards, serve.md, run selection.

Tiny random models (Llama with tied embeddings, Qwen2 with q/k/v biases and padded vocabulary, Mistral
with a SentencePiece-style tokenizer) cover the converter; the real SmolLM2-135M (slow) covers the
whole stage on the default model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers import QA, REPO, synth_corpus
from loraflow.data.chatml import CHATML_TEMPLATE, format_example
from loraflow.io import read_json, write_json, write_jsonl
from loraflow.model.loading import load_tokenizer
from loraflow.ship.export import check_export_config, export_run, runs_to_export
from loraflow.ship.export_check import ExportCheckError
from loraflow.ship.export_summary import write_export_summary
from loraflow.ship.exportable import ExportError, check_model_config
from loraflow.ship.gguf_writer import rope_deinterleave, rope_interleave, write_gguf
from loraflow.ship.ollama import (
    go_template,
    measure_segments,
    modelfile,
    parse_modelfile,
    template_mismatches,
)
from loraflow.ship.settings import (
    BaseModelSource,
    CardInfo,
    CardLocations,
    CardSources,
    ExportSettings,
    ProvenanceInputs,
)

SYSTEM = "Be brief."


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def logits_of(model, tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        return model(**enc).logits[enc["attention_mask"].bool()].float()


def roundtrip(model_dir: Path, out: Path, kind: str = "f16"):
    """Write model_dir as GGUF, read it back with transformers; (reference model, GGUF model, tokenizer)."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(model_dir), padding_side="left")
    out.mkdir(parents=True, exist_ok=True)
    summary = write_gguf(model_dir, out / f"model-{kind}.gguf", kind, tok, tok.chat_template, name="test")
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file=f"model-{kind}.gguf", dtype=torch.float32).eval()
    return ref, back, tok, summary


TEXTS = [
    "<|im_start|>user\nWhat does the X1 cost?<|im_end|>\n<|im_start|>assistant\nThe X1 costs $129.<|im_end|>\n",
    "谁生产的？ 洛摩家居生产。 Two years, 30 days, free above $50.",
]


def tiny_qwen2(out_dir: Path, tokenizer_dir: Path) -> Path:
    """Qwen2 (biases on q/k/v, untied head) with 8 embedding rows beyond the tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(1)
    cfg = Qwen2Config(
        vocab_size=len(tok) + 8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:  # non-zero biases, so a lost bias shows
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def tiny_mistral_spm(out_dir: Path, corpus: list[str]) -> Path:
    """Mistral with a Llama-2/Mistral-style tokenizer: byte-fallback BPE over '▁'-joined text, <unk>/<s>/</s>
    then the 256 byte tokens, no chat template (loraflow then trains with its built-in ChatML)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    probe = Tokenizer(models.BPE(unk_token="<unk>"))
    probe.normalizer = norm
    probe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, show_progress=False))
    learned = json.loads(probe.to_str())["model"]
    specials, byte_tokens = ["<unk>", "<s>", "</s>"], [f"<0x{i:02X}>" for i in range(256)]
    vocab = {t: i for i, t in enumerate(specials + byte_tokens)}
    for t in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    spm = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    spm.normalizer = norm
    spm.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    spm.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=spm, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(2)
    cfg = MistralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=2,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    MistralForCausalLM(cfg).save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def fake_sweep(d: Path, model_dir: Path, runs=("r2_a8_qv", "r4_a8_qv"), best="r4_a8_qv", ci=True) -> dict:
    """What the stages before export leave behind: split files, stats, comparison.csv, provenance."""
    from transformers import AutoTokenizer

    from loraflow.ship.provenance import write_provenance

    d.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    rows = [
        {
            "id": str(i),
            **format_example(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], SYSTEM),
        }
        for i, (q, a) in enumerate(QA)
    ]
    write_jsonl(d / "test.jsonl", rows)
    write_jsonl(d / "raw.jsonl", [{"question": q, "answer": a} for q, a in QA])
    write_json(d / "split_stats.json", {"rows_in": 10, "train": 6, "val": 1, "test": 1, "rejected": 2})
    write_json(d / "meta.json", {"tokenizer_sha256": "tok-digest", "data_sha256": "split-digest"})
    table = [{"run": "base", "best": "", "status": "ok", "rougeL": 10.0, "bleu": 1.0, "test_loss": 3.0}]
    for i, run in enumerate(runs):
        row = {
            "run": run,
            "best": "best (rougeL)" if run == best else "",
            "status": "ok",
            "r": 2 * (i + 1),
            "rougeL": 20.0 + i,
            "bleu": 2.0,
            "test_loss": 2.0,
        }
        if ci:
            row.update(rougeL_lo=15.0 + i, rougeL_hi=25.0 + i)
        table.append(row)
    pd.DataFrame(table).to_csv(d / "comparison.csv", index=False)
    write_json(
        d / "train_stats.json", {"precision": "fp32", "steps": 4, "trainable_params": 128, "learning_rate": 0.01}
    )
    write_provenance(
        ProvenanceInputs(
            str(model_dir), str(d / "split_stats.json"), str(d / "meta.json"), data_path=str(d / "raw.jsonl")
        ),
        str(d / "provenance.json"),
        BaseModelSource("local", str(model_dir)),
        data_spec=str(d / "raw.jsonl"),
        system_prompt=SYSTEM,
    )
    return {
        "test_path": str(d / "test.jsonl"),
        "comparison": str(d / "comparison.csv"),
        "train_stats": str(d / "train_stats.json"),
        "provenance": str(d / "provenance.json"),
    }


def sources(paths: dict) -> CardSources:
    return CardSources(paths["comparison"], paths["train_stats"], paths["provenance"])


HP = {
    "point": "r4_a8_qv",
    "method": "lora",
    "r": 4,
    "lora_alpha": 8.0,
    "targets": "qv",
    "target_modules": "qv",
    "seed": 42,
}


# ---------------------------------------------------------------------------------------------
# converter
# ---------------------------------------------------------------------------------------------


def test_rope_interleave_is_inverted_by_transformers_gguf_loader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)  # 8 heads of 16 dims
    ours = rope_interleave(w, 8)
    assert not np.array_equal(ours, w)
    assert np.array_equal(LlamaTensorProcessor()._reverse_permute_weights(ours, 8, 8), w)
    assert np.array_equal(rope_deinterleave(ours, 8), w)
    # per head: dimension i of the first half sits next to dimension i of the second half
    assert list(ours[:4, 0]) == [w[0, 0], w[8, 0], w[1, 0], w[9, 0]]


def test_tiny_llama_f16_and_q8_0_read_back(tiny_model, tmp_path):
    ref, back, tok, summary = roundtrip(tiny_model, tmp_path, "f16")
    a, b = logits_of(ref, tok, TEXTS), logits_of(back, tok, TEXTS)
    scale = a.abs().max().item()
    assert (a - b).abs().max().item() <= 16 * 2**-11 * scale
    assert summary["tied_embeddings"] and summary["tensor_types"] == {"F16": 15, "F32": 5}
    ref, back, tok, summary = roundtrip(tiny_model, tmp_path, "q8_0")
    assert summary["tensor_types"] == {"Q8_0": 15, "F32": 5}
    assert (a - logits_of(back, tok, TEXTS)).abs().max().item() < 0.05 * scale


def sharpened(model_dir: Path, out: Path, factor: float = 25.0) -> Path:
    """The tiny model with q/k scaled up: a random model at init attends almost uniformly, so rotary
    position (and a wrong Q/K layout) hardly shows; scaled up, attention depends on it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(factor)
            layer.self_attn.k_proj.weight.mul_(factor)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def test_without_the_rope_interleave_the_read_back_model_differs(tiny_model, tmp_path, monkeypatch):
    """The Q/K reordering is what makes the file right: with it the logits match, skipped they do not."""
    import loraflow.ship.gguf_writer as ge

    model_dir = sharpened(tiny_model, tmp_path / "sharp")
    ref, back, tok, _ = roundtrip(model_dir, tmp_path / "ok", "f16")
    a = logits_of(ref, tok, TEXTS)
    tolerance = 16 * 2**-11 * a.abs().max().item()
    assert (a - logits_of(back, tok, TEXTS)).abs().max().item() <= tolerance
    monkeypatch.setattr(ge, "rope_interleave", lambda w, n: w)
    _, back, _, _ = roundtrip(model_dir, tmp_path / "bad", "f16")
    assert (a - logits_of(back, tok, TEXTS)).abs().max().item() > 20 * tolerance


def test_qwen2_biases_untied_head_and_padded_vocabulary(tiny_model, tmp_path):
    from gguf import GGUFReader

    model_dir = tiny_qwen2(tmp_path / "qwen2", tiny_model)
    ref, back, tok, summary = roundtrip(model_dir, tmp_path / "out", "f16")
    names = {t.name for t in GGUFReader(str(tmp_path / "out" / "model-f16.gguf")).tensors}
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias", "output.weight"} <= names
    assert summary["architecture"] == "qwen2" and not summary["tied_embeddings"] and summary["n_vocab"] == len(tok) + 8
    a, b = logits_of(ref, tok, TEXTS), logits_of(back, tok, TEXTS)
    assert type(back).__name__ == "Qwen2ForCausalLM" and a.shape == b.shape
    assert (a - b).abs().max().item() <= 16 * 2**-11 * a.abs().max().item()


def test_mistral_with_sentencepiece_style_tokenizer(tmp_path):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    corpus = synth_corpus(120)
    model_dir = tiny_mistral_spm(tmp_path / "mistral", corpus)
    ref, back, tok, summary = roundtrip(model_dir, tmp_path / "out", "f16")
    assert summary["tokenizer"] == "llama" and summary["architecture"] == "llama"
    fields = GGUFReader(str(tmp_path / "out" / "model-f16.gguf")).fields
    types = fields["tokenizer.ggml.token_type"].contents()
    assert types[1] == 3 and types[3] == 6 and types[0] == 2  # <s> CONTROL, <0x00> BYTE, <unk> UNKNOWN
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is True
    back_tok = AutoTokenizer.from_pretrained(tmp_path / "out", gguf_file="model-f16.gguf")
    samples = corpus[:40] + ["Hello world, the X1 costs $129.", "混合 text ✓ with emoji 🙂"]
    same = sum(
        back_tok(s, add_special_tokens=False)["input_ids"] == tok(s, add_special_tokens=False)["input_ids"]
        for s in samples
    )
    assert same == len(samples)
    a, b = logits_of(ref, tok, TEXTS), logits_of(back, tok, TEXTS)
    assert (a - b).abs().max().item() <= 16 * 2**-11 * a.abs().max().item()


def test_unsupported_architectures_are_refused_with_the_supported_ones_named(tmp_path):
    with pytest.raises(ExportError, match="GPT2LMHeadModel.*LlamaForCausalLM.*MistralForCausalLM.*Qwen2ForCausalLM"):
        check_model_config({"architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ExportError, match="rope scaling 'yarn'"):
        check_model_config({"architectures": ["Qwen2ForCausalLM"], "rope_scaling": {"type": "yarn", "factor": 4}})
    assert check_model_config({"architectures": ["MistralForCausalLM"]}) == "llama"
    # at config parse time, when export is enabled: a local GPT-2 base stops the workflow
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(
        json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    )
    from loraflow.config import validate_config

    cfg = validate_config(
        {"base_model": {"source": "local", "path": str(tmp_path / "gpt2")}, "export": {"enabled": True}}
    )
    with pytest.raises(ExportError, match="base_model.path.*GPT2LMHeadModel.*supports"):
        check_export_config(cfg, {"r8_a16_qv": {}})
    cfg["export"]["enabled"] = False
    check_export_config(cfg, {"r8_a16_qv": {}})  # not exporting: no reason to refuse the model
    cfg["export"]["runs"] = ["r9_a1_qv"]
    with pytest.raises(ExportError, match="export.runs: r9_a1_qv not a run"):
        check_export_config(cfg, {"r8_a16_qv": {}})


def test_pre_tokenizer_names_llama_cpp_needs():
    """The byte-level pre-tokenizers we recognise (patterns as transformers' own GGUF reader spells them)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    from loraflow.ship.gguf_vocab import _pre_tokenizer_name

    def split(pattern):
        return {
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated"},
                    {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
                ],
            }
        }

    assert _pre_tokenizer_name(split(GGUF_PRE_TOKENIZER_SPLITS["qwen2"])) == "qwen2"
    assert _pre_tokenizer_name(split(GGUF_PRE_TOKENIZER_SPLITS["llama-bpe"])) == "llama-bpe"
    assert (
        _pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}})
        == "gpt-2"
    )
    smollm = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}],
    }
    assert _pre_tokenizer_name({"pre_tokenizer": smollm}) == "smollm"
    with pytest.raises(ExportError, match="unrecognised byte-level pre-tokenizer"):
        _pre_tokenizer_name(split(r"\p{L}+|\s+"))


# ---------------------------------------------------------------------------------------------
# template and Modelfile
# ---------------------------------------------------------------------------------------------

LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | "
    "trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% "
    "endif %}"
)
CONVERSATIONS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What does the X1 cost?"}],
    [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "洛摩?"},
    ],
]


def test_go_template_is_measured_from_the_chat_template(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    seg = measure_segments(tok)
    assert (
        seg.prefix["user"] == "<|im_start|>user\n"
        and seg.suffix["assistant"] == "<|im_end|>\n"
        and seg.generation == "<|im_start|>assistant\n"
    )
    assert template_mismatches(tok, seg, CONVERSATIONS) == []
    tok.chat_template = LLAMA3_LIKE
    seg = measure_segments(tok)
    assert seg.begin == tok.bos_token and seg.suffix["user"] == "<|eot_id|>"
    assert template_mismatches(tok, seg, CONVERSATIONS) == []
    tpl = go_template(seg)
    assert tpl.startswith(tok.bos_token + "{{ if .System }}") and "{{-" not in tpl


def test_templates_ollama_cannot_reproduce_stop_the_export(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    tok.chat_template = "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ExportError, match="not prefix-stable"):
        measure_segments(tok)
    tok.chat_template = (
        "{% for m in messages %}{% if loop.index0 == 1 %}FIRST-USER {% endif %}<{{ m['role'] }}>{{ m['content'] }}\n{% "
        "endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    with pytest.raises(ExportError, match="differently depending on their position"):
        measure_segments(tok)


@pytest.mark.skipif(
    shutil.which("go") is None,
    reason="the Go toolchain is not installed (apt install golang-go); "
    "the Python model of the template is tested instead",
)
def test_go_template_renders_in_go_like_the_chat_template(tiny_model, tmp_path):
    """Go's own text/template (as Ollama uses it) renders the TEMPLATE exactly like the Jinja template."""
    tok = load_tokenizer(str(tiny_model))
    (tmp_path / "main.go").write_text(
        'package main\nimport ("encoding/json"; "os"; "text/template")\n'
        "type M struct { Role string; Content string }\n"
        "type D struct { System string; Messages []M }\n"
        'func main() { b, _ := os.ReadFile(os.Args[1]); t := template.Must(template.New("t").Parse(string(b)))\n'
        "var d D; c, _ := os.ReadFile(os.Args[2]); json.Unmarshal(c, &d); t.Execute(os.Stdout, d) }\n"
    )
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gopath"), "GO111MODULE": "off"}
    subprocess.run(
        ["go", "build", "-o", str(tmp_path / "render"), str(tmp_path / "main.go")],
        check=True,
        env=env,
        capture_output=True,
    )
    for template in (tok.chat_template, LLAMA3_LIKE):
        tok.chat_template = template
        (tmp_path / "tpl").write_text(go_template(measure_segments(tok)))
        for conv in CONVERSATIONS:
            (tmp_path / "data.json").write_text(
                json.dumps({"System": conv[0]["content"], "Messages": conv})
            )  # Ollama keeps system messages in .Messages
            out = subprocess.run(
                [str(tmp_path / "render"), str(tmp_path / "tpl"), str(tmp_path / "data.json")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert out == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_modelfile_fields():
    text = modelfile(
        "model-q8_0.gguf", "{{ .System }}", "Be brief.", ["<|im_end|>", "<|endoftext|>"], 48, header="run x"
    )
    mf = parse_modelfile(text)
    assert mf["FROM"] == "./model-q8_0.gguf" and mf["TEMPLATE"] == "{{ .System }}" and mf["SYSTEM"] == "Be brief."
    params = mf["PARAMETER"]
    assert ("stop", "<|im_end|>") in params and ("stop", "<|endoftext|>") in params
    assert ("temperature", "0") in params and ("num_predict", "48") in params and ("repeat_penalty", "1") in params
    with pytest.raises(ExportError, match='"""'):
        modelfile("m.gguf", "x", 'a """ b', [], 8)


# ---------------------------------------------------------------------------------------------
# run selection
# ---------------------------------------------------------------------------------------------


def test_runs_to_export_are_best_json_s_run_or_the_configured_list(tmp_path):
    write_json(tmp_path / "best.json", {"run": "b", "metric": "rougeL", "split": "val"})
    assert runs_to_export("best", str(tmp_path / "best.json")) == ["b"]
    assert runs_to_export(["a", "c"], str(tmp_path / "best.json")) == ["a", "c"]
    write_json(tmp_path / "none.json", {"run": None, "metric": "rougeL", "split": "val"})  # no run finished
    for missing in (str(tmp_path / "none.json"), str(tmp_path / "absent.json"), None):
        with pytest.raises(ExportError, match="names no best run"):
            runs_to_export("best", missing)


# ---------------------------------------------------------------------------------------------
# the stage on the tiny model
# ---------------------------------------------------------------------------------------------


def test_export_stage_writes_verified_files_modelfile_and_card(tiny_model, tmp_path):
    paths = fake_sweep(tmp_path / "sweep", tiny_model)
    out = tmp_path / "export" / "r4_a8_qv"
    check = export_run(
        str(tiny_model),
        paths["test_path"],
        str(out),
        sources(paths),
        CardInfo(
            "r4_a8_qv",
            HP,
            train_config={"learning_rate": 0.01, "max_steps": 4},
            system_prompt=SYSTEM,
            max_new_tokens=16,
        ),
        ExportSettings(prompts=8, logit_prompts=3, q8_0_tokens=16, llama_cpp="skip"),
        adapters_dir="results/adapters/r4_a8_qv",
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "Modelfile",
        "README.md",
        "export_check.json",
        "model-f16.gguf",
        "model-q8_0.gguf",
    ]
    saved = read_json(out / "export_check.json")
    assert saved["passed"] and saved == json.loads(json.dumps(check))
    f16, q8 = saved["types"]["f16"], saved["types"]["q8_0"]
    assert (
        f16["max_abs_logit_diff"] <= f16["tolerance"] and f16["vs_f16_rounded_max_abs_diff"] == 0.0
    )  # exactly the rounded weights
    assert (
        q8["greedy_agreement"] >= 0.9
        and saved["template"]["template_renders_same"] == 8 == saved["template"]["tokenizer_ids_same"]
    )
    assert saved["llama_cpp"] == {"ran": False, "reason": "export.llama_cpp is skip"}
    mf = parse_modelfile((out / "Modelfile").read_text())
    assert mf["FROM"] == "./model-q8_0.gguf" and mf["SYSTEM"] == SYSTEM and ("stop", "<|im_end|>") in mf["PARAMETER"]
    assert ("num_predict", "16") in mf["PARAMETER"] and ("temperature", "0") in mf["PARAMETER"]
    card = (out / "README.md").read_text()
    prov = read_json(paths["provenance"])
    for needle in (
        prov["base_model"]["original"]["sha256"],
        prov["data"]["sha256"],
        "train 6, val 1, test 1, rejected 2",
        "| r | 4 |",
        "| lora_alpha | 8 |",
        "| max_steps | 4 |",
        "| rougeL | 21 [16, 26] | 10 |",
        "unknown - check the base model",
        "PeftModel.from_pretrained",
        "llama-server -m",
        "ollama create",
        check["files"]["q8_0"]["sha256"],
        "Be brief.",
    ):
        assert needle in card, needle


def test_card_licence_from_the_model_readme_and_no_interval_columns(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "README.md").write_text("---\nlicense: mit\nlanguage: en\n---\n# tiny\n")
    paths = fake_sweep(tmp_path / "sweep", model, ci=False)
    from loraflow.ship.card import card, eval_row

    prov = read_json(paths["provenance"])
    assert prov["base_model"]["license"] == "MIT"
    text = card(
        CardInfo("r4_a8_qv", HP, train_config={}, system_prompt=SYSTEM, max_new_tokens=8),
        prov,
        eval_row(paths["comparison"], "r4_a8_qv"),
        {},
        CardLocations(adapter_dir="results/adapters/r4_a8_qv"),
    )
    assert "| rougeL | 21 | 10 |" in text and "license: mit" in text and "**MIT**" in text


def test_a_failed_check_fails_the_stage_and_leaves_no_output(tiny_model, tmp_path):
    paths = fake_sweep(tmp_path / "sweep", tiny_model)
    out = tmp_path / "export" / "r4_a8_qv"
    with pytest.raises(ExportCheckError, match=r"f16: max \|Δlogit\|.*> tolerance"):
        export_run(
            str(tiny_model),
            paths["test_path"],
            str(out),
            sources(paths),
            CardInfo("r4_a8_qv", HP),
            ExportSettings(
                types=["f16"], prompts=2, logit_prompts=2, q8_0_tokens=4, f16_tolerance=1e-6, llama_cpp="skip"
            ),
        )
    assert not out.exists() and not list(out.parent.glob(".*tmp"))


# ---------------------------------------------------------------------------------------------
# adapter packages and serve.md
# ---------------------------------------------------------------------------------------------


def make_adapters(model_dir: Path, out: Path) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for name, kwargs in {
        "r2_a8_qv": {"r": 2},
        "r4_a8_qv": {"r": 4},
        "r2_a8_qv_dora": {"r": 2, "use_dora": True},
    }.items():
        torch.manual_seed(0)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(model_dir),
            LoraConfig(lora_alpha=8, target_modules=["q_proj", "v_proj"], **kwargs),
        )
        model.save_pretrained(out / name)
        adapters[name] = out / name
    return adapters


def test_adapter_packages_and_serve_md_load_every_adapter(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loraflow.ship.adapter_package import package_adapter
    from loraflow.ship.serve import lora_modules, write_serve

    paths = fake_sweep(tmp_path / "sweep", tiny_model, runs=("r2_a8_qv", "r4_a8_qv", "r2_a8_qv_dora"))
    adapters = make_adapters(tiny_model, tmp_path / "runs")
    packages = []
    for name, src in adapters.items():
        pkg = tmp_path / "results" / "adapters" / name
        (src / ".snakemake_timestamp").touch()  # the train rule's directory marker
        package_adapter(str(src), str(pkg), sources(paths), CardInfo(name, {**HP, "r": 2}, system_prompt=SYSTEM))
        assert (pkg / "adapter_model.safetensors").stat().st_ino == (
            src / "adapter_model.safetensors"
        ).stat().st_ino  # a hard link
        assert not (pkg / ".snakemake_timestamp").exists()  # never linked: touching it would touch the train output
        assert "sha256" in (pkg / "README.md").read_text() and "Peft" not in (pkg / "README.md").read_text()[:200]
        meta = __import__("huggingface_hub").ModelCard.load(pkg / "README.md").data
        assert (
            meta.library_name == "peft"
            and meta.license == "other"
            and str(tmp_path) not in (pkg / "README.md").read_text()
        )
        packages.append(str(pkg))
    write_serve(packages, str(tiny_model), str(tmp_path / "serve.md"), system_prompt=SYSTEM, max_new_tokens=16)
    text = (tmp_path / "serve.md").read_text()
    assert "--enable-lora" in text and "--max-lora-rank 8" in text and "--max-loras 2" in text
    assert "`r2_a8_qv_dora` is not in the command: DoRA" in text
    listed = lora_modules(str(tmp_path / "serve.md"))
    assert sorted(listed) == ["r2_a8_qv", "r4_a8_qv"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    for name, path in listed.items():
        model = PeftModel.from_pretrained(base, path)
        assert model.peft_config["default"].r == {"r2_a8_qv": 2, "r4_a8_qv": 4}[name]
        base = model.unload()


# ---------------------------------------------------------------------------------------------
# Snakemake
# ---------------------------------------------------------------------------------------------

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, env=env)


def planned(out: str) -> dict[str, int]:
    import re

    return {
        m.group(1): int(m.group(2))
        for line in out.splitlines()
        if (m := re.match(r"^(\w+)\s+(\d+)$", line.strip())) and m.group(1) != "total"
    }


def test_export_is_only_in_all_when_enabled_and_refuses_unsupported_models_at_parse_time(tiny_model, tmp_path):
    cfg = {"base_model": {"source": "local", "path": str(tiny_model)}, "grid": {"r": [2, 4], "lora_alpha": [8]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    plain = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert plain.returncode == 0, plain.stderr[-3000:]
    jobs = planned(plain.stdout)
    assert "table" in jobs and not {"export", "export_model", "adapter_package", "serve", "provenance"} & set(jobs)
    cfg["export"] = {"enabled": True}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    enabled = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert enabled.returncode == 0, enabled.stderr[-3000:]
    jobs = planned(enabled.stdout)
    assert jobs["adapter_package"] == 2 and jobs["provenance"] == jobs["serve"] == jobs["export"] == 1
    assert "export_model" not in jobs  # which run is known only after the checkpoint `table` wrote best.json
    cfg["export"]["runs"] = ["r2_a8_qv"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    listed = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert listed.returncode == 0, listed.stderr[-3000:]
    jobs = planned(listed.stdout)
    assert jobs["export_model"] == 1 and jobs["merge"] == 1  # the listed run's merged model, made for its export
    cfg["export"]["runs"] = "best"
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(
        json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    )
    cfg["base_model"]["path"] = str(tmp_path / "gpt2")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    refused = snakemake(tmp_path, "-n")
    assert refused.returncode != 0 and "GGUF export supports LlamaForCausalLM" in refused.stdout + refused.stderr


# ---------------------------------------------------------------------------------------------
# the real default model (slow)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_exports_and_reads_back(smollm2, tmp_path):
    model_dir, _ = smollm2  # conftest: converted from the builtin GGUF once a session
    paths = fake_sweep(tmp_path / "sweep", model_dir, runs=("r8_a16_qv",), best="r8_a16_qv")
    out = tmp_path / "export" / "r8_a16_qv"
    check = export_run(
        str(model_dir),
        paths["test_path"],
        str(out),
        sources(paths),
        CardInfo("r8_a16_qv", {**HP, "r": 8, "lora_alpha": 16.0}, system_prompt=SYSTEM, max_new_tokens=16),
        ExportSettings(prompts=8, logit_prompts=2, q8_0_tokens=16),
    )
    assert (
        check["passed"] and check["architecture"] == "llama" and check["tokenizer"]["stop_tokens"] == {"<|im_end|>": 2}
    )
    assert check["types"]["f16"]["vs_f16_rounded_max_abs_diff"] == 0.0
    assert 255 < check["files"]["f16"]["mb"] < 265 and 130 < check["files"]["q8_0"]["mb"] < 140
    assert check["template"]["template_renders_same"] == 8 == check["template"]["modelfile_template_renders_same"]
    mf = parse_modelfile((out / "Modelfile").read_text())
    assert (
        ("stop", "<|im_end|>") in mf["PARAMETER"]
        and mf["SYSTEM"] == SYSTEM
        and mf["TEMPLATE"].endswith("<|im_start|>assistant\n")
    )
    card = (out / "README.md").read_text()
    assert (
        "HuggingFaceTB/SmolLM2-135M-Instruct" in card
        and "**Apache-2.0**" in card
        and read_json(paths["provenance"])["base_model"]["original"]["sha256"] in card
    )
    rows = write_export_summary([str(out)], str(tmp_path / "summary.csv"), str(tmp_path / "summary.md"))
    assert [r["type"] for r in rows] == ["f16", "q8_0"] and all(r["passed"] for r in rows)


@pytest.mark.slow
@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("llama_cpp"),
    reason="llama-cpp-python is not installed: PyPI has no wheel of it, only an sdist that compiles llama.cpp "
    "with cmake (several minutes); install the optional extra gguf-run: pip install 'loraflow[gguf-run]'",
)
def test_default_model_runs_in_llama_cpp(smollm2, tmp_path):
    model_dir, _ = smollm2  # conftest: converted from the builtin GGUF once a session
    paths = fake_sweep(tmp_path / "sweep", model_dir, runs=("r8_a16_qv",), best="r8_a16_qv")
    check = export_run(
        str(model_dir),
        paths["test_path"],
        str(tmp_path / "export"),
        sources(paths),
        CardInfo("r8_a16_qv", {**HP, "r": 8, "lora_alpha": 16.0}, system_prompt=SYSTEM, max_new_tokens=16),
        ExportSettings(types=["f16"], prompts=8, logit_prompts=1, q8_0_tokens=24, llama_cpp="require"),
    )
    lc = check["llama_cpp"]
    f16 = lc["files"]["f16"]
    assert (
        lc["ran"]
        and lc["passed"]
        and f16["completed"]
        and f16["prompt_tokens_same"] == 8
        and all(f16["stop_tokens_are_eog"].values())
    )
    assert f16["agreeing_prompts"] == 8  # f16 in llama.cpp answers like transformers token for token


def test_answers_that_part_at_a_near_tie_count_as_agreeing_and_both_figures_are_kept():
    from loraflow.ship.agreement import agreement_outside_ties

    parted = [
        {"prompt": 1, "at": 4, "margin": 0.01},
        {"prompt": 2, "at": 3, "margin": 0.7},
        {"prompt": 3, "at": 5, "margin": None},
    ]
    assert (
        agreement_outside_ties(10, 7, parted, 0.1) == 0.8
    )  # only the 0.01 tie counts; a real difference and a cut do not
    assert agreement_outside_ties(10, 7, parted, 0.0) == 0.7  # 0 = token for token


# ---------------------------------------------------------------------------------------------
# llama.cpp: every file, each in its own process
# ---------------------------------------------------------------------------------------------

# Stand-in for the llama.cpp child: q8_0 files die of a segmentation fault, as llama.cpp's q8_0 CPU
# path does on some machines; other files fail to load with a message on stderr.
CRASHING_CHILD = [
    sys.executable,
    "-c",
    "import ctypes, json, sys\n"
    "job = json.load(open(sys.argv[1]))\n"
    "open(sys.argv[3], 'a').write('loading the model\\n')\n"
    "if 'q8_0' in job['gguf']:\n    ctypes.string_at(0)\n"
    "sys.exit('llama_model_load: error loading model: unknown tensor type')",
]


def test_a_llama_cpp_crash_is_reported_per_file_and_does_not_take_the_job_down(tiny_model, tmp_path, monkeypatch):
    from loraflow.ship import llama_check
    from loraflow.ship.export_check import failures

    monkeypatch.setattr(llama_check, "available", lambda: (True, ""))
    monkeypatch.setattr(llama_check, "CHILD", CRASHING_CHILD)
    paths = fake_sweep(tmp_path / "sweep", tiny_model)
    out = tmp_path / "results" / "export" / "r4_a8_qv"
    check = export_run(
        str(tiny_model),
        paths["test_path"],
        str(out),
        sources(paths),
        CardInfo("r4_a8_qv", HP, system_prompt=SYSTEM, max_new_tokens=16),
        ExportSettings(prompts=4, logit_prompts=2, q8_0_tokens=8, llama_cpp="auto"),
    )
    lc = read_json(out / "export_check.json")["llama_cpp"]
    assert check["passed"] and lc["ran"] and lc["crashed"] == ["f16", "q8_0"] and lc["ollama_file_crashed"]
    q8, f16 = lc["files"]["q8_0"]["crash"], lc["files"]["f16"]["crash"]
    assert q8["signal"] == "SIGSEGV" and q8["exit_code"] == -11 and q8["last_step"] == "loading the model"
    assert f16["exit_code"] == 1 and "unknown tensor type" in f16["stderr_tail"] and "signal" not in f16
    assert lc["machine"] == llama_check.machine() and lc["runtime"].startswith("llama-cpp-python")
    modelfile_text, card_text = (out / "Modelfile").read_text(), (out / "README.md").read_text()
    assert parse_modelfile(modelfile_text)["FROM"] == "./model-q8_0.gguf"
    for text in (modelfile_text, card_text):
        assert (
            "llama.cpp CRASHED: killed by SIGSEGV (loading the model)" in text and "CRASHED: exited with code 1" in text
        )
        assert f"[{' '.join(lc['machine']['cpu_flags'])}]" in text and lc["runtime"] in text
        assert (
            "WARNING: model-q8_0.gguf, the file this Modelfile uses, crashed" in text and "export.ollama_file" in text
        )
    rows = write_export_summary([str(out)], str(tmp_path / "s.csv"), str(tmp_path / "s.md"))
    assert [r["llama_cpp"].split(" (")[0] for r in rows] == ["exited with code 1", "killed by SIGSEGV"]
    from loraflow.ship.serve import write_serve

    write_serve([], str(tiny_model), str(tmp_path / "serve.md"), exports=[str(out)])
    serve = (tmp_path / "serve.md").read_text()
    assert (
        "llama.cpp CRASHED: killed by SIGSEGV" in serve
        and "loraflow push r4_a8_qv --gguf --repo your-name/r4_a8_qv-GGUF" in serve
    )
    # under export.llama_cpp: require the same crash fails the check, naming file, signal and machine
    strict = {**check, "llama_cpp": llama_check.summarize(lc["files"], "require", "q8_0")}
    assert not strict["llama_cpp"]["passed"]
    assert any("model-q8_0.gguf killed by SIGSEGV" in f and lc["machine"]["cpu"] in f for f in failures(strict))


def test_ollama_file_picks_the_modelfile_s_gguf(tiny_model, tmp_path):
    from loraflow.ship.export import ollama_type

    assert (
        ollama_type("auto", ["f16", "q8_0"]) == "q8_0"
        and ollama_type("auto", ["f16"]) == "f16"
        and ollama_type("f16", ["f16", "q8_0"]) == "f16"
    )
    with pytest.raises(ExportError, match="export.ollama_file: q8_0 is not written"):
        ollama_type("q8_0", ["f16"])
    with pytest.raises(ExportError, match="export.ollama_file"):
        check_export_config({"export": {"runs": "best", "types": ["f16"], "enabled": False, "ollama_file": "q8_0"}}, {})
    paths = fake_sweep(tmp_path / "sweep", tiny_model)
    out = tmp_path / "export" / "r4_a8_qv"
    check = export_run(
        str(tiny_model),
        paths["test_path"],
        str(out),
        sources(paths),
        CardInfo("r4_a8_qv", HP, system_prompt=SYSTEM, max_new_tokens=8),
        ExportSettings(prompts=2, logit_prompts=1, q8_0_tokens=4, llama_cpp="skip", ollama_file="f16"),
    )
    mf = (out / "Modelfile").read_text()
    assert parse_modelfile(mf)["FROM"] == "./model-f16.gguf" == "./" + check["modelfile_uses"]
    assert "model-q8_0.gguf: transformers (GGUF loader)" in mf and "llama.cpp not run (export.llama_cpp is skip)" in mf


@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("llama_cpp"),
    reason="llama-cpp-python is not installed "
    "(optional extra gguf-run: PyPI has only an sdist that compiles llama.cpp)",
)
def test_every_exported_file_runs_in_llama_cpp(tiny_model, tmp_path):
    """Each file in llama.cpp, in its own process. f16 must agree with transformers; a file whose CPU
    kernels crash llama.cpp on the machine at hand (as q8_0 with weights repacked for AMX does in some
    llama-cpp-python versions) must come back as a report with a retry without weight repacking, and the
    export still finishes."""
    paths = fake_sweep(tmp_path / "sweep", tiny_model)
    out = tmp_path / "export" / "r4_a8_qv"
    check = export_run(
        str(tiny_model),
        paths["test_path"],
        str(out),
        sources(paths),
        CardInfo("r4_a8_qv", HP, system_prompt=SYSTEM, max_new_tokens=16),
        ExportSettings(prompts=8, logit_prompts=2, q8_0_tokens=16, llama_cpp="auto"),
    )
    lc = check["llama_cpp"]
    assert (
        sorted(lc["files"]) == ["f16", "q8_0"]
        and lc["runtime"] == f"llama-cpp-python {__import__('llama_cpp').__version__}"
    )
    f16 = lc["files"]["f16"]
    assert f16["completed"] and f16["passed"] and f16["prompt_tokens_same"] == 8 and "CPU" in f16["system_info"]
    for kind, e in lc["files"].items():
        if e["completed"]:
            assert e["passed"] and e["agreement_outside_ties"] >= 0.9
        else:
            assert (
                kind in lc["crashed"]
                and e["crash"]["exit_code"] != 0
                and e["crash"]["last_step"]
                and "without_repack" in e
            )
            assert "llama.cpp CRASHED" in (out / "README.md").read_text()


def test_llama_cpp_answers_are_scored_with_the_near_tie_rule():
    from loraflow.ship.llama_check import score

    reference = [[5, 6, 2]] * 10
    answers = [[5, 6, 2]] * 8 + [[5, 7, 2], [9, 9]]
    raw = {"answers": answers, "prompt_ids": [[1]] * 10, "stop_tokens_are_eog": {"2": True}}
    parted = [{"prompt": 8, "at": 1, "margin": 0.01}, {"prompt": 9, "at": 0, "margin": 1.5}]
    res = score(raw, [[1]] * 10, reference, [2], parted, min_agreement=0.9, tie_margin=0.1)
    assert res["agreeing_prompts"] == 8 and res["agreement_outside_ties"] == 0.9 and res["passed"]
    assert res["stopped_where_transformers_stopped"] == 9
    assert not score(raw, [[1]] * 10, reference, [2], parted, min_agreement=0.9, tie_margin=0.0)[
        "passed"
    ]  # token for token: 8/10
    assert not score({**raw, "prompt_ids": [[1]] * 9 + [[3]]}, [[1]] * 10, reference, [2], parted, 0.9, 0.1)[
        "passed"
    ]  # tokenizer differs
    assert not score({**raw, "stop_tokens_are_eog": {"2": False}}, [[1]] * 10, reference, [2], parted, 0.9, 0.1)[
        "passed"
    ]


def test_a_crash_is_fatal_only_under_require_but_wrong_answers_always_are():
    from loraflow.ship.export_check import failures
    from loraflow.ship.llama_check import score, summarize

    raw = {"answers": [[5, 2]] * 4, "prompt_ids": [[1]] * 4, "stop_tokens_are_eog": {"2": True}}
    good = {"file": "model-f16.gguf", "completed": True, **score(raw, [[1]] * 4, [[5, 2]] * 4, [2], [], 0.9, 0.1)}
    bad = {"file": "model-q8_0.gguf", "completed": True, **score(raw, [[1]] * 4, [[6, 2]] * 4, [2], [], 0.9, 0.1)}
    crash = {
        "file": "model-q8_0.gguf",
        "completed": False,
        "passed": False,
        "crash": {
            "exit_code": -11,
            "signal": "SIGSEGV",
            "what": "killed by SIGSEGV",
            "last_step": "loading the model",
            "stderr_tail": "",
        },
    }
    base = {"types": {}, "template": {"passed": True}}
    for files, mode, fatal in [
        ({"f16": good, "q8_0": {**crash, "without_repack": good}}, "auto", False),
        ({"f16": good, "q8_0": crash}, "auto", False),
        ({"f16": good, "q8_0": crash}, "require", True),
        ({"f16": good, "q8_0": {**crash, "without_repack": bad}}, "auto", True),
        ({"f16": good, "q8_0": bad}, "auto", True),
    ]:
        lc = summarize(files, mode, "q8_0")
        assert lc["passed"] is not fatal and bool(failures({**base, "llama_cpp": lc})) is fatal
    assert (
        "(run again without repacking)"
        in failures({**base, "llama_cpp": summarize({"q8_0": {**crash, "without_repack": bad}}, "auto", "q8_0")})[0]
    )

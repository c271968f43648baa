"""Published model shapes, written out from their config.json (no hub), and random-weight models
built from them: the CPU scale rehearsal (tests/test_rehearsal.py), the preflight count checks at
7-8B, benchmarks and GPU checks use real architectures at their real size
without downloading anything.

    from loraflow.model.shapes import build_random_model
    build_random_model("qwen05", "qwen2.5-0.5b")        # 494M parameters, bf16, local BPE tokenizer

The tokenizer is a byte-level BPE trained here on the built-in data set (or a given corpus); the
model keeps its published vocabulary size, so the embedding and LM head have their real size (the
extra rows are simply never used).
"""

from __future__ import annotations

from pathlib import Path

# Published config.json values (architecture fields only). The parameter counts in PUBLISHED_PARAMS
# are those of the released checkpoints.
SHAPES: dict[str, dict] = {
    "smollm2-135m": dict(  # HuggingFaceTB/SmolLM2-135M(-Instruct): the default base model
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        hidden_act="silu",
    ),
    "qwen2.5-0.5b": dict(  # Qwen/Qwen2.5-0.5B(-Instruct)
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_act="silu",
        sliding_window=32768,
        max_window_layers=24,
        use_sliding_window=False,
    ),
    "qwen2.5-1.5b": dict(  # Qwen/Qwen2.5-1.5B(-Instruct)
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=131072,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_act="silu",
        sliding_window=131072,
        max_window_layers=21,
        use_sliding_window=False,
    ),
    "qwen2.5-7b": dict(  # Qwen/Qwen2.5-7B(-Instruct)
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=131072,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        hidden_act="silu",
        sliding_window=131072,
        max_window_layers=28,
        use_sliding_window=False,
    ),
    "llama-3-8b": dict(  # meta-llama/Meta-Llama-3-8B(-Instruct)
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    ),
    "mistral-7b": dict(  # mistralai/Mistral-7B-v0.1
        model_type="mistral",
        architectures=["MistralForCausalLM"],
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        hidden_act="silu",
        sliding_window=4096,
    ),
}
PUBLISHED_PARAMS = {
    "smollm2-135m": 134_515_008,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512,
    "llama-3-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,
}

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def model_config(shape: str, **overrides):
    """The transformers config of a published shape (overrides for e.g. fewer layers in a smoke test)."""
    from transformers import AutoConfig

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; known: {', '.join(SHAPES)}")
    return AutoConfig.for_model(**{**SHAPES[shape], **overrides})


def builtin_corpus(n_rows: int = 300, seed: int = 1) -> list[str]:
    """Question + answer texts of the built-in data set: what the pipeline will tokenise."""
    import json
    import tempfile

    from loraflow.data.builtin.support_qa import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.jsonl"
        generate_dataset(str(path), n_rows=n_rows, seed=seed)
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [f"{r['question']} {r['answer']}" for r in rows]


def train_tokenizer(corpus: list[str], vocab_size: int = 600, chat_template: str | None = CHATML):
    """A byte-level BPE tokenizer trained on `corpus` (any text encodes), with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


def build_random_model(
    out_dir: str | Path,
    shape: str,
    corpus: list[str] | None = None,
    dtype: str = "bf16",
    seed: int = 0,
    tokenizer=None,
    tokenizer_vocab: int = 2000,
    **overrides,
) -> Path:
    """Save a randomly initialised `shape` model (safetensors, in `dtype`) with a tokenizer (trained
    here on `corpus`, default the built-in data set, up to `tokenizer_vocab` tokens, unless one is
    given) as a model directory; `overrides` change config fields (e.g. num_hidden_layers=2)."""
    import torch
    from transformers import AutoModelForCausalLM

    from loraflow.model.device import PRECISIONS

    tok = (
        tokenizer
        if tokenizer is not None
        else train_tokenizer(corpus if corpus is not None else builtin_corpus(), tokenizer_vocab)
    )
    config = model_config(
        shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **overrides
    )
    if len(tok) > config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tok)} tokens, more than {shape}'s vocabulary of {config.vocab_size}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=PRECISIONS[dtype])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def rehearsal_config(model_dir: str | Path, results_dir: str = "results") -> dict:
    """The workflow config of the CPU scale rehearsal (tests/test_rehearsal.py): the whole pipeline
    on a `build_random_model(..., "qwen2.5-0.5b")` directory in bf16, kept short to run on a small CPU
    without bf16 units (bf16 emulated): 50 built-in rows split 90/5/5, 2 train steps of one packed
    128-token row, validation on 2 rows, 2 test rows with 2 new tokens, 4 retention items, 1 merge-check
    prompt. Keys not given take the schema's defaults."""
    return {
        "results_dir": results_dir,
        "base_model": {"source": "local", "path": str(model_dir)},
        "data": {"builtin_rows": 50, "system_prompt": "Be brief."},
        "split": {"train": 0.9, "val": 0.05, "test": 0.05},
        "tokenize": {"max_length": 128},
        "grid": {"r": [8], "lora_alpha": [16], "target_modules": ["qv"]},
        "train": {
            "max_steps": 2,
            "batch_size": 1,
            "eval_every": 0,
            "max_eval_batches": 1,
            "warmup_steps": 0,
            "checkpoint_every": 0,
            "learning_rate": 0.001,
            "precision": "bf16",
        },
        "evaluate": {  # one generation batch each for test, validation and retention: on a CPU that emulates
            # bf16, every forward pass costs about as much as its weights, whatever its tokens
            "batch_size": 4,
            "max_samples": 2,
            "max_new_tokens": 2,
            "consistency_questions": 0,
            "val_samples": 2,
            "retention_items": 4,
            "retention_max_new_tokens": 2,
        },
        "merge": {"n_prompts": 1, "speed_tokens": 2},
    }

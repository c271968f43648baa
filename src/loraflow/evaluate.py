"""Evaluate stage: test loss/perplexity and generation metrics, for the base model or base + adapter.

Generation is greedy, batched with left padding and a KV cache, and stops at <|im_end|> or EOS.
"""

from __future__ import annotations

import logging
import time

import torch

from loraflow.io import read_jsonl, write_json, write_jsonl
from loraflow.metrics import accuracy_macro_f1, normalize_answer, pairwise_agreement, perplexity, text_metrics
from loraflow.modeling import load_causal_lm, load_tokenizer, mean_loss, model_precision, pick_device, set_seed, set_threads
from loraflow.tokenization import load_split

log = logging.getLogger(__name__)


def stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int, sampling: dict | None = None) -> tuple[list[str], dict]:
    """Answers for `prompts` (same order) and speed figures; greedy unless `sampling` gives
    temperature/top_p. Prompts are batched by length, left-padded, with the KV cache."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    new_tokens, start = 0, time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        decoding = {"do_sample": True, "top_k": None, **sampling} if sampling else {"do_sample": False, "top_p": None, "top_k": None, "temperature": None}
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, use_cache=True, **decoding,
        )
        for row, i in enumerate(idx):
            gen = out[row, enc["input_ids"].shape[1]:].tolist()
            cut = next((k for k, t in enumerate(gen) if t in stops), len(gen))
            new_tokens += cut + (cut < len(gen))
            answers[i] = tokenizer.decode(gen[:cut], skip_special_tokens=True).strip()
    seconds = time.perf_counter() - start
    return answers, {"generated_tokens": new_tokens, "generation_s": seconds, "generation_tokens_per_s": new_tokens / max(seconds, 1e-9)}


def consistency(model, tokenizer, prompts: list[str], samples: int, temperature: float, seed: int, max_new_tokens: int) -> float:
    """Ask each prompt `samples` times with sampling; mean pairwise ROUGE-L agreement (0-100)."""
    if not prompts or samples < 2:
        return float("nan")
    torch.manual_seed(seed)
    answers, _ = generate(model, tokenizer, [p for p in prompts for _ in range(samples)], len(prompts) * samples,
                          max_new_tokens, sampling={"temperature": temperature, "top_p": 1.0})
    groups = [answers[i * samples : (i + 1) * samples] for i in range(len(prompts))]
    return sum(pairwise_agreement(g) for g in groups) / len(groups)


def is_classification(references: list[str], max_labels: int = 20) -> bool:
    """Answers drawn from a small label set (sentiment, topic ...) rather than free text."""
    labels = {normalize_answer(r) for r in references}
    return len(references) >= 2 * len(labels) and len(labels) <= max_labels and all(len(r.split()) <= 3 for r in labels)


def load_for_eval(model_dir: str, adapter_dir: str | None, trust_remote_code: bool = False, method: str = "lora",
                  precision: str | None = None):
    """The model a run produced: base + adapter (the base quantised again for qlora / lora_8bit, as it
    was trained), a fully fine-tuned model (method full: `adapter_dir` holds the whole model), or the
    untouched base when `adapter_dir` is None; weights in the deploy `precision` (auto | fp32 | bf16,
    see modeling.pick_dtype; peft keeps adapter weights in fp32)."""
    from pathlib import Path

    from loraflow.methods import load_base
    from loraflow.modeling import pick_dtype

    device = pick_device()
    dtype = pick_dtype(device, precision)
    if adapter_dir and not (Path(adapter_dir) / "adapter_config.json").is_file():
        return load_causal_lm(adapter_dir, device, dtype=dtype, trust_remote_code=trust_remote_code).eval()
    model = load_base(model_dir, device, method if adapter_dir else "lora", trust_remote_code, dtype=dtype)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


def evaluate_model(
    model_dir: str, test_path: str, test_tokens: str, tokens_meta: str, out_metrics: str, out_generations: str,
    adapter_dir: str | None = None, batch_size: int = 16, max_new_tokens: int = 64, max_samples: int = 0,
    task: str = "auto", consistency_questions: int = 8, consistency_samples: int = 4, temperature: float = 0.7,
    seed: int = 42, threads: int | None = None, trust_remote_code: bool = False, method: str = "lora", precision: str | None = None,
) -> dict:
    """Evaluate stage entry point; `adapter_dir=None` evaluates the untouched base model."""
    set_threads(threads)
    set_seed(seed)
    tokenizer = load_tokenizer(model_dir)
    model = load_for_eval(model_dir, adapter_dir, trust_remote_code, method, precision)
    device = next(model.parameters()).device
    examples = load_split(test_tokens, tokens_meta, model_dir)
    loss = mean_loss(model, examples, batch_size, tokenizer.pad_token_id, device)
    rows = read_jsonl(test_path)
    if max_samples:
        rows = rows[:max_samples]
    answers, speed = generate(model, tokenizer, [r["prompt"] for r in rows], batch_size, max_new_tokens)
    references = [r["reference"] for r in rows]
    metrics = {
        "model": "base" if adapter_dir is None else adapter_dir, "method": None if adapter_dir is None else method,
        "precision": model_precision(model),
        "test_examples": len(examples), "generated_examples": len(rows),
        "eval_loss": loss, "perplexity": perplexity(loss),
        **text_metrics(answers, references),
        **speed,
    }
    if task == "classification" or (task == "auto" and is_classification(references)):
        metrics.update(accuracy_macro_f1([normalize_answer(a) for a in answers], [normalize_answer(r) for r in references]))
    metrics["consistency"] = consistency(model, tokenizer, [r["prompt"] for r in rows[:consistency_questions]],
                                         consistency_samples, temperature, seed, max_new_tokens)
    write_jsonl(out_generations, ({"id": r["id"], "prompt": r["prompt"], "reference": r["reference"], "answer": a} for r, a in zip(rows, answers)))
    write_json(out_metrics, metrics)
    log.info("eval: loss %.4f ppl %.2f BLEU %.2f ROUGE-L %.2f EM %.1f consistency %.1f (%.1f generated tokens/s)",
             loss, metrics["perplexity"], metrics["bleu"], metrics["rougeL"], metrics["exact_match"], metrics["consistency"],
             speed["generation_tokens_per_s"])
    return metrics


def write_samples(base_generations: str, tuned_generations: str, out_path: str) -> int:
    """Before/after table: prompt, reference, base answer and tuned answer per test row."""
    base = {r["id"]: r for r in read_jsonl(base_generations)}
    rows = [
        {"id": t["id"], "prompt": t["prompt"], "reference": t["reference"], "base_answer": base[t["id"]]["answer"] if t["id"] in base else None, "tuned_answer": t["answer"]}
        for t in read_jsonl(tuned_generations)
    ]
    return write_jsonl(out_path, rows)


def evaluate_run(base_generations: str, out_samples: str, **kwargs) -> dict:
    """Evaluate stage entry point for a grid point: metrics, generations and before/after samples."""
    metrics = evaluate_model(**kwargs)
    write_samples(base_generations, kwargs["out_generations"], out_samples)
    return metrics

"""Evaluate stage: loss/perplexity and generation metrics on the test split (held out, reported) and
the validation split (for choosing), per-row scores for the table's bootstrap, and the built-in
retention set, for the base model or base + adapter.

Generation is greedy, batched with left padding and a KV cache, and stops at <|im_end|> or EOS.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from loraflow.io import read_jsonl, write_json, write_jsonl
from loraflow.evaluate.metrics import accuracy_macro_f1, normalize_answer, pairwise_agreement, perplexity, row_scores, text_metrics
from loraflow.model.modeling import (
    collate, load_causal_lm, load_tokenizer, model_precision, per_example_loss, pick_device, set_seed, set_threads, shape_granule,
)
from loraflow.data.tokenization import load_split

log = logging.getLogger(__name__)


def stop_token_ids(tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


def trim_partial_character(tokenizer, tokens: list[int]) -> str:
    """Decode `tokens`; when they end inside a multi-byte character (an answer cut at the token cap
    in the middle of a byte-level BPE character decodes to a trailing U+FFFD), drop the incomplete
    character's tokens (at most 3: a UTF-8 character has at most 4 bytes)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    for k in range(1, min(3, len(tokens)) + 1):
        if not text.endswith("\ufffd"):
            break
        text = tokenizer.decode(tokens[:-k], skip_special_tokens=True)
    return text


def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, stops: list[int],
                  pad_id: int, static_cache: bool = False, drop_finished: bool = True) -> torch.Tensor:
    """Greedy continuation of a left-padded batch: (batch, new tokens), pad after a stop token.

    A lean loop around the model's forward (the decoder with its LoRA layers called directly): one
    prefill pass computing the LM head at the last position only, then one token per step with the
    KV cache, stopping when every row has stopped. Same tokens as transformers' generate greedy;
    `static_cache` preallocates the cache (StaticCache) instead of growing it (DynamicCache).
    `drop_finished`: a row that has stopped leaves the batch and the cache, so the steps left cost
    only the rows still decoding (142 default test rows at batch 32 on 2 AVX2 cores: 55.6-56.5 s against
    68.2-72.3 s, the same answers; no change where every row runs to the cap)."""
    from transformers import DynamicCache, StaticCache

    from loraflow.model.modeling import unwrap

    lm = unwrap(model)
    batch, prompt = input_ids.shape
    cache = StaticCache(config=lm.config, max_cache_len=prompt + max_new_tokens) if static_cache else DynamicCache(config=lm.config)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    stop_ids = torch.tensor(stops, device=input_ids.device)
    out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=input_ids.device)
    rows = torch.arange(batch, device=input_ids.device)  # the batch row of each row still decoding
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    ids, mask, pos = input_ids, attention_mask, positions
    for step in range(max_new_tokens):
        logits = lm(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1).logits
        nxt = logits[:, -1].argmax(-1).masked_fill(done, pad_id)
        out[rows, step] = nxt
        done |= torch.isin(nxt, stop_ids)
        if bool(done.all()):
            break
        ids, pos = nxt[:, None], pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        if drop_finished and bool(done.any()):  # rows that have stopped leave the batch (and the cache)
            keep = (~done).nonzero().squeeze(1)
            cache.reorder_cache(keep)
            rows, done, ids, pos, mask = rows[keep], done[keep], ids[keep], pos[keep], mask[keep]
    return out


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int, sampling: dict | None = None,
             static_cache: bool = False) -> tuple[list[str], dict]:
    """Answers for `prompts` (same order) and speed figures; greedy unless `sampling` gives
    temperature/top_p. Prompts are batched by token count, left-padded, with the KV cache; greedy runs
    through greedy_decode, sampling through transformers' generate. An answer cut at the token cap
    loses a trailing incomplete character (trim_partial_character)."""
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer)
    new_tokens, start = 0, time.perf_counter()
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))  # by tokens: least left-padding per batch
    answers: list[str] = [""] * len(prompts)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(device)
        if sampling:
            out = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                 use_cache=True, do_sample=True, top_k=None, **sampling)[:, enc["input_ids"].shape[1]:]
        else:
            out = greedy_decode(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, stops, tokenizer.pad_token_id, static_cache)
        for row, i in enumerate(idx):
            gen = out[row].tolist()
            cut = next((k for k, t in enumerate(gen) if t in stops), len(gen))
            new_tokens += cut + (cut < len(gen))
            answers[i] = (trim_partial_character(tokenizer, gen[:cut]) if cut == len(gen) else
                          tokenizer.decode(gen[:cut], skip_special_tokens=True)).strip()
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

    from loraflow.model.methods import load_base
    from loraflow.model.modeling import pick_dtype

    device = pick_device()
    dtype = pick_dtype(device, precision)
    if adapter_dir and not (Path(adapter_dir) / "adapter_config.json").is_file():
        return load_causal_lm(adapter_dir, device, dtype=dtype, trust_remote_code=trust_remote_code).eval()
    model = load_base(model_dir, device, method if adapter_dir else "lora", trust_remote_code, dtype=dtype)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


def cpu_decoding(model, cpu_kernels: str, batch_size: int) -> bool:
    """evaluate.cpu_kernels. `auto` on a CPU: the frozen linears prepacked for oneDNN
    (modeling.prepack_cpu_linears) and a preallocated KV cache (StaticCache) for greedy decoding; on
    the side-by-side's 39 medical rows (batch 8, fp32, 2 AVX2 cores) that is 48.7 s against 61.0 s,
    with the same 39 answers. `plain`, or any other device: transformers' layers and a growing cache.
    Returns whether greedy decoding uses the static cache."""
    from loraflow.model.modeling import prepack_cpu_linears

    if cpu_kernels != "auto" or next(model.parameters()).device.type != "cpu":
        return False
    log.info("eval: %d linear layers prepacked for oneDNN; static KV cache (evaluate.cpu_kernels: auto)",
             prepack_cpu_linears(model, batch_size))
    return True


@torch.no_grad()
def per_row_nll(model, examples: list, batch_size: int, pad_id: int, device) -> tuple[np.ndarray, np.ndarray]:
    """(sum of next-token NLL over assistant tokens, number of those tokens) per example, in order;
    their ratio of sums is the token-weighted mean loss (`modeling.mean_loss`). Batches of similar
    length, widths rounded to the shape granule, the LM head in chunks (modeling.per_example_loss)."""
    was_training = model.training
    model.eval()
    nll, count = np.zeros(len(examples)), np.zeros(len(examples), dtype=np.int64)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    granule = shape_granule(device, model_precision(model))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        sums, counts = per_example_loss(model, collate([examples[i] for i in idx], pad_id, device, granule), len(idx))
        nll[idx], count[idx] = sums.cpu().numpy(), counts.cpu().numpy()
    model.train(was_training)
    return nll, count


def _rows_with_tokens(split_path: str, tokens_path: str, tokens_meta: str, model_dir: str) -> tuple[list[dict], list]:
    """The split's rows and their token-cache examples. The cache is built row by row from the split
    file; a count mismatch (a cache of other data) is an error, never a silent shift."""
    rows = read_jsonl(split_path)
    examples = load_split(tokens_path, tokens_meta, model_dir)
    if len(rows) != len(examples):
        raise RuntimeError(f"{tokens_path} holds {len(examples)} examples but {split_path} has {len(rows)} rows; rerun the tokenize rule")
    return rows, examples


def score_split(model, tokenizer, rows: list[dict], examples: list, n_generate: int, batch_size: int, max_new_tokens: int,
                answer_check: str = "none", answer_pattern: str | None = None, static_cache: bool = False) -> tuple[dict, list[dict], list[str], dict]:
    """Loss on every row, generation metrics on the first `n_generate` rows (0 = all).
    Returns (metrics, per-row scores, answers, speed)."""
    from loraflow.evaluate.answer_check import check_answer, row_facts, states_facts

    device = next(model.parameters()).device
    nll, ntok = per_row_nll(model, examples, batch_size, tokenizer.pad_token_id, device)
    loss = float(nll.sum() / max(ntok.sum(), 1))
    gen_rows = rows[:n_generate] if n_generate else rows
    answers, speed = generate(model, tokenizer, [r["prompt"] for r in gen_rows], batch_size, max_new_tokens, static_cache=static_cache)
    references = [r["reference"] for r in gen_rows]
    per_row = row_scores(answers, references)
    metrics = {"examples": len(rows), "generated_examples": len(gen_rows), "eval_loss": loss, "perplexity": perplexity(loss),
               **text_metrics(answers, references)}
    facts = [row_facts(r) for r in gen_rows]
    if any(facts):
        for scores, answer, f in zip(per_row, answers, facts):
            if f:
                scores["fact_acc"] = states_facts(answer, f)
        scored = [s["fact_acc"] for s in per_row if "fact_acc" in s]
        metrics.update({"fact_acc": sum(scored) / len(scored), "fact_rows": len(scored)})
    if answer_check != "none":
        for scores, answer, ref in zip(per_row, answers, references):
            scores["answer_ok"] = check_answer(answer_check, answer, ref, answer_pattern)
        metrics["answer_ok"] = sum(s["answer_ok"] for s in per_row) / max(len(per_row), 1)
    lines = []
    for k, row in enumerate(rows):
        line = {"id": row["id"], "loss_sum": float(nll[k]), "tokens": int(ntok[k])}
        if k < len(gen_rows):
            line.update({**per_row[k], "answer": answers[k]})
        lines.append(line)
    return metrics, lines, answers, speed


def retention_prompts(tokenizer, items: list[dict]) -> list[str]:
    """Each retention question as a single user turn in the model's chat template (its own default
    system prompt, not the task's: this measures general ability outside the tuned task)."""
    from loraflow.data.chatml import render

    return [render(tokenizer, [{"role": "user", "content": it["prompt"]}], add_generation_prompt=True) for it in items]


def base_correct_items(base_scores: str) -> set[str]:
    """Ids of the retention items the base model answered correctly (from the base's scores.jsonl)."""
    return {r["id"] for r in read_jsonl(base_scores) if r.get("split") == "retention" and r.get("correct")}


def evaluate_retention(model, tokenizer, n_items: int, batch_size: int, max_new_tokens: int, only: set[str] | None = None,
                       static_cache: bool = False) -> tuple[dict, list[dict]]:
    """Ask the built-in retention items (all of the first `n_items`, or those in `only`); (summary, per-item rows)."""
    from loraflow.evaluate.retention import is_correct, load_items, retention_part

    items = load_items(n_items)
    asked = [it for it in items if only is None or it["id"] in only]
    answers, speed = (generate(model, tokenizer, retention_prompts(tokenizer, asked), batch_size, max_new_tokens, static_cache=static_cache)
                      if asked else ([], {}))
    rows = [{"split": "retention", "id": it["id"], "part": retention_part(it["id"]), "lang": it["lang"], "kind": it["kind"],
             "correct": 100.0 * is_correct(it, a), "answer": a}
            for it, a in zip(asked, answers)]
    score = sum(r["correct"] for r in rows) / len(rows) if rows else float("nan")
    summary = {"set_size": len(items), "items": len(rows), "score": score, "generation_s": speed.get("generation_s", 0.0),
               "generated_tokens": speed.get("generated_tokens", 0)}
    for lang in ("en", "zh"):
        sub = [r["correct"] for r in rows if r["lang"] == lang]
        summary[f"items_{lang}"] = len(sub)
    for part in ("val", "test"):  # val: may choose a run (table.retention_floor); test: reported
        sub = [r["correct"] for r in rows if r["part"] == part]
        summary[f"items_{part}"], summary[f"score_{part}"] = len(sub), (sum(sub) / len(sub) if sub else float("nan"))
    return summary, rows


def evaluate_model(
    model_dir: str, test_path: str, test_tokens: str, tokens_meta: str, out_metrics: str, out_generations: str,
    adapter_dir: str | None = None, batch_size: int = 16, max_new_tokens: int = 64, max_samples: int = 0,
    task: str = "auto", consistency_questions: int = 8, consistency_samples: int = 4, temperature: float = 0.7,
    seed: int = 42, threads: int | None = None, trust_remote_code: bool = False, method: str = "lora", precision: str | None = None,
    val_path: str | None = None, val_tokens: str | None = None, val_samples: int = 0, out_scores: str | None = None,
    answer_check: str = "none", answer_pattern: str | None = None, retention_items: int = 0, retention_max_new_tokens: int = 32,
    base_scores: str | None = None, cpu_kernels: str = "auto",
) -> dict:
    """Evaluate stage entry point; `adapter_dir=None` evaluates the untouched base model.

    Test split (held out, reported): loss on every row, generation metrics on the first `max_samples`
    rows (0 = all). Validation split (`val_path`/`val_tokens`, for choosing the best run): loss on every
    row, generation metrics on its first `val_samples` rows (0 = all). Retention (`retention_items` > 0):
    the built-in general questions; the base model is asked the first `retention_items`, a run only those
    the base answered correctly (`base_scores`, the base's scores.jsonl). `out_scores` gets one line per
    scored row (split, id, loss, per-row metrics), joined by row id in the table stage."""
    set_threads(threads)
    set_seed(seed)
    tokenizer = load_tokenizer(model_dir)
    model = load_for_eval(model_dir, adapter_dir, trust_remote_code, method, precision)
    ran_in = model_precision(model)
    static = cpu_decoding(model, cpu_kernels, batch_size)
    rows, examples = _rows_with_tokens(test_path, test_tokens, tokens_meta, model_dir)
    test, test_lines, answers, speed = score_split(model, tokenizer, rows, examples, max_samples, batch_size, max_new_tokens,
                                                   answer_check, answer_pattern, static)
    gen_rows = rows[: test["generated_examples"]]
    references = [r["reference"] for r in gen_rows]
    metrics = {
        "model": "base" if adapter_dir is None else adapter_dir, "method": None if adapter_dir is None else method,
        "precision": ran_in, "split": "test", "test_examples": test.pop("examples"), **test, **speed,
    }
    if task == "classification" or (task == "auto" and is_classification(references)):
        metrics.update(accuracy_macro_f1([normalize_answer(a) for a in answers], [normalize_answer(r) for r in references]))
    metrics["consistency"] = consistency(model, tokenizer, [r["prompt"] for r in gen_rows[:consistency_questions]],
                                         consistency_samples, temperature, seed, max_new_tokens)
    score_lines = [{"split": "test", **line} for line in test_lines]
    if val_path and val_tokens:
        val_rows, val_examples = _rows_with_tokens(val_path, val_tokens, tokens_meta, model_dir)
        val, val_lines, _, val_speed = score_split(model, tokenizer, val_rows, val_examples, val_samples, batch_size,
                                                   max_new_tokens, answer_check, answer_pattern, static)
        metrics["val"] = {**val, "generation_s": val_speed["generation_s"], "generated_tokens": val_speed["generated_tokens"]}
        score_lines += [{"split": "val", **line} for line in val_lines]
    if retention_items:
        only = base_correct_items(base_scores) if base_scores else None
        metrics["retention"], retention_lines = evaluate_retention(model, tokenizer, retention_items, batch_size, retention_max_new_tokens,
                                                                   only, static)
        metrics["retention"]["measured_on"] = "all items" if only is None else "items the base model answers correctly"
        score_lines += retention_lines
    write_jsonl(out_generations, ({"id": r["id"], "prompt": r["prompt"], "reference": r["reference"], "answer": a} for r, a in zip(gen_rows, answers)))
    if out_scores:
        write_jsonl(out_scores, score_lines)
    write_json(out_metrics, metrics)
    log.info("eval: test loss %.4f ppl %.2f BLEU %.2f ROUGE-L %.2f EM %.1f consistency %.1f (%.1f generated tokens/s)",
             metrics["eval_loss"], metrics["perplexity"], metrics["bleu"], metrics["rougeL"], metrics["exact_match"], metrics["consistency"],
             speed["generation_tokens_per_s"])
    if "val" in metrics:
        log.info("eval: val loss %.4f ROUGE-L %.2f on %d generated rows (%.1fs)", metrics["val"]["eval_loss"], metrics["val"]["rougeL"],
                 metrics["val"]["generated_examples"], metrics["val"]["generation_s"])
    if "retention" in metrics:
        r = metrics["retention"]
        log.info("eval: retention %.1f %% of %d items (%s; %.1fs)", r["score"], r["items"], r["measured_on"], r["generation_s"])
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

"""Evaluate stage: loss/perplexity and generation metrics on the test split (held out, reported) and
the validation split (for choosing), per-row scores for the table's bootstrap, and the built-in
retention set, for the base model or base + adapter (generation: evaluate/generation.py).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from loraflow.data.tokenization import load_split
from loraflow.evaluate.generation import consistency, cpu_decoding, generate
from loraflow.evaluate.loading import load_for_eval
from loraflow.evaluate.metrics import accuracy_macro_f1, normalize_answer, perplexity, row_scores, text_metrics
from loraflow.evaluate.settings import EvalPaths, EvalSettings
from loraflow.io import read_jsonl, write_json, write_jsonl
from loraflow.model.batching import collate
from loraflow.model.device import model_precision, set_seed, set_threads
from loraflow.model.kernels import shape_granule
from loraflow.model.loading import load_tokenizer
from loraflow.model.loss import per_example_loss

log = logging.getLogger(__name__)


def is_classification(references: list[str], max_labels: int = 20) -> bool:
    """Answers drawn from a small label set (sentiment, topic ...) rather than free text."""
    labels = {normalize_answer(r) for r in references}
    return len(references) >= 2 * len(labels) and len(labels) <= max_labels and all(len(r.split()) <= 3 for r in labels)


@torch.no_grad()
def per_row_nll(model, examples: list, batch_size: int, pad_id: int, device) -> tuple[np.ndarray, np.ndarray]:
    """(sum of next-token NLL over assistant tokens, number of those tokens) per example, in order;
    their ratio of sums is the token-weighted mean loss (model.loss.mean_loss). Batches of similar
    length, widths rounded to the shape granule, the LM head in chunks (model.loss.per_example_loss)."""
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
        raise RuntimeError(
            f"{tokens_path} holds {len(examples)} examples but {split_path} has {len(rows)} rows; rerun the tokenize "
            "rule"
        )
    return rows, examples


def score_split(
    model,
    tokenizer,
    rows: list[dict],
    examples: list,
    n_generate: int,
    settings: EvalSettings,
    static_cache: bool = False,
) -> tuple[dict, list[dict], list[str], dict]:
    """Loss on every row, generation metrics on the first `n_generate` rows (0 = all); `settings` gives
    the batch size, the answer cap and the answer check. Returns (metrics, per-row scores, answers, speed)."""
    from loraflow.evaluate.answer_check import check_answer, row_facts, states_facts

    device = next(model.parameters()).device
    nll, ntok = per_row_nll(model, examples, settings.batch_size, tokenizer.pad_token_id, device)
    loss = float(nll.sum() / max(ntok.sum(), 1))
    gen_rows = rows[:n_generate] if n_generate else rows
    answers, speed = generate(
        model,
        tokenizer,
        [r["prompt"] for r in gen_rows],
        settings.batch_size,
        settings.max_new_tokens,
        static_cache=static_cache,
    )
    references = [r["reference"] for r in gen_rows]
    per_row = row_scores(answers, references)
    metrics = {
        "examples": len(rows),
        "generated_examples": len(gen_rows),
        "eval_loss": loss,
        "perplexity": perplexity(loss),
        **text_metrics(answers, references),
    }
    facts = [row_facts(r) for r in gen_rows]
    if any(facts):
        for scores, answer, f in zip(per_row, answers, facts):
            if f:
                scores["fact_acc"] = states_facts(answer, f)
        scored = [s["fact_acc"] for s in per_row if "fact_acc" in s]
        metrics.update({"fact_acc": sum(scored) / len(scored), "fact_rows": len(scored)})
    if settings.answer_check != "none":
        for scores, answer, ref in zip(per_row, answers, references):
            scores["answer_ok"] = check_answer(settings.answer_check, answer, ref, settings.answer_pattern)
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


def evaluate_retention(
    model,
    tokenizer,
    n_items: int,
    batch_size: int,
    max_new_tokens: int,
    only: set[str] | None = None,
    static_cache: bool = False,
) -> tuple[dict, list[dict]]:
    """Ask the built-in retention items (all of the first `n_items`, or those in `only`); (summary, per-item rows)."""
    from loraflow.evaluate.retention import is_correct, load_items, retention_part

    items = load_items(n_items)
    asked = [it for it in items if only is None or it["id"] in only]
    answers, speed = (
        generate(
            model, tokenizer, retention_prompts(tokenizer, asked), batch_size, max_new_tokens, static_cache=static_cache
        )
        if asked
        else ([], {})
    )
    rows = [
        {
            "split": "retention",
            "id": it["id"],
            "part": retention_part(it["id"]),
            "lang": it["lang"],
            "kind": it["kind"],
            "correct": 100.0 * is_correct(it, a),
            "answer": a,
        }
        for it, a in zip(asked, answers)
    ]
    score = sum(r["correct"] for r in rows) / len(rows) if rows else float("nan")
    summary = {
        "set_size": len(items),
        "items": len(rows),
        "score": score,
        "generation_s": speed.get("generation_s", 0.0),
        "generated_tokens": speed.get("generated_tokens", 0),
    }
    for lang in ("en", "zh"):
        sub = [r["correct"] for r in rows if r["lang"] == lang]
        summary[f"items_{lang}"] = len(sub)
    for part in ("val", "test"):  # val: may choose a run (table.retention_floor); test: reported
        sub = [r["correct"] for r in rows if r["part"] == part]
        summary[f"items_{part}"], summary[f"score_{part}"] = len(sub), (sum(sub) / len(sub) if sub else float("nan"))
    return summary, rows


def val_retention(model, tokenizer, base_scores: str, n_items: int, batch_size: int, max_new_tokens: int) -> dict:
    """Retention on the validation part of the set only (the items the base answered correctly there), what
    a cut of successive halving may look at without spending the test part: {val_retention (percent, None
    when the base answered no such item), val_retention_items}."""
    from loraflow.evaluate.retention import retention_part

    only = {item for item in base_correct_items(base_scores) if retention_part(item) == "val"}
    summary, _ = evaluate_retention(model, tokenizer, n_items, batch_size, max_new_tokens, only=only)
    kept = summary["score_val"] if summary["items_val"] else None
    return {"val_retention": kept, "val_retention_items": summary["items_val"]}


def evaluate_model(
    paths: EvalPaths,
    settings: EvalSettings,
    adapter_dir: str | None = None,
    method: str = "lora",
    threads: int | None = None,
) -> dict:
    """Evaluate stage entry point; `adapter_dir=None` evaluates the untouched base model.

    Test split (held out, reported): loss on every row, generation metrics on the first `max_samples`
    rows (0 = all). Validation split (`paths.val_path`/`val_tokens`, for choosing the best run): loss on
    every row, generation metrics on its first `val_samples` rows (0 = all). Retention (`retention_items`
    > 0): the built-in general questions; the base model is asked the first `retention_items`, a run only
    those the base answered correctly (`paths.base_scores`, the base's scores.jsonl). `paths.out_scores`
    gets one line per scored row (split, id, loss, per-row metrics), joined by row id in the table stage."""
    set_threads(threads)
    set_seed(settings.seed)
    tokenizer = load_tokenizer(paths.model_dir)
    model = load_for_eval(paths.model_dir, adapter_dir, settings.trust_remote_code, method, settings.precision)
    ran_in = model_precision(model)
    static = cpu_decoding(model, settings.cpu_kernels, settings.batch_size)
    rows, examples = _rows_with_tokens(paths.test_path, paths.test_tokens, paths.tokens_meta, paths.model_dir)
    test, test_lines, answers, speed = score_split(
        model, tokenizer, rows, examples, settings.max_samples, settings, static
    )
    gen_rows = rows[: test["generated_examples"]]
    references = [r["reference"] for r in gen_rows]
    metrics = {
        "model": "base" if adapter_dir is None else adapter_dir,
        "method": None if adapter_dir is None else method,
        "precision": ran_in,
        "split": "test",
        "test_examples": test.pop("examples"),
        **test,
        **speed,
    }
    if settings.task == "classification" or (settings.task == "auto" and is_classification(references)):
        metrics.update(
            accuracy_macro_f1([normalize_answer(a) for a in answers], [normalize_answer(r) for r in references])
        )
    metrics["consistency"] = consistency(
        model,
        tokenizer,
        [r["prompt"] for r in gen_rows[: settings.consistency_questions]],
        settings.consistency_samples,
        settings.temperature,
        settings.seed,
        settings.max_new_tokens,
    )
    score_lines = [{"split": "test", **line} for line in test_lines]
    if paths.val_path and paths.val_tokens:
        val_rows, val_examples = _rows_with_tokens(paths.val_path, paths.val_tokens, paths.tokens_meta, paths.model_dir)
        val, val_lines, _, val_speed = score_split(
            model, tokenizer, val_rows, val_examples, settings.val_samples, settings, static
        )
        metrics["val"] = {
            **val,
            "generation_s": val_speed["generation_s"],
            "generated_tokens": val_speed["generated_tokens"],
        }
        score_lines += [{"split": "val", **line} for line in val_lines]
    if settings.retention_items:
        only = base_correct_items(paths.base_scores) if paths.base_scores else None
        metrics["retention"], retention_lines = evaluate_retention(
            model,
            tokenizer,
            settings.retention_items,
            settings.batch_size,
            settings.retention_max_new_tokens,
            only,
            static,
        )
        metrics["retention"]["measured_on"] = "all items" if only is None else "items the base model answers correctly"
        score_lines += retention_lines
    write_jsonl(
        paths.out_generations,
        (
            {"id": r["id"], "prompt": r["prompt"], "reference": r["reference"], "answer": a}
            for r, a in zip(gen_rows, answers)
        ),
    )
    if paths.out_scores:
        write_jsonl(paths.out_scores, score_lines)
    write_json(paths.out_metrics, metrics)
    _log_metrics(metrics, speed)
    return metrics


def _log_metrics(metrics: dict, speed: dict) -> None:
    log.info(
        "eval: test loss %.4f ppl %.2f BLEU %.2f ROUGE-L %.2f EM %.1f consistency %.1f (%.1f generated tokens/s)",
        metrics["eval_loss"],
        metrics["perplexity"],
        metrics["bleu"],
        metrics["rougeL"],
        metrics["exact_match"],
        metrics["consistency"],
        speed["generation_tokens_per_s"],
    )
    if "val" in metrics:
        log.info(
            "eval: val loss %.4f ROUGE-L %.2f on %d generated rows (%.1fs)",
            metrics["val"]["eval_loss"],
            metrics["val"]["rougeL"],
            metrics["val"]["generated_examples"],
            metrics["val"]["generation_s"],
        )
    if "retention" in metrics:
        r = metrics["retention"]
        log.info(
            "eval: retention %.1f %% of %d items (%s; %.1fs)",
            r["score"],
            r["items"],
            r["measured_on"],
            r["generation_s"],
        )


def write_samples(base_generations: str, tuned_generations: str, out_path: str) -> int:
    """Before/after table: prompt, reference, base answer and tuned answer per test row."""
    base = {r["id"]: r for r in read_jsonl(base_generations)}
    rows = [
        {
            "id": t["id"],
            "prompt": t["prompt"],
            "reference": t["reference"],
            "base_answer": base[t["id"]]["answer"] if t["id"] in base else None,
            "tuned_answer": t["answer"],
        }
        for t in read_jsonl(tuned_generations)
    ]
    return write_jsonl(out_path, rows)


def evaluate_run(
    paths: EvalPaths,
    settings: EvalSettings,
    adapter_dir: str,
    base_generations: str,
    out_samples: str,
    method: str = "lora",
    threads: int | None = None,
) -> dict:
    """Evaluate stage entry point for a grid point: metrics, generations and before/after samples."""
    metrics = evaluate_model(paths, settings, adapter_dir, method, threads)
    write_samples(base_generations, paths.out_generations, out_samples)
    return metrics

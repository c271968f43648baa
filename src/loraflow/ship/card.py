"""Model cards: what a run is, what it was trained on, how well it did and how to load it.

One card per run, in two places that are each owned by one rule:
- results/adapters/<run>/README.md (rule `adapter_package`, loraflow.ship.adapter_package);
- results/export/<run>/README.md (rule `export_model`): the same card plus the GGUF files and their checks.

The card quotes the sweep's provenance (loraflow.ship.provenance).
"""

from __future__ import annotations

import json
import math

from loraflow.ship import llama_check
from loraflow.ship.card_meta import display_path, front_matter, hub_base_model, hub_license
from loraflow.ship.settings import CardInfo, CardLocations


def eval_row(comparison: str, run: str) -> dict:
    """The run's row of comparison.csv (NaN cells dropped), plus the base row under `_base`."""
    import pandas as pd

    df = pd.read_csv(comparison)
    rows = df[df["run"].astype(str) == run]
    if rows.empty:
        raise ValueError(f"{comparison} has no row for run {run}")
    clean = lambda r: {k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v)) and v != ""}  # noqa: E731
    row = clean(rows.iloc[0].to_dict())
    base = df[df["run"].astype(str) == "base"]
    if not base.empty:
        row["_base"] = clean(base.iloc[0].to_dict())
    return row


METRICS = [
    "val_loss",
    "test_loss",
    "perplexity",
    "bleu",
    "rouge1",
    "rouge2",
    "rougeL",
    "exact_match",
    "fact_acc",
    "answer_ok",
    "accuracy",
    "macro_f1",
    "consistency",
    "retention",
]


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def metric_cell(row: dict, metric: str) -> str:
    """`value [lo, hi]` when the table has interval columns (<metric>_lo/_hi), else `value`."""
    if metric not in row:
        return ""
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    return f"{_num(row[metric])} [{_num(lo)}, {_num(hi)}]" if lo is not None and hi is not None else _num(row[metric])


def evaluation_table(row: dict) -> str:
    metrics = [m for m in METRICS if m in row or m in row.get("_base", {})]
    has_ci = any(f"{m}_lo" in row for m in metrics)
    lines = ["| metric | this run" + (" (95 % interval)" if has_ci else "") + " | base model |", "|---|---:|---:|"]
    base = row.get("_base", {})
    for m in metrics:
        lines.append(f"| {m} | {metric_cell(row, m)} | {metric_cell(base, m)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------

HPARAM_KEYS = [
    "method",
    "r",
    "lora_alpha",
    "targets",
    "target_modules",
    "seed",
    "lora_dropout",
    "learning_rate",
    "learning_rate_full",
    "weight_decay",
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "warmup_steps",
    "lr_scheduler",
    "max_grad_norm",
    "precision",
    "early_stopping_patience",
    "adapters",
    "weights",
    "combination_type",
    "density",
]


def _hparam_table(hparams: dict, train_config: dict, train_stats: dict) -> str:
    merged = {
        **{k: v for k, v in train_config.items() if k in HPARAM_KEYS},
        **{k: v for k, v in hparams.items() if k in HPARAM_KEYS},
    }
    if train_stats.get("precision"):
        merged["precision (used)"] = train_stats["precision"]
    for k in ("steps", "best_step", "trainable_params", "trainable_pct", "train_time_s", "optimizer"):
        if k in train_stats:
            merged[k] = train_stats[k]
    lines = ["| setting | value |", "|---|---|"]
    lines += [
        f"| {k} | {_num(v) if not isinstance(v, (list, dict)) else json.dumps(v)} |"
        for k, v in merged.items()
        if v is not None
    ]
    return "\n".join(lines)


def _data_spec(spec: str, results_dir: str) -> str:
    """builtin / hf:<dataset> as they are; a file path as `display_path` prints it."""
    return spec if spec == "builtin" or spec.startswith("hf:") else (display_path(spec, results_dir) or spec)


def _licence_note(bm: dict) -> str:
    meta = hub_license(bm.get("license_id"))
    if meta["license"] != "other":
        return ""
    return (
        f" The Hub metadata says `license: other` (`license_name: {meta['license_name']}`): the base model's licence "
        "is not one of the Hub's licence ids; check it and edit the header before publishing."
    )


def card(
    info: CardInfo,
    provenance: dict,
    row: dict,
    train_stats: dict,
    where: CardLocations,
    check: dict | None = None,
    files: list[dict] | None = None,
) -> str:
    """The model card (Markdown with Hugging Face Hub metadata): `row` is the run's row of the comparison
    table (eval_row), `check` the export's checks (a GGUF export's card), `files` the files it lists.
    Paths are printed relative to `where.results_dir` (see card_meta.display_path)."""
    run, hparams, results_dir = info.run, info.hparams, where.results_dir
    bm, data = provenance["base_model"], provenance["data"]
    is_export = check is not None
    method = hparams.get("method", "lora")
    what = "full fine-tune" if method == "full" else f"{method.upper() if method != 'lora' else 'LoRA'} adapter"
    best = row.get("best")
    lines = [front_matter(provenance, gguf=is_export, task=info.task)]
    here = lambda p: display_path(p, results_dir)  # noqa: E731
    lines.append(f"# {run}: {what} on {bm['name']}" + (" (GGUF export)" if is_export else ""))
    lines.append("")
    summary = f"Trained by loraflow on {data['rows'].get('train')} conversations"
    if hparams.get("r"):
        summary += f" with r={hparams['r']}, alpha={_num(hparams.get('lora_alpha'))} on {hparams.get('targets')}"
    lines.append(summary + "." + (f" Marked **{best}** in the sweep's comparison table." if best else ""))
    lines.append("")
    if files:
        lines += ["## Files", "", "| file | size | sha256 |", "|---|---:|---|"]
        lines += [f"| `{f['file']}` | {f['mb']} MB | `{f['sha256']}` |" for f in files]
        lines.append("")
    orig = bm.get("original") or {}
    lines += [
        "## Base model",
        "",
        f"- **{bm['name']}** ({bm.get('architecture') or '?'}, "
        f"{_num(bm['parameters']) if bm.get('parameters') else '?'} parameters), source `{bm['source']}`"
        + (
            f", location `{here(bm['location']) if bm['source'] == 'local' else bm['location']}`"
            if bm.get("location") and bm["source"] != "builtin"
            else ""
        ),
        f"- original file: `{orig.get('file', '-')}`, sha256 `{orig.get('sha256', 'n/a')}`",
        f"- converted weights used for training (`{here(bm['converted_dir'])}`): sha256 `{bm.get('converted_sha256')}`",
        f"- tokenizer files sha256 `{bm.get('tokenizer_sha256')}`",
        f"- licence: **{bm['license']}** ({bm['license_source']}); this derivative is bound by it." + _licence_note(bm),
        "",
    ]
    rows = data["rows"]
    lines += [
        "## Data",
        "",
        f"- data: `{_data_spec(data['spec'], results_dir)}`"
        + (f" (`{here(data['file'])}`)" if data.get("file") and data["file"] != data["spec"] else "")
        + (f", sha256 `{data['sha256']}`" if data.get("sha256") else ""),
        f"- rows: {data.get('rows_in')} in -> train {rows.get('train')}, val {rows.get('val')}, test "
        f"{rows.get('test')}, rejected {rows.get('rejected')}",
        f"- split files sha256 `{data.get('split_files_sha256')}`",
        f'- system prompt used in training: "{info.system_prompt}"' if info.system_prompt else "- no system prompt",
        f"- chat template: {data.get('chat_template', 'the tokenizer’s')}"
        if data.get("chat_template")
        else "- chat template: the tokenizer's",
        "",
    ]
    lines += ["## Grid point and hyperparameters", "", _hparam_table(hparams, info.train_config or {}, train_stats), ""]
    lines += ["## Evaluation (test split, greedy decoding)", "", evaluation_table(row), ""]
    if check:
        lines += _check_section(check)
    lines += _usage(info, bm, where, check)
    return "\n".join(lines) + "\n"


def _check_section(check: dict) -> list[str]:
    out = ["## Export checks (this file read back and compared with the merged model)", ""]
    for kind, e in check["types"].items():
        f = check["files"][kind]
        if kind == "f16":
            out.append(
                f"- `{f['file']}` ({f['mb']} MB): max |Δlogit| **{e['max_abs_logit_diff']:.4g}** over "
                f"{check['positions']} positions of {check['logit_prompts']} test texts, tolerance "
                f"{e['tolerance']:.4g} = {e['tolerance_rule']}; rounding the merged weights to f16 alone gives "
                f"{check['f16_rounding_floor']:.4g}; greedy answers identical on "
                f"{e['agreeing_prompts']}/{check['prompts']} prompts"
            )
        else:
            out.append(
                f"- `{f['file']}` ({f['mb']} MB): greedy answers identical over the first {check['q8_0_tokens']} "
                f"tokens on **{e['agreeing_prompts']}/{check['prompts']}** test prompts ({e['greedy_agreement']:.1%}, "
                f"required {e['min_agreement']:.0%}); max |Δlogit| {e['max_abs_logit_diff']:.3g}"
            )
    t = check["template"]
    out.append(
        "- chat template read back from the GGUF: identical text, renders "
        f"{t['template_renders_same']}/{t['prompts']} test prompts like the tokenizer; GGUF tokenizer gives the same "
        f"ids on {t['tokenizer_ids_same']}/{t['prompts']}; Modelfile TEMPLATE renders "
        f"{t['modelfile_template_renders_same']}/{t['prompts']} the same"
    )
    out.append("- what was checked on each file, with which runtime:")
    out += [f"  - {line}" for line in llama_check.describe(check, check.get("modelfile_uses"))]
    out.append(
        f"- stop tokens: {', '.join(f'`{k}` ({v})' for k, v in check['tokenizer']['stop_tokens'].items())}; export "
        f"took {check['export_s']:.0f} s"
    )
    return out + [""]


def _usage(info: CardInfo, bm: dict, where: CardLocations, check: dict | None) -> list[str]:
    run, max_new_tokens, method = info.run, info.max_new_tokens, info.hparams.get("method", "lora")
    adapter_dir, model_dir, export_dir, results_dir = (
        where.adapter_dir,
        where.model_dir,
        where.export_dir,
        where.results_dir,
    )
    here = lambda p: display_path(p, results_dir)  # noqa: E731
    hub_base = hub_base_model({"base_model": bm})
    base = hub_base or here(bm["converted_dir"])
    sys_msg = json.dumps(info.system_prompt, ensure_ascii=False)
    out = [
        "## How to use",
        "",
        "Paths are relative to the sweep's results directory. Once this directory is on the Hugging Face Hub "
        f"(`loraflow push {run} --repo <id>`), use its repository id in place of the path.",
        "",
    ]
    out += ["### transformers + peft", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if method != "full" and adapter_dir:
        out += [
            "from peft import PeftModel",
            "",
            f'tok = AutoTokenizer.from_pretrained("{base}")',
            f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{here(adapter_dir)}")',
            "# or the merged model: "
            + f'AutoModelForCausalLM.from_pretrained("{here(model_dir) if model_dir else f"runs/{run}/merged"}")',
        ]
    else:
        out += [
            "",
            f'tok = AutoTokenizer.from_pretrained("{here(model_dir)}")',
            f'model = AutoModelForCausalLM.from_pretrained("{here(model_dir)}")',
        ]
    out += [
        f'messages = [{{"role": "system", "content": {sys_msg}}}, {{"role": "user", "content": "..."}}]',
        'ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        f"out = model.generate(**ids, max_new_tokens={max_new_tokens}, do_sample=False)",
        'print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
    ]
    if hub_base:
        out += [
            f"The adapter was trained on `{here(bm['converted_dir'])}`, {hub_base} as loraflow converted it (digests "
            "above).",
            "",
        ]
    if export_dir and check:
        gguf, folder = check["modelfile_uses"], here(export_dir)
        out += [
            "### llama.cpp",
            "",
            "```bash",
            f"llama-server -m {folder}/{gguf} --jinja --temp 0 --repeat-penalty 1 -n {max_new_tokens}",
            "# the chat template and stop tokens are in the GGUF; send the training system prompt as the system "
            "message",
            "```",
            "",
            "### Ollama",
            "",
            "```bash",
            f"cd {folder} && ollama create loraflow-{run} -f Modelfile",
            f'ollama run loraflow-{run} "your question"',
            "```",
            "",
            f"The Modelfile points Ollama at `{gguf}` and carries the same template, stop tokens, system prompt and "
            "greedy decoding as training and evaluation.",
            "",
        ]
    else:
        out += [
            "### llama.cpp and Ollama",
            "",
            f"Export this run to GGUF with `snakemake export` (set `export.runs: [{run}]`, or it is the best run); "
            f"the files and a Modelfile then appear in `export/{run}/` of the results directory.",
            "",
        ]
    return out


def export_card(
    info: CardInfo, provenance: dict, row: dict, train_stats: dict, where: CardLocations, check: dict
) -> str:
    """The card of a GGUF export: `card` with the export's checks and its files."""
    files = [{"file": f["file"], "mb": f["mb"], "sha256": f["sha256"]} for f in check["files"].values()]
    return card(info, provenance, row, train_stats, where, check=check, files=files)

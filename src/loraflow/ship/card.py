"""Model cards: what a run is, what it was trained on, how well it did and how to load it.

One card per run, in two places that are each owned by one rule:
- results/adapters/<run>/ (rule `adapter_package`): the run's PEFT adapter files (hard links to
  runs/<run>/adapter, which stays the train rule's output) plus README.md - a self-describing adapter
  directory, the one serve.md points vLLM at;
- results/export/<run>/README.md (rule `export_model`): the same card plus the GGUF files and their checks.

`write_provenance` (rule `provenance`) computes the digests once per sweep: base model file(s),
converted base weights, data file, rows per split, licence.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

from loraflow.io import atomic_dir, read_json, sha256_files, write_json
from loraflow.ship import llama_check
from loraflow.ship.card_meta import display_path, front_matter, hub_base_model, hub_license

log = logging.getLogger(__name__)

UNKNOWN_LICENSE = "unknown - check the base model"
LICENSE_NAMES = {"apache-2.0": "Apache-2.0", "mit": "MIT", "llama2": "Llama 2 Community License", "llama3": "Llama 3 Community License",
                 "llama3.1": "Llama 3.1 Community License", "llama3.2": "Llama 3.2 Community License", "gemma": "Gemma Terms of Use",
                 "cc-by-4.0": "CC-BY-4.0", "cc-by-nc-4.0": "CC-BY-NC-4.0", "bsd-3-clause": "BSD-3-Clause", "other": "other (see the base model)"}
BUILTIN_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUILTIN_LICENSE = "apache-2.0"


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

def _front_matter_license(readme: Path) -> str | None:
    text = readme.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    if m:
        lic = re.search(r"^license:\s*['\"]?([^'\"\n]+)", m.group(1), re.M)
        if lic:
            return lic.group(1).strip()
    return None


def find_license(source: str, location: str | None, gguf_file: str | None) -> tuple[str, str]:
    """(licence id or UNKNOWN_LICENSE, where it was found) for the configured base model."""
    if gguf_file and location and (Path(location) / gguf_file).is_file():
        from gguf import GGUFReader

        field = GGUFReader(str(Path(location) / gguf_file)).fields.get("general.license")
        if field is not None:
            return str(field.contents()), f"{gguf_file} metadata (general.license)"
    if source == "builtin":
        return BUILTIN_LICENSE, "SmolLM2 model card (Apache-2.0)"
    if location and Path(location).is_dir():
        d = Path(location)
        if (d / "README.md").is_file() and (lic := _front_matter_license(d / "README.md")):
            return lic, "README.md front matter"
        if (d / "config.json").is_file():
            cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
            if isinstance(cfg.get("license"), str):
                return cfg["license"], "config.json"
        for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
            if (d / name).is_file():
                first = next((ln.strip() for ln in (d / name).read_text(errors="replace").splitlines() if ln.strip()), "")
                if first:
                    return first[:80], name
    return UNKNOWN_LICENSE, "not found"


def license_label(lic: str) -> str:
    return LICENSE_NAMES.get(lic.lower(), lic) if lic != UNKNOWN_LICENSE else lic


def _parameter_count(model_dir: str) -> int | None:
    """Parameters stored in a safetensors model directory (from the headers, no weights read)."""
    from safetensors import safe_open

    total, files = 0, sorted(Path(model_dir).glob("*.safetensors"))
    for f in files:
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                total += math.prod(st.get_slice(key).get_shape())
    return total or None


def write_provenance(
    model_dir: str, split_stats: str, tokens_meta: str, out_json: str, source: str = "builtin", path: str | None = None,
    gguf_file: str | None = None, data_path: str | None = None, data_spec: str = "builtin", system_prompt: str = "",
    format_stats: str | None = None,
) -> dict:
    """Provenance stage entry point: digests of the base model and the data, rows per split, licence."""
    src = read_json(Path(model_dir) / "loraflow_source.json") if (Path(model_dir) / "loraflow_source.json").is_file() else {}
    if not src.get("architecture") and (Path(model_dir) / "config.json").is_file():
        src["architecture"] = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("architectures")
    if not src.get("parameters"):
        src["parameters"] = _parameter_count(model_dir)
    source = src.get("source") or source  # what the base-model stage recorded of the model actually used
    location, gguf = src.get("location") or path, src.get("gguf_file") or gguf_file
    original = None
    if gguf and location and (Path(location) / gguf).is_file():
        original = {"file": gguf, "sha256": sha256_files([Path(location) / gguf])}
    elif location and Path(location).is_dir() and list(Path(location).glob("*.safetensors")):
        files = sorted(Path(location).glob("*.safetensors"))
        original = {"file": ", ".join(f.name for f in files), "sha256": sha256_files(files)}
    lic, lic_source = find_license(source, location, gguf)
    name = BUILTIN_NAME if source == "builtin" else (path if source == "hub" else Path(path or location or "?").name)
    weights = sorted(Path(model_dir).glob("*.safetensors"))
    split = read_json(split_stats)
    meta = read_json(tokens_meta)
    data = {"spec": data_spec, "file": data_path, "sha256": sha256_files([data_path]) if data_path and Path(data_path).is_file() else None,
            "rows_in": split.get("rows_in"), "rows": {k: split.get(k) for k in ("train", "val", "test", "rejected")},
            "split_files_sha256": meta.get("data_sha256"), "system_prompt": system_prompt}
    if format_stats and Path(format_stats).is_file():
        data["chat_template"] = read_json(format_stats).get("template")
    prov = {
        "base_model": {
            "name": name, "source": source, "location": location, "gguf_file": gguf, "original": original,
            "converted_dir": model_dir, "converted_sha256": sha256_files(weights) if weights else None,
            "architecture": (src.get("architecture") or [None])[0] if isinstance(src.get("architecture"), list) else src.get("architecture"),
            "parameters": src.get("parameters"), "license_id": lic, "license": license_label(lic), "license_source": lic_source,
            "tokenizer_sha256": meta.get("tokenizer_sha256"),
        },
        "data": data,
    }
    write_json(out_json, prov)
    return prov


# ---------------------------------------------------------------------------------------------
# Evaluation row
# ---------------------------------------------------------------------------------------------

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


METRICS = ["val_loss", "test_loss", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "fact_acc", "answer_ok",
           "accuracy", "macro_f1", "consistency", "retention"]


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

HPARAM_KEYS = ["method", "r", "lora_alpha", "targets", "target_modules", "seed", "lora_dropout", "learning_rate", "learning_rate_full", "weight_decay",
               "epochs", "max_steps", "batch_size", "grad_accum", "warmup_steps", "lr_scheduler", "max_grad_norm", "precision",
               "early_stopping_patience", "adapters", "weights", "combination_type", "density"]


def _hparam_table(hparams: dict, train_config: dict, train_stats: dict) -> str:
    merged = {**{k: v for k, v in train_config.items() if k in HPARAM_KEYS}, **{k: v for k, v in hparams.items() if k in HPARAM_KEYS}}
    if train_stats.get("precision"):
        merged["precision (used)"] = train_stats["precision"]
    for k in ("steps", "best_step", "trainable_params", "trainable_pct", "train_time_s", "optimizer"):
        if k in train_stats:
            merged[k] = train_stats[k]
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_num(v) if not isinstance(v, (list, dict)) else json.dumps(v)} |" for k, v in merged.items() if v is not None]
    return "\n".join(lines)


def _data_spec(spec: str, results_dir: str) -> str:
    """builtin / hf:<dataset> as they are; a file path as `display_path` prints it."""
    return spec if spec == "builtin" or spec.startswith("hf:") else display_path(spec, results_dir)


def _licence_note(bm: dict) -> str:
    meta = hub_license(bm.get("license_id"))
    if meta["license"] != "other":
        return ""
    return (f" The Hub metadata says `license: other` (`license_name: {meta['license_name']}`): the base model's licence "
            "is not one of the Hub's licence ids; check it and edit the header before publishing.")


def card(
    *, run: str, hparams: dict, train_config: dict, provenance: dict, row: dict, train_stats: dict, system_prompt: str,
    max_new_tokens: int, adapter_dir: str | None, model_dir: str | None = None, check: dict | None = None, export_dir: str | None = None,
    results_dir: str = "results", files: list[dict] | None = None, task: str = "causal_lm",
) -> str:
    """The model card (Markdown with Hugging Face Hub metadata). Paths are printed relative to
    `results_dir` (see card_meta.display_path)."""
    bm, data = provenance["base_model"], provenance["data"]
    is_export = check is not None
    method = hparams.get("method", "lora")
    what = "full fine-tune" if method == "full" else f"{method.upper() if method != 'lora' else 'LoRA'} adapter"
    best = row.get("best")
    lines = [front_matter(provenance, gguf=is_export, task=task)]
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
    lines += ["## Base model", "",
              f"- **{bm['name']}** ({bm.get('architecture') or '?'}, {_num(bm['parameters']) if bm.get('parameters') else '?'} parameters), source `{bm['source']}`"
              + (f", location `{here(bm['location']) if bm['source'] == 'local' else bm['location']}`" if bm.get("location") and bm["source"] != "builtin" else ""),
              f"- original file: `{orig.get('file', '-')}`, sha256 `{orig.get('sha256', 'n/a')}`",
              f"- converted weights used for training (`{here(bm['converted_dir'])}`): sha256 `{bm.get('converted_sha256')}`",
              f"- tokenizer files sha256 `{bm.get('tokenizer_sha256')}`",
              f"- licence: **{bm['license']}** ({bm['license_source']}); this derivative is bound by it." + _licence_note(bm), ""]
    rows = data["rows"]
    lines += ["## Data", "",
              f"- data: `{_data_spec(data['spec'], results_dir)}`"
              + (f" (`{here(data['file'])}`)" if data.get("file") and data["file"] != data["spec"] else "")
              + (f", sha256 `{data['sha256']}`" if data.get("sha256") else ""),
              f"- rows: {data.get('rows_in')} in -> train {rows.get('train')}, val {rows.get('val')}, test {rows.get('test')}, rejected {rows.get('rejected')}",
              f"- split files sha256 `{data.get('split_files_sha256')}`",
              f"- system prompt used in training: \"{system_prompt}\"" if system_prompt else "- no system prompt",
              f"- chat template: {data.get('chat_template', 'the tokenizer’s')}" if data.get("chat_template") else "- chat template: the tokenizer's", ""]
    lines += ["## Grid point and hyperparameters", "", _hparam_table(hparams, train_config, train_stats), ""]
    lines += ["## Evaluation (test split, greedy decoding)", "", evaluation_table(row), ""]
    if check:
        lines += _check_section(check)
    lines += _usage(run, bm, adapter_dir, model_dir, export_dir, check, system_prompt, max_new_tokens, results_dir, method)
    return "\n".join(lines) + "\n"


def _check_section(check: dict) -> list[str]:
    out = ["## Export checks (this file read back and compared with the merged model)", ""]
    for kind, e in check["types"].items():
        f = check["files"][kind]
        if kind == "f16":
            out.append(f"- `{f['file']}` ({f['mb']} MB): max |Δlogit| **{e['max_abs_logit_diff']:.4g}** over {check['positions']} positions of "
                       f"{check['logit_prompts']} test texts, tolerance {e['tolerance']:.4g} = {e['tolerance_rule']}; rounding the merged "
                       f"weights to f16 alone gives {check['f16_rounding_floor']:.4g}; greedy answers identical on {e['agreeing_prompts']}/{check['prompts']} prompts")
        else:
            out.append(f"- `{f['file']}` ({f['mb']} MB): greedy answers identical over the first {check['q8_0_tokens']} tokens on "
                       f"**{e['agreeing_prompts']}/{check['prompts']}** test prompts ({e['greedy_agreement']:.1%}, required {e['min_agreement']:.0%}); "
                       f"max |Δlogit| {e['max_abs_logit_diff']:.3g}")
    t = check["template"]
    out.append(f"- chat template read back from the GGUF: identical text, renders {t['template_renders_same']}/{t['prompts']} test prompts like the "
               f"tokenizer; GGUF tokenizer gives the same ids on {t['tokenizer_ids_same']}/{t['prompts']}; Modelfile TEMPLATE renders "
               f"{t['modelfile_template_renders_same']}/{t['prompts']} the same")
    out.append("- what was checked on each file, with which runtime:")
    out += [f"  - {line}" for line in llama_check.describe(check, check.get("modelfile_uses"))]
    out.append(f"- stop tokens: {', '.join(f'`{k}` ({v})' for k, v in check['tokenizer']['stop_tokens'].items())}; export took {check['export_s']:.0f} s")
    return out + [""]


def _usage(run, bm, adapter_dir, model_dir, export_dir, check, system_prompt, max_new_tokens, results_dir, method) -> list[str]:
    here = lambda p: display_path(p, results_dir)  # noqa: E731
    hub_base = hub_base_model({"base_model": bm})
    base = hub_base or here(bm["converted_dir"])
    sys_msg = json.dumps(system_prompt, ensure_ascii=False)
    out = ["## How to use", "", "Paths are relative to the sweep's results directory. Once this directory is on the Hugging Face Hub "
           f"(`loraflow push {run} --repo <id>`), use its repository id in place of the path.", ""]
    out += ["### transformers + peft", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if method != "full" and adapter_dir:
        out += ["from peft import PeftModel", "", f'tok = AutoTokenizer.from_pretrained("{base}")',
                f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{here(adapter_dir)}")',
                "# or the merged model: " + f'AutoModelForCausalLM.from_pretrained("{here(model_dir) if model_dir else f"runs/{run}/merged"}")']
    else:
        out += ["", f'tok = AutoTokenizer.from_pretrained("{here(model_dir)}")', f'model = AutoModelForCausalLM.from_pretrained("{here(model_dir)}")']
    out += [f"messages = [{{\"role\": \"system\", \"content\": {sys_msg}}}, {{\"role\": \"user\", \"content\": \"...\"}}]",
            "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
            f"out = model.generate(**ids, max_new_tokens={max_new_tokens}, do_sample=False)",
            "print(tok.decode(out[0, ids[\"input_ids\"].shape[1]:], skip_special_tokens=True))", "```", ""]
    if hub_base:
        out += [f"The adapter was trained on `{here(bm['converted_dir'])}`, {hub_base} as loraflow converted it (digests above).", ""]
    if export_dir and check:
        gguf, where = check["modelfile_uses"], here(export_dir)
        out += ["### llama.cpp", "", "```bash",
                f"llama-server -m {where}/{gguf} --jinja --temp 0 --repeat-penalty 1 -n {max_new_tokens}",
                "# the chat template and stop tokens are in the GGUF; send the training system prompt as the system message", "```", "",
                "### Ollama", "", "```bash", f"cd {where} && ollama create loraflow-{run} -f Modelfile",
                f"ollama run loraflow-{run} \"your question\"", "```", "",
                f"The Modelfile points Ollama at `{gguf}` and carries the same template, stop tokens, system prompt and greedy "
                "decoding as training and evaluation.", ""]
    else:
        out += ["### llama.cpp and Ollama", "",
                f"Export this run to GGUF with `snakemake export` (set `export.runs: [{run}]`, or it is the best run); "
                f"the files and a Modelfile then appear in `export/{run}/` of the results directory.", ""]
    return out


def export_card(*, check: dict, **kwargs) -> str:
    files = [{"file": f["file"], "mb": f["mb"], "sha256": f["sha256"]} for f in check["files"].values()]
    return card(check=check, files=files, **kwargs)


# ---------------------------------------------------------------------------------------------
# Adapter package
# ---------------------------------------------------------------------------------------------

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def package_adapter(
    adapter_dir: str, comparison: str, train_stats: str, provenance: str, out_dir: str, run: str, hparams: dict,
    train_config: dict | None = None, system_prompt: str = "", max_new_tokens: int = 64, merged_dir: str | None = None,
    task: str = "causal_lm",
) -> dict:
    """Adapter-package stage entry point: results/adapters/<run>/ = the adapter's files (hard-linked,
    copied across file systems) + the model card, loadable with PeftModel.from_pretrained."""
    src = Path(adapter_dir)
    missing = [f for f in ADAPTER_FILES if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter_dir}: no {', '.join(missing)} (not a PEFT adapter)")
    prov = read_json(provenance)
    row = eval_row(comparison, run)
    text = card(run=run, hparams=hparams, train_config=train_config or {}, provenance=prov, row=row, train_stats=read_json(train_stats),
                system_prompt=system_prompt, max_new_tokens=max_new_tokens, adapter_dir=out_dir, model_dir=merged_dir,
                results_dir=str(Path(out_dir).parent.parent), task=task,
                files=[{"file": f, "mb": round((src / f).stat().st_size / 2**20, 2), "sha256": sha256_files([src / f])} for f in ADAPTER_FILES])
    with atomic_dir(out_dir) as tmp:
        for f in sorted(src.iterdir()):
            # peft's placeholder card is replaced by ours; hidden files (Snakemake's .snakemake_timestamp of the
            # train output) are not the adapter's: a hard link to that marker would let this rule's marker touch
            # the train output, which then looks newer than its evaluation and reruns it on every invocation
            if f.is_file() and f.name != "README.md" and not f.name.startswith("."):
                _link_or_copy(f, tmp / f.name)
        (tmp / "README.md").write_text(text, encoding="utf-8")
    cfg = json.loads((src / "adapter_config.json").read_text())
    return {"run": run, "r": cfg.get("r"), "dora": bool(cfg.get("use_dora"))}

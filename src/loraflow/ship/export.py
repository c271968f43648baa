"""Export stage: the chosen run as GGUF (f16 / q8_0) with an Ollama Modelfile and a model card, each
file verified by loading what was written.

Entry points (one per rule, see workflow/rules/export.smk):
- `runs_to_export`: which runs to export (results/best.json's run, or the configured list);
- `export_run`: results/export/<run>/ (model-<type>.gguf, Modelfile, README.md, export_check.json);
- `write_export_summary`: results/export/summary.{csv,md} (the checks of every exported run, in the report).

Checks (the job fails if one fails; figures in export_check.json):
- f16: the GGUF read back with transformers' GGUF loader against the merged model on test texts:
  max |Δlogit| <= f16_tolerance x 2^-11 (f16's unit roundoff) x max |logit| - the error that rounding
  every weight to f16 can cause, with headroom. Also reported: the same model with its weights rounded
  to f16 in torch (`f16_rounding_floor`), and the GGUF against that (0 when the file holds exactly the
  rounded weights).
- q8_0: greedy answers of GGUF and merged model agree token for token over the first `q8_0_tokens`
  tokens (up to the stop token) for at least `q8_0_min_agreement` of the test prompts. A prompt whose
  answers part at a near tie - the GGUF's own logit margin between its token and the merged model's is
  below `tie_margin` - counts as agreeing: greedy decoding there is decided by rounding, not by the
  model (any quantisation flips such ties). Both figures are reported: `greedy_agreement` (token for
  token) and `agreement_outside_ties` (what the check uses), with every divergence and its margin.
- template: the chat template read back from the GGUF renders every test prompt exactly like the
  tokenizer's own template (and like the prompts the run was evaluated on); the GGUF's tokenizer gives the
  same token ids; the Modelfile's Go template renders the same text.
- llama.cpp (llama-cpp-python, optional extra `gguf-run`): same prompt tokens, answers identical to
  transformers on the test prompts, and generation ends at the stop token.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from loraflow.ship.gguf_writer import TYPES, ExportError, check_model_dir, read_vocab, model_info, stop_tokens, write_gguf
from loraflow.io import atomic_dir, read_json, read_jsonl, write_json, write_text

log = logging.getLogger(__name__)

F16_UNIT_ROUNDOFF = 2.0**-11


class ExportCheckError(RuntimeError):
    """A verification of the written files failed."""


# ---------------------------------------------------------------------------------------------
# Which runs
# ---------------------------------------------------------------------------------------------

def runs_to_export(runs="best", best_json: str | None = None) -> list[str]:
    """The runs to export: an explicit list (export.runs) as it is, or for "best" the run named by
    results/best.json (written by the table stage; merge.runs: best merges the same run)."""
    if runs != "best":
        return list(runs)
    best = read_json(best_json).get("run") if best_json and Path(best_json).is_file() else None
    if not best:
        raise ExportError(f"{best_json} names no best run (did no run finish?): nothing to export - "
                          "or list the runs to export in export.runs")
    return [best]


def check_export_config(config: dict, runs: dict) -> None:
    """Parse-time checks: export.runs names runs of the sweep, and (when export is enabled) the base
    model is an architecture the GGUF export supports. Raises ExportError naming the key."""
    ex = config["export"]
    if ex["runs"] != "best":
        unknown = [r for r in ex["runs"] if r not in runs]
        if unknown:
            raise ExportError(f"config key export.runs: {', '.join(map(str, unknown))} not a run of this sweep (runs: {', '.join(runs)})")
    bad = [t for t in ex["types"] if t not in TYPES]
    if bad or not ex["types"]:
        raise ExportError(f"config key export.types: {bad or ex['types']} - choose from {', '.join(TYPES)}")
    if not ex["enabled"]:
        return
    bm = config["base_model"]
    if bm["source"] == "local":
        if bm.get("gguf_file"):
            arch = gguf_architecture(Path(bm["path"]) / bm["gguf_file"])
            if arch not in ("llama", "qwen2"):
                raise ExportError(f"config key base_model: {bm['gguf_file']} is a {arch!r} GGUF; export (export.enabled) "
                                  "supports the Llama family (SmolLM2, Llama 2/3), Mistral and Qwen2")
        else:
            try:
                check_model_dir(bm["path"])
            except ExportError as err:
                raise ExportError(f"config key base_model.path (export.enabled): {err}") from None
    # builtin is SmolLM2 (Llama); a hub model is checked first thing in the export job.


def gguf_architecture(path: str | Path) -> str:
    from gguf import GGUFReader

    return GGUFReader(str(path)).fields["general.architecture"].contents()


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------

def _device():
    from loraflow.model.modeling import pick_device

    return pick_device()


def _load_hf(model_dir: str, trust_remote_code: bool = False, **kwargs):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code, **kwargs)
    return model.to(_device()).eval()


def _batch(tokenizer, texts: list[str]):
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(_device())


def masked_logits(model, tokenizer, texts: list[str]):
    """Logits at every real (non-pad) position of `texts`, as one float32 [positions, vocab] tensor."""
    import torch

    enc = _batch(tokenizer, texts)
    with torch.no_grad():
        logits = model(**enc).logits.float()
    return logits[enc["attention_mask"].bool()].cpu()


def greedy_tokens(model, tokenizer, prompts: list[str], new_tokens: int, stops: list[int], batch_size: int = 16) -> list[list[int]]:
    """Greedy continuation of each prompt, cut after the first stop token."""
    import torch

    out = []
    for b in range(0, len(prompts), batch_size):
        enc = _batch(tokenizer, prompts[b : b + batch_size])
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                 top_p=None, top_k=None, temperature=None)
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            out.append(row[:cut])
    return out


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def agreement_outside_ties(n: int, agreeing: int, parted: list[dict], tie_margin: float) -> float:
    """Share of prompts whose answers agree, counting those that part at a near tie (margin < tie_margin)."""
    ties = sum(1 for d in parted if d["margin"] is not None and d["margin"] < tie_margin)
    return (agreeing + ties) / max(n, 1)


def divergences(model, tokenizer, prompts: list[str], answers: list[list[int]], reference: list[list[int]]) -> list[dict]:
    """Where each disagreeing answer leaves the reference, and the model's own logit margin there
    between its token and the reference's (a small margin = a near tie that any rounding can flip)."""
    import torch

    out = []
    for i, (a, r) in enumerate(zip(answers, reference)):
        if a == r:
            continue
        k = next((j for j in range(min(len(a), len(r))) if a[j] != r[j]), min(len(a), len(r)))
        if k >= min(len(a), len(r)):  # one stopped (or was cut) where the other goes on
            out.append({"prompt": i, "at": k, "margin": None})
            continue
        ids = tokenizer(prompts[i], add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([ids, torch.tensor([a[:k]], dtype=ids.dtype)], dim=1).to(_device())
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].float()
        out.append({"prompt": i, "at": k, "margin": round((logits[a[k]] - logits[r[k]]).item(), 4)})
    return out


def check_templates(tokenizer, gguf_dir: Path, gguf_file: str, rows: list[dict], seg) -> dict:
    """The chat template and tokenizer read back from the GGUF against the run's own."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from loraflow.ship.ollama import template_mismatches

    raw = GGUFReader(str(gguf_dir / gguf_file)).fields["tokenizer.chat_template"].contents()
    back = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    prompts = [r["messages"][:-1] for r in rows]
    own = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
    read = [back.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
    ids_own = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in own]
    ids_back = [back(p, add_special_tokens=False)["input_ids"] for p in own]
    return {
        "chat_template_identical": raw == tokenizer.chat_template,
        "prompts": len(rows),
        "template_renders_same": sum(a == b for a, b in zip(own, read)),
        "template_matches_eval_prompts": sum(a == r["prompt"] for a, r in zip(read, rows)),
        "tokenizer_ids_same": sum(a == b for a, b in zip(ids_own, ids_back)),
        "modelfile_template_renders_same": len(rows) - len(template_mismatches(tokenizer, seg, prompts)),
    }


def llama_cpp_available() -> tuple[bool, str]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        return False, f"llama-cpp-python is not installed ({err}); install the optional extra: pip install 'loraflow[gguf-run]'"
    return True, ""


def run_llama_cpp(gguf_path: Path, tokenizer, prompts: list[str], reference: list[list[int]], new_tokens: int, stops: list[int], threads: int | None = None) -> dict:
    """Greedy answers of llama.cpp on `prompts` against `reference` (transformers' greedy tokens from the
    same file). llama.cpp is fed the HF token ids (so answers compare the models) and, separately, asked to
    tokenize the prompt text itself (so its tokenizer is compared too)."""
    import os

    import llama_cpp
    from llama_cpp import Llama

    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    llm = Llama(model_path=str(gguf_path), n_ctx=max(map(len, encoded)) + new_tokens + 8, n_batch=512, seed=0, verbose=False,
                n_threads=threads or len(os.sched_getaffinity(0)))
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def is_eog(token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(vocab, int(token)))

    same_ids, answers = 0, []
    for p, ids in zip(prompts, encoded):
        same_ids += llm.tokenize(p.encode("utf-8"), add_bos=False, special=True) == ids
        toks: list[int] = []
        for t in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            toks.append(int(t))
            if is_eog(t) or len(toks) >= new_tokens:
                break
        answers.append(toks)
    ended = [bool(a) and a[-1] in stops for a in answers]
    ref_stopped = [bool(r) and r[-1] in stops for r in reference]
    return {
        "file": gguf_path.name, "prompts": len(prompts), "prompt_tokens_same": same_ids,
        "agreement": agreement(answers, reference), "agreeing_prompts": sum(a == b for a, b in zip(answers, reference)),
        "stopped_where_transformers_stopped": sum(a == b for a, b in zip(ended, ref_stopped)),
        "transformers_stopped": sum(ref_stopped), "stop_tokens_are_eog": {str(s): bool(is_eog(s)) for s in stops},
    }


def verify(model_dir: str, out_dir: Path, files: dict[str, str], tokenizer, rows: list[dict], seg, q8_0_tokens: int = 32,
           q8_0_min_agreement: float = 0.9, f16_tolerance: float = 16.0, logit_prompts: int = 8, llama_cpp: str = "auto",
           threads: int | None = None, trust_remote_code: bool = False, tie_margin: float = 0.1) -> dict:
    """Load every written GGUF back and compare it with the merged model (see the module docstring)."""
    import gc

    import torch

    stops = sorted(set(stop_tokens(tokenizer).values()))
    prompts = [r["prompt"] for r in rows]
    texts = [r["text"] for r in rows[:logit_prompts]]
    check: dict = {"prompts": len(rows), "logit_prompts": len(texts), "q8_0_tokens": q8_0_tokens, "stop_token_ids": stops, "types": {}}

    ref = _load_hf(model_dir, trust_remote_code)
    ref_logits = masked_logits(ref, tokenizer, texts)
    ref_answers = greedy_tokens(ref, tokenizer, prompts, q8_0_tokens, stops)
    scale = ref_logits.abs().max().item()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.half().float())
    rounded_logits = masked_logits(ref, tokenizer, texts)
    del ref
    gc.collect()
    check["merged_dtype_on_disk"] = _disk_dtype(model_dir)
    check["max_abs_logit"] = scale
    check["f16_rounding_floor"] = (rounded_logits - ref_logits).abs().max().item()
    check["positions"] = int(ref_logits.shape[0])

    passed, answers_by_type = True, {}
    for kind, name in files.items():
        start = time.perf_counter()
        model = _load_hf(str(out_dir), gguf_file=name)
        logits = masked_logits(model, tokenizer, texts)
        answers = greedy_tokens(model, tokenizer, prompts, q8_0_tokens, stops)
        diff = (logits - ref_logits).abs().max().item()
        entry = {"file": name, "max_abs_logit_diff": diff, "vs_f16_rounded_max_abs_diff": (logits - rounded_logits).abs().max().item(),
                 "greedy_agreement": agreement(answers, ref_answers), "agreeing_prompts": sum(a == b for a, b in zip(answers, ref_answers))}
        if kind == "f16":
            entry["tolerance"] = f16_tolerance * F16_UNIT_ROUNDOFF * scale
            entry["tolerance_rule"] = f"{f16_tolerance:g} x 2^-11 (f16 unit roundoff) x max|logit| ({scale:.3g})"
            entry["passed"] = diff <= entry["tolerance"]
        entry["divergences"] = divergences(model, tokenizer, prompts, answers, ref_answers)
        entry["agreement_outside_ties"] = agreement_outside_ties(len(prompts), entry["agreeing_prompts"], entry["divergences"], tie_margin)
        if kind != "f16":
            entry["min_agreement"], entry["tie_margin"] = q8_0_min_agreement, tie_margin
            entry["passed"] = entry["agreement_outside_ties"] >= q8_0_min_agreement
        entry["verify_s"] = round(time.perf_counter() - start, 2)
        del model
        gc.collect()
        passed &= entry["passed"]
        check["types"][kind] = entry
        answers_by_type[kind] = answers
    first = next(iter(files.values()))
    check["template"] = check_templates(tokenizer, out_dir, first, rows, seg)
    t = check["template"]
    template_ok = t["chat_template_identical"] and all(t[k] == t["prompts"] for k in
                                                        ("template_renders_same", "template_matches_eval_prompts", "tokenizer_ids_same",
                                                                  "modelfile_template_renders_same"))
    t["passed"] = template_ok
    passed &= template_ok

    available, why = llama_cpp_available()
    if llama_cpp == "skip":
        check["llama_cpp"] = {"ran": False, "reason": "export.llama_cpp is skip"}
    elif not available:
        if llama_cpp == "require":
            raise ExportCheckError(why)
        check["llama_cpp"] = {"ran": False, "reason": why}
    else:
        kind = "f16" if "f16" in files else next(iter(files))
        res = run_llama_cpp(out_dir / files[kind], tokenizer, prompts, answers_by_type[kind], q8_0_tokens, stops, threads)
        res["ran"] = True
        res["compared_with"] = f"transformers on the same file ({kind})"
        res["passed"] = (res["prompt_tokens_same"] == res["prompts"] and res["agreement"] >= q8_0_min_agreement
                         and all(res["stop_tokens_are_eog"].values())
                         and res["stopped_where_transformers_stopped"] >= math.ceil(q8_0_min_agreement * res["prompts"]))
        check["llama_cpp"] = res
        passed &= res["passed"]
    check["passed"] = bool(passed)
    return check


def _disk_dtype(model_dir: str) -> str | None:
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        return None
    c = json.loads(cfg.read_text())
    return c.get("dtype") or c.get("torch_dtype")


def failures(check: dict) -> list[str]:
    out = []
    for kind, e in check["types"].items():
        if not e["passed"]:
            if kind == "f16":
                out.append(f"f16: max |Δlogit| {e['max_abs_logit_diff']:.4g} > tolerance {e['tolerance']:.4g} ({e['tolerance_rule']})")
            else:
                out.append(f"{kind}: greedy answers agree on {e['agreement_outside_ties']:.1%} of prompts (near ties counted; "
                           f"{e['greedy_agreement']:.1%} token for token) < {e['min_agreement']:.0%}")
    t = check["template"]
    if not t["passed"]:
        out.append(f"template: identical={t['chat_template_identical']}, renders same {t['template_renders_same']}/{t['prompts']}, "
                   f"matches the evaluated prompts {t['template_matches_eval_prompts']}/{t['prompts']}, "
                   f"token ids same {t['tokenizer_ids_same']}/{t['prompts']}, Modelfile template same {t['modelfile_template_renders_same']}/{t['prompts']}")
    lc = check.get("llama_cpp") or {}
    if lc.get("ran") and not lc.get("passed"):
        out.append(f"llama.cpp: prompt tokens same {lc['prompt_tokens_same']}/{lc['prompts']}, agreement {lc['agreement']:.1%}, "
                   f"stopped where transformers stopped {lc['stopped_where_transformers_stopped']}/{lc['prompts']}")
    return out


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------

def export_run(
    model_dir: str, test_path: str, comparison: str, train_stats: str, provenance: str, out_dir: str,
    run: str, hparams: dict, train_config: dict | None = None, adapter_dir: str | None = None,
    types: list[str] = TYPES, system_prompt: str = "", max_new_tokens: int = 64,
    prompts: int = 32, logit_prompts: int = 8, q8_0_tokens: int = 32, q8_0_min_agreement: float = 0.9, f16_tolerance: float = 16.0,
    llama_cpp: str = "auto", adapters_dir: str | None = None,
    threads: int | None = None, trust_remote_code: bool = False, tie_margin: float = 0.1,
) -> dict:
    """Export stage entry point: results/export/<run>/ from the run's merged model (or, for method
    full, its fully fine-tuned model). Unsupported architectures, tokenizers and chat templates stop
    here, before any file is written."""
    from loraflow.ship.card import eval_row, export_card
    from loraflow.model.modeling import load_tokenizer, set_threads
    from loraflow.ship.ollama import go_template, measure_segments, modelfile

    start = time.perf_counter()
    check_model_dir(model_dir)                          # architecture: first thing
    info = model_info(model_dir)
    read_vocab(model_dir, info.n_vocab)                 # tokenizer exportable?
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    seg = measure_segments(tokenizer)                   # chat template expressible for Ollama?
    set_threads(threads)
    rows = read_jsonl(test_path)[:prompts]
    if not rows:
        raise ExportError(f"{test_path} has no rows to verify the export on")
    prov = read_json(provenance)
    files = {t: f"model-{t}.gguf" for t in types}
    stops = stop_tokens(tokenizer)
    row = eval_row(comparison, run)
    with atomic_dir(out_dir) as tmp:
        written = {}
        for t, name in files.items():
            t0 = time.perf_counter()
            summary = write_gguf(model_dir, tmp / name, t, tokenizer, tokenizer.chat_template, name=f"loraflow {run}",
                                 license=prov["base_model"].get("license_id"), description=f"loraflow run {run} (merged LoRA) on {prov['base_model']['name']}")
            summary["write_s"] = round(time.perf_counter() - t0, 2)
            written[t] = summary
            log.info("wrote %s (%.1f MB) in %.1fs", name, summary["bytes"] / 2**20, summary["write_s"])
        modelfile_type = "q8_0" if "q8_0" in files else types[0]
        header = (f"Ollama Modelfile for loraflow run {run} ({modelfile_type} GGUF).\n"
                  f"ollama create loraflow-{run} -f Modelfile && ollama run loraflow-{run}\n"
                  "Template, stop tokens, system prompt and greedy decoding as in training and evaluation.")
        # stop strings: the stop tokens, and the end of an assistant turn as the template writes it
        stop_texts = list(dict.fromkeys([*stops, *([seg.suffix["assistant"].strip()] if seg.suffix["assistant"].strip() else [])]))
        write_text(tmp / "Modelfile", modelfile(files[modelfile_type], go_template(seg), system_prompt, stop_texts, max_new_tokens, header))
        t0 = time.perf_counter()
        check = verify(model_dir, tmp, files, tokenizer, rows, seg, q8_0_tokens, q8_0_min_agreement, f16_tolerance, logit_prompts,
                       llama_cpp, threads, trust_remote_code, tie_margin)
        check["verify_s"] = round(time.perf_counter() - t0, 2)
        check["run"] = run
        check["files"] = {t: {"file": files[t], "bytes": written[t]["bytes"], "mb": round(written[t]["bytes"] / 2**20, 1),
                              "sha256": _sha256(tmp / files[t]), "write_s": written[t]["write_s"], "tensor_types": written[t]["tensor_types"]}
                          for t in files}
        check["tokenizer"] = {k: written[types[0]][k] for k in ("tokenizer", "pre_tokenizer", "n_vocab", "tied_embeddings", "stop_tokens")}
        check["architecture"] = written[types[0]]["architecture"]
        check["modelfile_uses"] = files[modelfile_type]
        check["export_s"] = round(time.perf_counter() - start, 2)
        problems = failures(check)
        if problems:
            log.error("export check failed: %s", json.dumps(check, indent=1, default=str))
            raise ExportCheckError(f"export of {run} failed its checks: " + "; ".join(problems))
        write_json(tmp / "export_check.json", check)
        card = export_card(run=run, hparams=hparams, train_config=train_config or {}, provenance=prov, row=row,
                           train_stats=read_json(train_stats), check=check, system_prompt=system_prompt,
                           max_new_tokens=max_new_tokens, export_dir=out_dir, adapter_dir=adapters_dir, model_dir=model_dir,
                           results_dir=str(Path(out_dir).parent.parent))
        write_text(tmp / "README.md", card)
    log.info("export of %s passed its checks in %.1fs: %s", run, check["export_s"], summary_line(check))
    return check


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def summary_line(check: dict) -> str:
    parts = []
    for kind, e in check["types"].items():
        size = check.get("files", {}).get(kind, {}).get("mb")
        if kind == "f16":
            parts.append(f"f16 {size} MB max|Δlogit| {e['max_abs_logit_diff']:.3g} (tol {e['tolerance']:.3g})")
        else:
            parts.append(f"{kind} {size} MB greedy agreement {e['greedy_agreement']:.0%}")
    lc = check.get("llama_cpp") or {}
    parts.append(f"llama.cpp agreement {lc['agreement']:.0%}" if lc.get("ran") else "llama.cpp not run")
    return "; ".join(parts)


SUMMARY_COLUMNS = ["run", "type", "file", "size_mb", "max_abs_logit_diff", "tolerance", "greedy_agreement", "template_check",
                   "tokenizer_check", "llama_cpp", "passed", "export_s"]


def write_export_summary(checks: list[str], out_csv: str, out_md: str, serve_md: str | None = None) -> list[dict]:
    """Export-summary stage entry point: results/export/summary.{csv,md}, one row per exported file with
    its checks (for the report); `serve_md` is linked from it."""
    import pandas as pd

    rows = []
    for path in checks:
        p = Path(path)
        c = read_json(p / "export_check.json" if p.is_dir() else p)
        t = c["template"]
        lc = c.get("llama_cpp") or {}
        llama = (f"agreement {lc['agreement']:.0%}, stop ok {lc['stopped_where_transformers_stopped']}/{lc['prompts']}" if lc.get("ran")
                 else f"not run: {lc.get('reason', '')}")
        for kind, e in c["types"].items():
            rows.append({
                "run": c["run"], "type": kind, "file": e["file"], "size_mb": c["files"][kind]["mb"],
                "max_abs_logit_diff": round(e["max_abs_logit_diff"], 5), "tolerance": round(e["tolerance"], 5) if "tolerance" in e else None,
                "greedy_agreement": round(e["greedy_agreement"], 4),
                "template_check": f"{t['template_renders_same']}/{t['prompts']}", "tokenizer_check": f"{t['tokenizer_ids_same']}/{t['prompts']}",
                "llama_cpp": llama, "passed": e["passed"], "export_s": c["export_s"],
            })
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    from loraflow.io import atomic_path

    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    lines = ["# Exported models", "", "Each GGUF was read back with transformers' GGUF loader and compared with the merged model "
             "(f16: max |Δlogit| against its tolerance; every type: greedy answers agreeing token for token over the first tokens). "
             "Details in `export/<run>/export_check.json`.", "",
             "| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in r.values()) + " |" for r in rows]
    if serve_md:
        lines += ["", f"Serving commands (vLLM multi-LoRA, llama.cpp, Ollama, transformers + peft): `{serve_md}`."]
    write_text(out_md, "\n".join(lines) + "\n")
    return rows

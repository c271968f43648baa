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
- llama.cpp (llama-cpp-python, optional extra `gguf-run`; ship/llama_check.py): every written file runs
  in llama.cpp in a process of its own: same prompt tokens, greedy answers agreeing with transformers'
  answers from the same file (near-tie rule as for q8_0), generation ending at the stop token. A file
  that crashes llama.cpp is reported (file, signal, step, runtime version, CPU features) and fails the
  check only under export.llama_cpp: require; the Modelfile and the card say what ran on which file.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from loraflow.ship import llama_check
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
    ollama_type(ex.get("ollama_file", "auto"), ex["types"])
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


def verify(model_dir: str, out_dir: Path, files: dict[str, str], tokenizer, rows: list[dict], seg, q8_0_tokens: int = 32,
           q8_0_min_agreement: float = 0.9, f16_tolerance: float = 16.0, logit_prompts: int = 8, llama_cpp: str = "auto",
           threads: int | None = None, trust_remote_code: bool = False, tie_margin: float = 0.1, ollama_file: str | None = None) -> dict:
    """Load every written GGUF back and compare it with the merged model (see the module docstring)."""
    import gc

    import torch

    stops = sorted(set(stop_tokens(tokenizer).values()))
    prompts = [r["prompt"] for r in rows]
    texts = [r["text"] for r in rows[:logit_prompts]]
    check: dict = {"prompts": len(rows), "logit_prompts": len(texts), "q8_0_tokens": q8_0_tokens, "stop_token_ids": stops, "types": {}}

    run_llama, why_not = _llama_cpp_mode(llama_cpp)  # before the work: `require` without llama-cpp-python stops here
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

    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    passed, on_llama_cpp = True, {}
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
        if run_llama:
            # llama.cpp's quantized kernels also round the activations to 8 bits, which transformers' dequantizing loader
            # does not: on a quantized file a flip at a margin below the file's own measured logit error counts as a tie
            tie = tie_margin if kind == "f16" else max(tie_margin, diff)
            on_llama_cpp[kind] = llama_cpp_file(model, tokenizer, out_dir / name, prompts, encoded, answers, stops, q8_0_tokens, threads,
                                                q8_0_min_agreement, tie)
        del model
        gc.collect()
        passed &= entry["passed"]
        check["types"][kind] = entry
    first = next(iter(files.values()))
    check["template"] = check_templates(tokenizer, out_dir, first, rows, seg)
    t = check["template"]
    template_ok = t["chat_template_identical"] and all(t[k] == t["prompts"] for k in
                                                        ("template_renders_same", "template_matches_eval_prompts", "tokenizer_ids_same",
                                                                  "modelfile_template_renders_same"))
    t["passed"] = template_ok
    passed &= template_ok

    if run_llama:
        check["llama_cpp"] = llama_check.summarize(on_llama_cpp, llama_cpp, ollama_file)
        passed &= check["llama_cpp"]["passed"]
        for kind in check["llama_cpp"]["crashed"]:
            log.warning("llama.cpp check: %s", llama_check.crash_line(on_llama_cpp[kind], check["llama_cpp"]))
    else:
        check["llama_cpp"] = {"ran": False, "reason": why_not}
    check["passed"] = bool(passed)
    return check


def _llama_cpp_mode(mode: str) -> tuple[bool, str]:
    """(run llama.cpp?, why not) for export.llama_cpp auto | skip | require."""
    if mode == "skip":
        return False, "export.llama_cpp is skip"
    available, why = llama_check.available()
    if not available and mode == "require":
        raise ExportCheckError(f"export.llama_cpp is require, but {why}")
    return available, why


def llama_cpp_file(model, tokenizer, path: Path, prompts: list[str], encoded: list[list[int]], reference: list[list[int]],
                   stops: list[int], new_tokens: int, threads: int | None, min_agreement: float, tie_margin: float) -> dict:
    """One GGUF in llama.cpp (its own process) against transformers' greedy answers from the same file;
    where they part, `model` (transformers on that file) gives the margin for the near-tie rule."""
    def attempt(repack: bool) -> dict:
        raw = llama_check.run_file(path, prompts, encoded, new_tokens, stops, threads, repack=repack)
        if not raw["completed"]:
            return {"file": path.name, "completed": False, "passed": False, "crash": raw["crash"]}
        # the margin of transformers' own token over llama.cpp's where they part (>= 0: transformers chose greedily)
        parted = divergences(model, tokenizer, prompts, reference, raw["answers"])
        return {"file": path.name, "completed": True, "system_info": raw["system_info"],
                **llama_check.score(raw, encoded, reference, stops, parted, min_agreement, tie_margin)}

    entry = attempt(repack=True)
    if not entry["completed"]:  # where is the fault? the same file without the CPU-specific repacked kernels
        entry["without_repack"] = attempt(repack=False)
    return entry


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
    return out + _llama_cpp_failures(check.get("llama_cpp") or {})


def _llama_cpp_failures(lc: dict) -> list[str]:
    out = []
    for kind, entry in (lc.get("files") or {}).items() if lc.get("ran") else ():
        if not entry["completed"] and lc.get("mode") == "require":
            out.append(f"llama.cpp (export.llama_cpp: require): {llama_check.crash_line(entry, lc)}")
        if kind in lc.get("wrong", ()):
            e = llama_check.answered(entry)
            how = "" if e is entry else " (run again without repacking)"
            out.append(f"llama.cpp on {e['file']}{how}: prompt tokens same {e['prompt_tokens_same']}/{e['prompts']}, answers agree on "
                       f"{e['agreement_outside_ties']:.1%} (near ties counted; {e['agreement']:.1%} token for token), stopped where "
                       f"transformers stopped {e['stopped_where_transformers_stopped']}/{e['prompts']}")
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
    threads: int | None = None, trust_remote_code: bool = False, tie_margin: float = 0.1, ollama_file: str = "auto", task: str = "causal_lm",
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
    modelfile_type = ollama_type(ollama_file, types)
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
        t0 = time.perf_counter()
        check = verify(model_dir, tmp, files, tokenizer, rows, seg, q8_0_tokens, q8_0_min_agreement, f16_tolerance, logit_prompts,
                       llama_cpp, threads, trust_remote_code, tie_margin, modelfile_type)
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
        # written after the checks, so that it says which file was checked with which runtime
        header = (f"Ollama Modelfile for loraflow run {run} ({modelfile_type} GGUF, export.ollama_file).\n"
                  f"ollama create loraflow-{run} -f Modelfile && ollama run loraflow-{run}\n"
                  "Template, stop tokens, system prompt and greedy decoding as in training and evaluation.\n"
                  "Checked:\n" + "\n".join(llama_check.describe(check, files[modelfile_type])))
        # stop strings: the stop tokens, and the end of an assistant turn as the template writes it
        stop_texts = list(dict.fromkeys([*stops, *([seg.suffix["assistant"].strip()] if seg.suffix["assistant"].strip() else [])]))
        write_text(tmp / "Modelfile", modelfile(files[modelfile_type], go_template(seg), system_prompt, stop_texts, max_new_tokens, header))
        card = export_card(run=run, hparams=hparams, train_config=train_config or {}, provenance=prov, row=row,
                           train_stats=read_json(train_stats), check=check, system_prompt=system_prompt,
                           max_new_tokens=max_new_tokens, export_dir=out_dir, adapter_dir=adapters_dir, model_dir=model_dir,
                           results_dir=str(Path(out_dir).parent.parent), task=task)
        write_text(tmp / "README.md", card)
    log.info("export of %s passed its checks in %.1fs: %s", run, check["export_s"], summary_line(check))
    return check


def ollama_type(ollama_file: str, types: list[str]) -> str:
    """The type the Modelfile points Ollama at: export.ollama_file, auto = q8_0 when written, else the first type."""
    if ollama_file == "auto":
        return "q8_0" if "q8_0" in types else types[0]
    if ollama_file not in types:
        raise ExportError(f"config key export.ollama_file: {ollama_file} is not written (export.types: {', '.join(types)})")
    return ollama_file


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
    for kind, e in (lc.get("files") or {}).items():
        parts.append(f"llama.cpp {kind} agreement {e['agreement']:.0%}" if e["completed"] else f"llama.cpp {kind} {e['crash']['what']}")
    if not lc.get("ran"):
        parts.append("llama.cpp not run")
    return "; ".join(parts)


def _llama_cell(lc: dict, kind: str) -> str:
    e = (lc.get("files") or {}).get(kind)
    if not lc.get("ran") or e is None:
        return f"not run: {lc.get('reason', '')}"
    if not e["completed"]:
        return f"{e['crash']['what']} ({lc['runtime']}, {e['crash']['last_step']})"
    return f"agreement {e['agreement']:.0%}, stop ok {e['stopped_where_transformers_stopped']}/{e['prompts']} ({lc['runtime']})"


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
        for kind, e in c["types"].items():
            llama = _llama_cell(c.get("llama_cpp") or {}, kind)
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

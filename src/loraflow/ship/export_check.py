"""Verification of the export: every written GGUF loaded back and compared with the model it was
written from; the export job fails if a check fails. Figures go to export_check.json.

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

import gc
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from loraflow.ship import llama_check
from loraflow.ship.agreement import agreement, agreement_outside_ties
from loraflow.ship.gguf_writer import stop_tokens
from loraflow.ship.llama_check import PromptSet
from loraflow.ship.settings import ExportSettings

log = logging.getLogger(__name__)

F16_UNIT_ROUNDOFF = 2.0**-11


class ExportCheckError(RuntimeError):
    """A verification of the written files failed."""


def _device():
    from loraflow.model.device import pick_device

    return pick_device()


def _load_hf(model_dir: str, trust_remote_code: bool = False, **kwargs):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, trust_remote_code=trust_remote_code, **kwargs
    )
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


def greedy_tokens(
    model, tokenizer, prompts: list[str], new_tokens: int, stops: list[int], batch_size: int = 16
) -> list[list[int]]:
    """Greedy continuation of each prompt, cut after the first stop token."""
    import torch

    out = []
    for b in range(0, len(prompts), batch_size):
        enc = _batch(tokenizer, prompts[b : b + batch_size])
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                top_p=None,
                top_k=None,
                temperature=None,
            )
        for row in gen[:, enc["input_ids"].shape[1] :].tolist():
            cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            out.append(row[:cut])
    return out


def divergences(
    model, tokenizer, prompts: list[str], answers: list[list[int]], reference: list[list[int]]
) -> list[dict]:
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


def verify(
    model_dir: str, out_dir: Path, files: dict[str, str], tokenizer, rows: list[dict], seg, settings: ExportSettings
) -> dict:
    """Load every written GGUF back and compare it with the merged model (see the module docstring).
    `settings.ollama_file` is the type the Modelfile uses (resolved: not auto)."""
    import torch

    stops = sorted(set(stop_tokens(tokenizer).values()))
    prompts = [r["prompt"] for r in rows]
    texts = [r["text"] for r in rows[: settings.logit_prompts]]
    check: dict = {
        "prompts": len(rows),
        "logit_prompts": len(texts),
        "q8_0_tokens": settings.q8_0_tokens,
        "stop_token_ids": stops,
        "types": {},
    }

    run_llama, why_not = _llama_cpp_mode(
        settings.llama_cpp
    )  # before the work: `require` without llama-cpp-python stops here
    ref = _load_hf(model_dir, settings.trust_remote_code)
    ref_logits = masked_logits(ref, tokenizer, texts)
    ref_answers = greedy_tokens(ref, tokenizer, prompts, settings.q8_0_tokens, stops)
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

    job = PromptSet(
        prompts, [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts], stops, settings.q8_0_tokens
    )
    passed, on_llama_cpp = True, {}
    for kind, name in files.items():
        start = time.perf_counter()
        model = _load_hf(str(out_dir), gguf_file=name)
        logits = masked_logits(model, tokenizer, texts)
        answers = greedy_tokens(model, tokenizer, prompts, settings.q8_0_tokens, stops)
        diff = (logits - ref_logits).abs().max().item()
        entry = {
            "file": name,
            "max_abs_logit_diff": diff,
            "vs_f16_rounded_max_abs_diff": (logits - rounded_logits).abs().max().item(),
            "greedy_agreement": agreement(answers, ref_answers),
            "agreeing_prompts": sum(a == b for a, b in zip(answers, ref_answers)),
        }
        if kind == "f16":
            entry["tolerance"] = settings.f16_tolerance * F16_UNIT_ROUNDOFF * scale
            entry["tolerance_rule"] = (
                f"{settings.f16_tolerance:g} x 2^-11 (f16 unit roundoff) x max|logit| ({scale:.3g})"
            )
            entry["passed"] = diff <= entry["tolerance"]
        entry["divergences"] = divergences(model, tokenizer, prompts, answers, ref_answers)
        entry["agreement_outside_ties"] = agreement_outside_ties(
            len(prompts), entry["agreeing_prompts"], entry["divergences"], settings.tie_margin
        )
        if kind != "f16":
            entry["min_agreement"], entry["tie_margin"] = settings.q8_0_min_agreement, settings.tie_margin
            entry["passed"] = entry["agreement_outside_ties"] >= settings.q8_0_min_agreement
        entry["verify_s"] = round(time.perf_counter() - start, 2)
        if run_llama:
            # llama.cpp's quantized kernels also round the activations to 8 bits, which transformers' dequantizing
            # loader does not: on a quantized file a flip at a margin below the file's own measured logit error
            # counts as a tie
            tie = settings.tie_margin if kind == "f16" else max(settings.tie_margin, diff)
            on_llama_cpp[kind] = llama_cpp_file(
                model, tokenizer, out_dir / name, job, answers, replace(settings, tie_margin=tie)
            )
        del model
        gc.collect()
        passed &= entry["passed"]
        check["types"][kind] = entry
    first = next(iter(files.values()))
    check["template"] = check_templates(tokenizer, out_dir, first, rows, seg)
    t = check["template"]
    template_ok = t["chat_template_identical"] and all(
        t[k] == t["prompts"]
        for k in (
            "template_renders_same",
            "template_matches_eval_prompts",
            "tokenizer_ids_same",
            "modelfile_template_renders_same",
        )
    )
    t["passed"] = template_ok
    passed &= template_ok

    if run_llama:
        check["llama_cpp"] = llama_check.summarize(on_llama_cpp, settings.llama_cpp, settings.ollama_file)
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


def llama_cpp_file(
    model, tokenizer, path: Path, prompts: PromptSet, reference: list[list[int]], settings: ExportSettings
) -> dict:
    """One GGUF in llama.cpp (its own process) against transformers' greedy answers from the same file;
    where they part, `model` (transformers on that file) gives the margin for the near-tie rule
    (settings.tie_margin; settings.q8_0_min_agreement of the prompts must agree)."""

    def attempt(repack: bool) -> dict:
        raw = llama_check.run_file(path, prompts, settings.threads, repack=repack)
        if not raw["completed"]:
            return {"file": path.name, "completed": False, "passed": False, "crash": raw["crash"]}
        # the margin of transformers' own token over llama.cpp's where they part (>= 0: transformers chose greedily)
        parted = divergences(model, tokenizer, prompts.texts, reference, raw["answers"])
        return {
            "file": path.name,
            "completed": True,
            "system_info": raw["system_info"],
            **llama_check.score(
                raw, prompts.encoded, reference, prompts.stops, parted, settings.q8_0_min_agreement, settings.tie_margin
            ),
        }

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
                out.append(
                    f"f16: max |Δlogit| {e['max_abs_logit_diff']:.4g} > tolerance {e['tolerance']:.4g} "
                    f"({e['tolerance_rule']})"
                )
            else:
                out.append(
                    f"{kind}: greedy answers agree on {e['agreement_outside_ties']:.1%} of prompts (near ties counted; "
                    f"{e['greedy_agreement']:.1%} token for token) < {e['min_agreement']:.0%}"
                )
    t = check["template"]
    if not t["passed"]:
        out.append(
            f"template: identical={t['chat_template_identical']}, renders same "
            f"{t['template_renders_same']}/{t['prompts']}, "
            f"matches the evaluated prompts {t['template_matches_eval_prompts']}/{t['prompts']}, "
            f"token ids same {t['tokenizer_ids_same']}/{t['prompts']}, Modelfile template same "
            f"{t['modelfile_template_renders_same']}/{t['prompts']}"
        )
    return out + _llama_cpp_failures(check.get("llama_cpp") or {})


def _llama_cpp_failures(lc: dict) -> list[str]:
    out = []
    for kind, entry in (lc.get("files") or {}).items() if lc.get("ran") else ():
        if not entry["completed"] and lc.get("mode") == "require":
            out.append(f"llama.cpp (export.llama_cpp: require): {llama_check.crash_line(entry, lc)}")
        if kind in lc.get("wrong", ()):
            e = llama_check.answered(entry)
            assert e is not None  # a file is `wrong` only when it gave answers (llama_check.summarize)
            how = "" if e is entry else " (run again without repacking)"
            out.append(
                f"llama.cpp on {e['file']}{how}: prompt tokens same {e['prompt_tokens_same']}/{e['prompts']}, answers "
                f"agree on {e['agreement_outside_ties']:.1%} (near ties counted; {e['agreement']:.1%} token for "
                f"token), stopped where transformers stopped {e['stopped_where_transformers_stopped']}/{e['prompts']}"
            )
    return out

"""Export stage: the chosen run as GGUF (f16 / q8_0) with an Ollama Modelfile and a model card, each
file verified by loading what was written (export_check.py).

Entry points (one per rule, see workflow/rules/export.smk):
- `runs_to_export`: which runs to export (results/best.json's run, or the configured list);
- `export_run`: results/export/<run>/ (model-<type>.gguf, Modelfile, README.md, export_check.json);
- `export_summary.write_export_summary`: results/export/summary.{csv,md}.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from loraflow.io import atomic_dir, read_json, read_jsonl, write_json, write_text
from loraflow.ship import llama_check
from loraflow.ship.card import eval_row, export_card
from loraflow.ship.export_check import ExportCheckError, failures, verify
from loraflow.ship.export_summary import summary_line
from loraflow.ship.exportable import TYPES, ExportError, check_model_dir
from loraflow.ship.gguf_vocab import read_vocab
from loraflow.ship.gguf_writer import model_info, stop_tokens, write_gguf
from loraflow.ship.ollama import go_template, measure_segments, modelfile
from loraflow.ship.settings import CardInfo, CardLocations, CardSources, ExportSettings

log = logging.getLogger(__name__)


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
        raise ExportError(
            f"{best_json} names no best run (did no run finish?): nothing to export - "
            "or list the runs to export in export.runs"
        )
    return [best]


def check_export_config(config: dict, runs: dict) -> None:
    """Parse-time checks: export.runs names runs of the sweep, and (when export is enabled) the base
    model is an architecture the GGUF export supports. Raises ExportError naming the key."""
    ex = config["export"]
    if ex["runs"] != "best":
        unknown = [r for r in ex["runs"] if r not in runs]
        if unknown:
            raise ExportError(
                f"config key export.runs: {', '.join(map(str, unknown))} not a run of this sweep (runs: "
                f"{', '.join(runs)})"
            )
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
                raise ExportError(
                    f"config key base_model: {bm['gguf_file']} is a {arch!r} GGUF; export (export.enabled) "
                    "supports the Llama family (SmolLM2, Llama 2/3), Mistral and Qwen2"
                )
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
# The stage
# ---------------------------------------------------------------------------------------------


def export_run(
    model_dir: str,
    test_path: str,
    out_dir: str,
    sources: CardSources,
    info: CardInfo,
    settings: ExportSettings = ExportSettings(),
    adapters_dir: str | None = None,
) -> dict:
    """Export stage entry point: results/export/<run>/ from the run's merged model (or, for method
    full, its fully fine-tuned model). Unsupported architectures, tokenizers and chat templates stop
    here, before any file is written. `adapters_dir`: the run's adapter package the card points at
    (None for method full)."""
    from loraflow.model.device import set_threads
    from loraflow.model.loading import load_tokenizer

    start = time.perf_counter()
    check_model_dir(model_dir)  # architecture: first thing
    read_vocab(model_dir, model_info(model_dir).n_vocab)  # tokenizer exportable?
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    seg = measure_segments(tokenizer)  # chat template expressible for Ollama?
    set_threads(settings.threads)
    rows = read_jsonl(test_path)[: settings.prompts]
    if not rows:
        raise ExportError(f"{test_path} has no rows to verify the export on")
    run, types = info.run, settings.types
    prov = read_json(sources.provenance)
    files = {t: f"model-{t}.gguf" for t in types}
    modelfile_type = ollama_type(settings.ollama_file, list(types))
    row = eval_row(sources.comparison, run)
    with atomic_dir(out_dir) as tmp:
        written = _write_files(model_dir, tmp, files, tokenizer, run, prov)
        t0 = time.perf_counter()
        check = verify(model_dir, tmp, files, tokenizer, rows, seg, replace(settings, ollama_file=modelfile_type))
        check["verify_s"] = round(time.perf_counter() - t0, 2)
        check["run"] = run
        check["files"] = {
            t: {
                "file": files[t],
                "bytes": written[t]["bytes"],
                "mb": round(written[t]["bytes"] / 2**20, 1),
                "sha256": _sha256(tmp / files[t]),
                "write_s": written[t]["write_s"],
                "tensor_types": written[t]["tensor_types"],
            }
            for t in files
        }
        check["tokenizer"] = {
            k: written[types[0]][k] for k in ("tokenizer", "pre_tokenizer", "n_vocab", "tied_embeddings", "stop_tokens")
        }
        check["architecture"] = written[types[0]]["architecture"]
        check["modelfile_uses"] = files[modelfile_type]
        check["export_s"] = round(time.perf_counter() - start, 2)
        problems = failures(check)
        if problems:
            log.error("export check failed: %s", json.dumps(check, indent=1, default=str))
            raise ExportCheckError(f"export of {run} failed its checks: " + "; ".join(problems))
        write_json(tmp / "export_check.json", check)
        # written after the checks, so that they say which file was checked with which runtime
        write_text(tmp / "Modelfile", _modelfile(check, tokenizer, seg, info, modelfile_type))
        where = CardLocations(
            adapter_dir=adapters_dir,
            model_dir=model_dir,
            export_dir=out_dir,
            results_dir=str(Path(out_dir).parent.parent),
        )
        write_text(tmp / "README.md", export_card(info, prov, row, read_json(sources.train_stats), where, check))
    log.info("export of %s passed its checks in %.1fs: %s", run, check["export_s"], summary_line(check))
    return check


def _write_files(model_dir: str, tmp: Path, files: dict[str, str], tokenizer, run: str, prov: dict) -> dict[str, dict]:
    """Every GGUF type into `tmp`: {type: write_gguf's summary, with its time}."""
    written = {}
    for t, name in files.items():
        t0 = time.perf_counter()
        summary = write_gguf(
            model_dir,
            tmp / name,
            t,
            tokenizer,
            tokenizer.chat_template,
            name=f"loraflow {run}",
            license=prov["base_model"].get("license_id"),
            description=f"loraflow run {run} (merged LoRA) on {prov['base_model']['name']}",
        )
        summary["write_s"] = round(time.perf_counter() - t0, 2)
        written[t] = summary
        log.info("wrote %s (%.1f MB) in %.1fs", name, summary["bytes"] / 2**20, summary["write_s"])
    return written


def _modelfile(check: dict, tokenizer, seg, info: CardInfo, modelfile_type: str) -> str:
    """The Ollama Modelfile for the checked `modelfile_type` file; its header says what was checked."""
    run, gguf = info.run, check["modelfile_uses"]
    header = (
        f"Ollama Modelfile for loraflow run {run} ({modelfile_type} GGUF, export.ollama_file).\n"
        f"ollama create loraflow-{run} -f Modelfile && ollama run loraflow-{run}\n"
        "Template, stop tokens, system prompt and greedy decoding as in training and evaluation.\n"
        "Checked:\n" + "\n".join(llama_check.describe(check, gguf))
    )
    # stop strings: the stop tokens, and the end of an assistant turn as the template writes it
    end_of_turn = seg.suffix["assistant"].strip()
    stop_texts = list(dict.fromkeys([*stop_tokens(tokenizer), *([end_of_turn] if end_of_turn else [])]))
    return modelfile(gguf, go_template(seg), info.system_prompt, stop_texts, info.max_new_tokens, header)


def ollama_type(ollama_file: str, types: list[str]) -> str:
    """The type the Modelfile points Ollama at: export.ollama_file, auto = q8_0 when written, else the first type."""
    if ollama_file == "auto":
        return "q8_0" if "q8_0" in types else types[0]
    if ollama_file not in types:
        raise ExportError(
            f"config key export.ollama_file: {ollama_file} is not written (export.types: {', '.join(types)})"
        )
    return ollama_file


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()

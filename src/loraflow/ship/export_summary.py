"""Export-summary stage: results/export/summary.{csv,md}, the checks of every exported file (shown in
the report), and the one-line summary of an export's checks the export job logs."""

from __future__ import annotations

import math
from pathlib import Path

from loraflow.io import atomic_path, read_json, write_text


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
        parts.append(
            f"llama.cpp {kind} agreement {e['agreement']:.0%}"
            if e["completed"]
            else f"llama.cpp {kind} {e['crash']['what']}"
        )
    if not lc.get("ran"):
        parts.append("llama.cpp not run")
    return "; ".join(parts)


def _llama_cell(lc: dict, kind: str) -> str:
    e = (lc.get("files") or {}).get(kind)
    if not lc.get("ran") or e is None:
        return f"not run: {lc.get('reason', '')}"
    if not e["completed"]:
        return f"{e['crash']['what']} ({lc['runtime']}, {e['crash']['last_step']})"
    return (
        f"agreement {e['agreement']:.0%}, stop ok {e['stopped_where_transformers_stopped']}/{e['prompts']} "
        f"({lc['runtime']})"
    )


SUMMARY_COLUMNS = [
    "run",
    "type",
    "file",
    "size_mb",
    "max_abs_logit_diff",
    "tolerance",
    "greedy_agreement",
    "template_check",
    "tokenizer_check",
    "llama_cpp",
    "passed",
    "export_s",
]


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
            rows.append(
                {
                    "run": c["run"],
                    "type": kind,
                    "file": e["file"],
                    "size_mb": c["files"][kind]["mb"],
                    "max_abs_logit_diff": round(e["max_abs_logit_diff"], 5),
                    "tolerance": round(e["tolerance"], 5) if "tolerance" in e else None,
                    "greedy_agreement": round(e["greedy_agreement"], 4),
                    "template_check": f"{t['template_renders_same']}/{t['prompts']}",
                    "tokenizer_check": f"{t['tokenizer_ids_same']}/{t['prompts']}",
                    "llama_cpp": llama,
                    "passed": e["passed"],
                    "export_s": c["export_s"],
                }
            )
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    lines = [
        "# Exported models",
        "",
        "Each GGUF was read back with transformers' GGUF loader and compared with the merged model (f16: max |Δlogit| "
        "against its tolerance; every type: greedy answers agreeing token for token over the first tokens). Details "
        "in `export/<run>/export_check.json`.",
        "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
    ]
    lines += [
        "| "
        + " | ".join("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in r.values())
        + " |"
        for r in rows
    ]
    if serve_md:
        lines += ["", f"Serving commands (vLLM multi-LoRA, llama.cpp, Ollama, transformers + peft): `{serve_md}`."]
    write_text(out_md, "\n".join(lines) + "\n")
    return rows

"""Export figures of a finished sweep: GGUF sizes, export time, f16 max |Δlogit|, q8_0
agreement and the llama.cpp check, read from results/export/<run>/export_check.json as the export
stage measured them (and its Snakemake benchmark file).

    snakemake --cores 2 --resources gpu=1 export        # or export.enabled: true
    python benchmarks/bench_export.py results
"""

import sys
from pathlib import Path

from loraflow.io import read_json


def main(results: str) -> None:
    root = Path(results)
    for check_path in sorted((root / "export").glob("*/export_check.json")):
        c = read_json(check_path)
        run = c["run"]
        print(f"run {run} ({c['architecture']}, merged weights on disk: {c.get('merged_dtype_on_disk')})")
        for kind, f in c["files"].items():
            print(f"  {f['file']}: {f['bytes']:,} bytes ({f['mb']} MiB), written in {f['write_s']} s")
        f16 = c["types"].get("f16")
        if f16:
            print(
                f"  f16  max |Δlogit| vs merged model: {f16['max_abs_logit_diff']:.4g} (tolerance "
                f"{f16['tolerance']:.4g} = {f16['tolerance_rule']}; f16 rounding floor {c['f16_rounding_floor']:.4g}; "
                f"vs rounded weights {f16['vs_f16_rounded_max_abs_diff']:.4g}) over {c['positions']} positions"
            )
        for kind, e in c["types"].items():
            print(
                f"  {kind:<4} greedy agreement (first {c['q8_0_tokens']} tokens): "
                f"{e['agreeing_prompts']}/{c['prompts']} = {e['greedy_agreement']:.1%}; divergences "
                f"{e.get('divergences')}"
            )
        t = c["template"]
        print(
            f"  template: identical {t['chat_template_identical']}, renders same "
            f"{t['template_renders_same']}/{t['prompts']}, token ids same {t['tokenizer_ids_same']}/{t['prompts']}, "
            f"Modelfile template same {t['modelfile_template_renders_same']}/{t['prompts']}"
        )
        lc = c.get("llama_cpp") or {}
        print(
            "  llama.cpp: "
            + (
                f"agreement {lc['agreement']:.1%}, prompt tokens same {lc['prompt_tokens_same']}/{lc['prompts']}, "
                f"stopped where transformers stopped {lc['stopped_where_transformers_stopped']}/{lc['prompts']}"
                if lc.get("ran")
                else f"not run: {lc.get('reason')}"
            )
        )
        print(f"  export stage: {c['export_s']} s (verification {c['verify_s']} s)", end="")
        bench = root / "benchmarks" / "export" / f"{run}.tsv"
        if bench.is_file():
            head, values = bench.read_text().splitlines()[:2]
            row = dict(zip(head.split("\t"), values.split("\t")))
            print(f"; job wall time {float(row['s']):.1f} s, max RSS {row.get('max_rss')} MB", end="")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results")

"""results/serve.md: ready commands to serve what the sweep produced.

- vLLM multi-LoRA: the base model with every adapter of the sweep (`--enable-lora --lora-modules
  name=path ...`), `--max-lora-rank` the smallest value vLLM accepts that holds the largest rank;
- llama.cpp and Ollama: each exported GGUF and its Modelfile;
- transformers + peft: all adapters on one base in Python, switched by name;
- the Hugging Face Hub: `loraflow push` for each adapter package and GGUF export.

Adapters vLLM cannot serve (DoRA, or adapters that save whole modules) are listed with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from loraflow.io import read_json, write_text
from loraflow.ship import llama_check

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(ranks: list[int]) -> int:
    top = max(ranks)
    for r in VLLM_LORA_RANKS:
        if r >= top:
            return r
    raise ValueError(f"LoRA rank {top} exceeds the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]})")


def adapter_info(path: str) -> dict:
    cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    reason = None
    if cfg.get("use_dora"):
        reason = "DoRA adapters are not supported by vLLM (serve the merged model instead)"
    elif cfg.get("modules_to_save"):
        reason = "saves whole modules (modules_to_save), which vLLM's LoRA loader does not take"
    return {
        "name": Path(path).name,
        "path": path,
        "r": int(cfg["r"]),
        "rslora": bool(cfg.get("use_rslora")),
        "vllm": reason is None,
        "reason": reason,
    }


def lora_modules(serve_md: str) -> dict[str, str]:
    """{name: path} of the `--lora-modules` arguments in a serve.md (what the test loads)."""
    text = Path(serve_md).read_text(encoding="utf-8")
    block = re.search(r"--lora-modules((?:\s+\\?\s*[^\s=\\]+=[^\s\\]+)+)", text)
    if not block:
        return {}
    return dict(pair.split("=", 1) for pair in re.findall(r"[^\s=\\]+=[^\s\\]+", block.group(1)))


def hub_section(adapters: Sequence[str], exports: Sequence[str]) -> list[str]:
    """`loraflow push` commands: each adapter package and GGUF export is a complete Hub model repository."""
    if not adapters and not exports:
        return []
    folders = [*adapters, *exports]
    results = str(Path(folders[0]).parent.parent)
    opt = "" if results == "results" else f" --results-dir {results}"
    lines = [
        "## Hugging Face Hub",
        "",
        "Each folder below is a complete Hub model repository: the model card (README.md) carries the Hub metadata "
        "(base_model, library_name, licence, tags). `loraflow push` creates the repository (add `--private` for a "
        "private one) and uploads the folder in one commit; the token is `HF_TOKEN` or the one `hf auth login` "
        "stored. Replace `your-name` with your user or organisation.",
        "",
        "```bash",
    ]
    lines += [f"loraflow push {Path(a).name} --repo your-name/{Path(a).name}{opt}" for a in adapters]
    lines += [f"loraflow push {Path(e).name} --gguf --repo your-name/{Path(e).name}-GGUF{opt}" for e in exports]
    return lines + ["```", ""]


def write_serve(
    adapters: list[str],
    base_model: str,
    out_md: str,
    exports: Sequence[str] = (),
    system_prompt: str = "",
    max_new_tokens: int = 64,
    full_models: Sequence[str] = (),
) -> dict:
    """Serve stage entry point."""
    infos = [adapter_info(a) for a in adapters]
    servable = [i for i in infos if i["vllm"]]
    sys_msg = json.dumps(system_prompt, ensure_ascii=False)
    lines = [
        "# Serving the sweep",
        "",
        "Ready commands for what this sweep produced. Paths are relative to the directory Snakemake ran in. "
        "Every answer in the comparison table was generated greedily with the training system prompt; send the same "
        f"system message (`{system_prompt}`) and `temperature 0` to get the same answers.",
        "",
    ]
    lines += ["## vLLM: every adapter on one base model (multi-LoRA)", ""]
    if servable:
        rank = vllm_max_lora_rank([i["r"] for i in servable])
        modules = " \\\n    ".join(f"{i['name']}={i['path']}" for i in servable)
        lines += [
            "```bash",
            f"vllm serve {base_model} \\",
            "  --enable-lora \\",
            f"  --max-lora-rank {rank} \\",
            f"  --max-loras {len(servable)} \\",
            f"  --lora-modules \\\n    {modules}",
            "```",
            "",
            f"`--max-lora-rank {rank}`: the smallest rank vLLM accepts that holds the largest adapter rank of the "
            f"sweep (r = {max(i['r'] for i in servable)}). A request picks an adapter by name:",
            "",
            "```bash",
            "curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{",
            f'  "model": "{servable[0]["name"]}",',
            f'  "messages": [{{"role": "system", "content": {sys_msg}}}, {{"role": "user", "content": "..."}}],',
            f'  "temperature": 0, "max_tokens": {max_new_tokens}',
            "}'",
            "```",
            "",
        ]
    else:
        lines += ["No adapter of this sweep can be served by vLLM's LoRA support.", ""]
    for i in infos:
        if not i["vllm"]:
            lines.append(f"- `{i['name']}` is not in the command: {i['reason']}.")
    for m in full_models:
        lines.append(f"- fully fine-tuned `{Path(m).parent.name}`: `vllm serve {m}` (a whole model, no adapter).")
    lines.append("")
    lines += ["## llama.cpp and Ollama: the exported GGUF", ""]
    if not exports:
        lines += ["Nothing exported yet: run `snakemake export` (or set `export.enabled: true`).", ""]
    for e in exports:
        check = read_json(Path(e) / "export_check.json")
        run = check["run"]
        lines += [f"### {run}", "", "| file | size | check |", "|---|---:|---|"]
        for kind, f in check["files"].items():
            t = check["types"][kind]
            what = (
                f"max abs logit diff {t['max_abs_logit_diff']:.3g} (tolerance {t['tolerance']:.3g})"
                if kind == "f16"
                else f"greedy agreement {t['greedy_agreement']:.0%}"
            )
            lines.append(f"| `{e}/{f['file']}` | {f['mb']} MB | {what} |")
        gguf = check["modelfile_uses"]
        lines += [f"- {line}" for line in llama_check.describe(check, gguf) if check.get("llama_cpp", {}).get("ran")]
        lines += [
            "",
            "```bash",
            "# llama.cpp server (OpenAI-compatible); chat template and stop tokens come from the GGUF",
            f"llama-server -m {e}/{gguf} --jinja --temp 0 --repeat-penalty 1 -n {max_new_tokens} --port 8080",
            "",
            "# Ollama: the Modelfile has the template, stop tokens, system prompt and greedy decoding",
            f"(cd {e} && ollama create loraflow-{run} -f Modelfile)",
            f'ollama run loraflow-{run} "..."',
            "```",
            "",
        ]
    lines += hub_section(adapters, exports)
    lines += [
        "## transformers + peft (Python)",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tok = AutoTokenizer.from_pretrained("{base_model}")',
        f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
    ]
    if infos:
        first = infos[0]
        lines.append(f'model = PeftModel.from_pretrained(base, "{first["path"]}", adapter_name="{first["name"]}")')
        for i in infos[1:]:
            lines.append(f'model.load_adapter("{i["path"]}", adapter_name="{i["name"]}")')
        lines += [f'model.set_adapter("{first["name"]}")  # switch adapters by name']
    lines += [
        f'messages = [{{"role": "system", "content": {sys_msg}}}, {{"role": "user", "content": "..."}}]',
        'ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        f"out = model.generate(**ids, max_new_tokens={max_new_tokens}, do_sample=False)",
        'print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        "Each adapter directory has a README.md model card: base model and digests, data, hyperparameters, evaluation.",
        "",
    ]
    write_text(out_md, "\n".join(lines))
    return {"adapters": len(infos), "vllm": len(servable), "exports": len(exports)}

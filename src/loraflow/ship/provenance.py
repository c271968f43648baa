"""Provenance of a sweep: digests of the base model and the data, rows per split, and the licence.

`write_provenance` (rule `provenance`) computes the digests once per sweep: base model file(s),
converted base weights, data file, rows per split, licence. The cards quote them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from loraflow.io import read_json, sha256_files, write_json
from loraflow.ship.settings import BaseModelSource, ProvenanceInputs

UNKNOWN_LICENSE = "unknown - check the base model"
LICENSE_NAMES = {
    "apache-2.0": "Apache-2.0",
    "mit": "MIT",
    "llama2": "Llama 2 Community License",
    "llama3": "Llama 3 Community License",
    "llama3.1": "Llama 3.1 Community License",
    "llama3.2": "Llama 3.2 Community License",
    "gemma": "Gemma Terms of Use",
    "cc-by-4.0": "CC-BY-4.0",
    "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "bsd-3-clause": "BSD-3-Clause",
    "other": "other (see the base model)",
}
BUILTIN_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUILTIN_LICENSE = "apache-2.0"


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
                first = next(
                    (ln.strip() for ln in (d / name).read_text(errors="replace").splitlines() if ln.strip()), ""
                )
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
    inputs: ProvenanceInputs,
    out_json: str,
    base: BaseModelSource = BaseModelSource(),
    data_spec: str = "builtin",
    system_prompt: str = "",
) -> dict:
    """Provenance stage entry point: digests of the base model and the data, rows per split, licence."""
    model_dir, data_path, path = inputs.model_dir, inputs.data_path, base.path
    src = (
        read_json(Path(model_dir) / "loraflow_source.json")
        if (Path(model_dir) / "loraflow_source.json").is_file()
        else {}
    )
    if not src.get("architecture") and (Path(model_dir) / "config.json").is_file():
        src["architecture"] = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get(
            "architectures"
        )
    if not src.get("parameters"):
        src["parameters"] = _parameter_count(model_dir)
    source = src.get("source") or base.source  # what the base-model stage recorded of the model actually used
    location, gguf = src.get("location") or path, src.get("gguf_file") or base.gguf_file
    original = None
    if gguf and location and (Path(location) / gguf).is_file():
        original = {"file": gguf, "sha256": sha256_files([Path(location) / gguf])}
    elif location and Path(location).is_dir() and list(Path(location).glob("*.safetensors")):
        files = sorted(Path(location).glob("*.safetensors"))
        original = {"file": ", ".join(f.name for f in files), "sha256": sha256_files(files)}
    lic, lic_source = find_license(source, location, gguf)
    name = BUILTIN_NAME if source == "builtin" else (path if source == "hub" else Path(path or location or "?").name)
    weights = sorted(Path(model_dir).glob("*.safetensors"))
    split = read_json(inputs.split_stats)
    meta = read_json(inputs.tokens_meta)
    data = {
        "spec": data_spec,
        "file": data_path,
        "sha256": sha256_files([data_path]) if data_path and Path(data_path).is_file() else None,
        "rows_in": split.get("rows_in"),
        "rows": {k: split.get(k) for k in ("train", "val", "test", "rejected")},
        "split_files_sha256": meta.get("data_sha256"),
        "system_prompt": system_prompt,
    }
    if inputs.format_stats and Path(inputs.format_stats).is_file():
        data["chat_template"] = read_json(inputs.format_stats).get("template")
    prov = {
        "base_model": {
            "name": name,
            "source": source,
            "location": location,
            "gguf_file": gguf,
            "original": original,
            "converted_dir": model_dir,
            "converted_sha256": sha256_files(weights) if weights else None,
            "architecture": (src.get("architecture") or [None])[0]
            if isinstance(src.get("architecture"), list)
            else src.get("architecture"),
            "parameters": src.get("parameters"),
            "license_id": lic,
            "license": license_label(lic),
            "license_source": lic_source,
            "tokenizer_sha256": meta.get("tokenizer_sha256"),
        },
        "data": data,
    }
    write_json(out_json, prov)
    return prov

"""Hugging Face Hub metadata of a model card, and the paths a card may print.

A card's YAML header is built with huggingface_hub's `ModelCardData`, so it is exactly what the Hub
parses: `license` (a Hub licence id, else `other` with `license_name`), `base_model` (only a Hub
repository id: a local directory name would point the Hub at someone else's model), `library_name`
(`peft` for an adapter package, `gguf` for a GGUF export), `pipeline_tag` and `tags`.

Cards are published, so they name no directory of the machine they were built on: a path inside the
results directory is printed relative to it, anything else (the user's data file, a local base model)
by its file name, which its sha256 in the card identifies.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# Licence ids the Hub knows (https://huggingface.co/docs/hub/repositories-licenses), the common ones.
HUB_LICENSES = frozenset(
    {
        "apache-2.0",
        "mit",
        "openrail",
        "openrail++",
        "bigscience-openrail-m",
        "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0",
        "bigcode-openrail-m",
        "afl-3.0",
        "artistic-2.0",
        "bsl-1.0",
        "bsd",
        "bsd-2-clause",
        "bsd-3-clause",
        "bsd-3-clause-clear",
        "c-uda",
        "cc",
        "cc0-1.0",
        "cc-by-2.0",
        "cc-by-2.5",
        "cc-by-3.0",
        "cc-by-4.0",
        "cc-by-sa-3.0",
        "cc-by-sa-4.0",
        "cc-by-nc-2.0",
        "cc-by-nc-3.0",
        "cc-by-nc-4.0",
        "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0",
        "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-2.0",
        "cc-by-nc-sa-3.0",
        "cc-by-nc-sa-4.0",
        "cdla-sharing-1.0",
        "cdla-permissive-1.0",
        "cdla-permissive-2.0",
        "wtfpl",
        "ecl-2.0",
        "epl-1.0",
        "epl-2.0",
        "etalab-2.0",
        "eupl-1.1",
        "eupl-1.2",
        "agpl-3.0",
        "gfdl",
        "gpl",
        "gpl-2.0",
        "gpl-3.0",
        "lgpl",
        "lgpl-2.1",
        "lgpl-3.0",
        "isc",
        "h-research",
        "intel-research",
        "lppl-1.3c",
        "ms-pl",
        "apple-ascl",
        "apple-amlr",
        "mpl-2.0",
        "odc-by",
        "odbl",
        "openmdw-1.0",
        "openrail-m",
        "osl-3.0",
        "postgresql",
        "ofl-1.1",
        "ncsa",
        "unlicense",
        "zlib",
        "pddl",
        "lgpl-lr",
        "deepfloyd-if-license",
        "fair-noncommercial-research-license",
        "llama2",
        "llama3",
        "llama3.1",
        "llama3.2",
        "llama3.3",
        "llama4",
        "grok2-community",
        "gemma",
        "unknown",
        "other",
        "array",
    }
)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
PIPELINE = {"causal_lm": "text-generation", "seq_cls": "text-classification"}


def hub_license(license_id: str | None) -> dict:
    """{license[, license_name]}: the Hub id when it is one, else `other` named by a slug of what was found."""
    lic = (license_id or "").strip().lower()
    if lic in HUB_LICENSES and lic not in ("unknown", "other", "array"):
        return {"license": lic}
    slug = re.sub(r"[^a-z0-9.]+", "-", lic).strip("-.")[:64]
    return {"license": "other", "license_name": slug if slug and not slug.startswith("unknown") else "unknown"}


def hub_base_model(provenance: dict) -> str | None:
    """The base model's Hub repository id, when the base model is one (builtin or hub source)."""
    bm = provenance["base_model"]
    name = str(bm.get("name") or "")
    if bm.get("source") in ("builtin", "hub") and REPO_ID.match(name):
        return name
    return None


def card_data(provenance: dict, *, gguf: bool, task: str = "causal_lm"):
    """The card's metadata as huggingface_hub's ModelCardData."""
    from huggingface_hub import ModelCardData

    base = hub_base_model(provenance)
    tags = ["loraflow", "lora", *(["gguf", "llama.cpp", "ollama"] if gguf else ["peft"])]
    extra: dict[str, Any] = {"base_model_relation": "adapter"} if base and not gguf else {}
    return ModelCardData(
        **hub_license(provenance["base_model"].get("license_id")),
        base_model=base,
        library_name="gguf" if gguf else "peft",
        pipeline_tag=PIPELINE.get(task),
        tags=tags,
        **extra,
    )


def front_matter(provenance: dict, *, gguf: bool, task: str = "causal_lm") -> str:
    return "---\n" + card_data(provenance, gguf=gguf, task=task).to_yaml() + "\n---\n"


def display_path(path: str | os.PathLike | None, results_dir: str | os.PathLike) -> str | None:
    """`path` relative to the results directory when inside it, else its file name only."""
    if path is None or str(path) == "":
        return None
    p, root = Path(os.path.abspath(path)), Path(os.path.abspath(results_dir))
    if p == root:
        return "."
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    return p.name

"""The adapter package: results/adapters/<run>/ (rule `adapter_package`) holds the run's PEFT adapter
files (hard links to runs/<run>/adapter, which stays the train rule's output) plus its model card - a
self-describing adapter directory, the one serve.md points vLLM at.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from loraflow.io import atomic_dir, read_json, sha256_files
from loraflow.ship.card import card, eval_row
from loraflow.ship.settings import CardInfo, CardLocations, CardSources

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def package_adapter(
    adapter_dir: str, out_dir: str, sources: CardSources, info: CardInfo, merged_dir: str | None = None
) -> dict:
    """Adapter-package stage entry point: results/adapters/<run>/ = the adapter's files (hard-linked,
    copied across file systems) + the model card, loadable with PeftModel.from_pretrained."""
    src = Path(adapter_dir)
    missing = [f for f in ADAPTER_FILES if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter_dir}: no {', '.join(missing)} (not a PEFT adapter)")
    where = CardLocations(adapter_dir=out_dir, model_dir=merged_dir, results_dir=str(Path(out_dir).parent.parent))
    files = [
        {"file": f, "mb": round((src / f).stat().st_size / 2**20, 2), "sha256": sha256_files([src / f])}
        for f in ADAPTER_FILES
    ]
    text = card(
        info,
        read_json(sources.provenance),
        eval_row(sources.comparison, info.run),
        read_json(sources.train_stats),
        where,
        files=files,
    )
    with atomic_dir(out_dir) as tmp:
        for f in sorted(src.iterdir()):
            # peft's placeholder card is replaced by ours; hidden files (Snakemake's .snakemake_timestamp of the
            # train output) are not the adapter's: a hard link to that marker would let this rule's marker touch
            # the train output, which then looks newer than its evaluation and reruns it on every invocation
            if f.is_file() and f.name != "README.md" and not f.name.startswith("."):
                _link_or_copy(f, tmp / f.name)
        (tmp / "README.md").write_text(text, encoding="utf-8")
    cfg = json.loads((src / "adapter_config.json").read_text())
    return {"run": info.run, "r": cfg.get("r"), "dora": bool(cfg.get("use_dora"))}

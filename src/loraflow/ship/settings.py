"""Settings of the ship stages (merge, provenance, adapter package, export) as frozen dataclasses.

A rule passes them flat; runner.call_stage groups them into these types by field name (binding.bind),
so each group is named once, here. Imports nothing heavy: the workflow may read these fields when it
parses.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraflow.ship.exportable import TYPES


@dataclass(frozen=True)
class MergeSettings:
    """merge.*: the two logit checks of a merge (see ship/merge.py) and the speed measurement."""

    tolerance: float = 1e-3
    deploy_tolerance_factor: float = 3.0
    n_prompts: int = 4
    speed_tokens: int = 32
    precision: str | None = None  # the deploy precision (auto | fp32 | bf16; None: device.pick_dtype's default)
    method: str = "lora"
    threads: int | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ProvenanceInputs:
    """What provenance digests: the converted base model, the split and tokenize records, the data."""

    model_dir: str
    split_stats: str
    tokens_meta: str
    format_stats: str | None = None
    data_path: str | None = None


@dataclass(frozen=True)
class BaseModelSource:
    """The base model as configured (base_model.source, .path, .gguf_file)."""

    source: str = "builtin"
    path: str | None = None
    gguf_file: str | None = None


@dataclass(frozen=True)
class CardSources:
    """The sweep's records a model card reads: the comparison table, the run's train stats, provenance."""

    comparison: str
    train_stats: str
    provenance: str


@dataclass(frozen=True)
class CardInfo:
    """What a model card states about its run besides the records: the run, its grid point, the
    training settings it lists, and how the model is prompted."""

    run: str
    hparams: dict
    train_config: dict | None = None
    system_prompt: str = ""
    max_new_tokens: int = 64
    task: str = "causal_lm"


@dataclass(frozen=True)
class CardLocations:
    """Where the card points its reader; printed relative to `results_dir` (card_meta.display_path)."""

    adapter_dir: str | None = None
    model_dir: str | None = None
    export_dir: str | None = None
    results_dir: str = "results"


@dataclass(frozen=True)
class ExportSettings:
    """export.*: which GGUF types are written and how each file is checked (see ship/export_check.py)."""

    types: tuple[str, ...] | list[str] = TYPES
    prompts: int = 32
    logit_prompts: int = 8
    q8_0_tokens: int = 32
    q8_0_min_agreement: float = 0.9
    f16_tolerance: float = 16.0
    tie_margin: float = 0.1
    llama_cpp: str = "auto"
    ollama_file: str = "auto"
    threads: int | None = None
    trust_remote_code: bool = False

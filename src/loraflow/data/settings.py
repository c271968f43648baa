"""The data stages' settings and files as types: a stage function takes a few of these instead of a long
list of keywords (loraflow.binding builds them from a rule's flat params by field name).

The workflow reads CleanSettings' fields when it parses (the clean rule's settings keys), so this
module imports nothing but dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CleanSettings:
    """The clean.* settings: which rows the clean stage keeps and what it repairs (docs/data.md)."""

    min_answer_chars: int = 1
    max_chars: int = 0  # 0: no limit
    mojibake: str = "repair"  # repair | reject | keep
    dedup: str | bool = "exact"  # exact | near | none
    strip_html: bool = False
    nfkc: bool = False
    remove_zero_width: bool = False
    collapse_symbol_runs: bool = False
    collapse_whitespace: bool = False
    trim: bool = False
    symbol_only: str = "runs"  # runs | any: which turns of only punctuation/symbols are rejected


@dataclass(frozen=True)
class ReaderSettings:
    """How the clean stage reads the data (the data.* keys): column mapping, file format and dialect,
    the hub split, and what a structurally broken row does (error | reject)."""

    columns: dict
    data_format: str = "auto"
    encoding: str = "utf-8"
    delimiter: str | None = None
    hf_split: str = "train"
    on_bad_row: str = "error"


@dataclass(frozen=True)
class LengthSettings:
    """How the clean stage measures token lengths: as the format and tokenise stages will see the rows
    (the system prompt they add, tokenize.max_length, tokenize.overlong: truncate | reject)."""

    max_tokens: int = 512
    overlong: str = "truncate"
    system_prompt: str = ""


@dataclass(frozen=True)
class CleanOutputs:
    """The clean stage's files: clean and rejected rows and their stats (every task), the change records
    and the report's page (causal_lm)."""

    out_clean: str
    out_rejected: str
    out_stats: str
    out_changes: str | None = None
    out_report: str | None = None


@dataclass(frozen=True)
class SplitOutputs:
    """The split stage's files: the three splits and their stats."""

    out_train: str
    out_val: str
    out_test: str
    stats_path: str


@dataclass(frozen=True)
class SplitFiles:
    """The three split files a later stage reads."""

    train: str
    val: str
    test: str


@dataclass(frozen=True)
class TokenFiles:
    """The tokenise stage's files: token ids and masks per split, and their meta.json."""

    out_train: str
    out_val: str
    out_test: str
    meta_path: str

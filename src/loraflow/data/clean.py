"""Clean stage: keep every legitimate character, repair only what is shown to be broken, record every
change, reject the rest with a reason.

Every input row ends in exactly one of clean.jsonl or rejected.jsonl, with its source location
(`source`: file, record, lines); at the end a content check (loraflow.data.conservation) proves that
the rows out cover the file's records exactly once, each with the content a reference reading of the
file finds, and clean_stats.json records it as `conserved` with the counts and changes per fixer.
Every changed field is one
line of changes.jsonl (line, field, fixer, before, after), and clean_report.html shows examples of
each fixer for `snakemake --report`. The fixers themselves are in loraflow.data.textfix.

Rows longer than tokenize.max_length tokens: with tokenize.overlong = truncate (the default) they are
kept and the tokenise stage cuts the last answer at max_length (recorded here as fixer `truncate`;
the test reference keeps the whole answer); a row whose prompt alone does not fit is rejected
(prompt_too_long). With overlong = reject every such row is rejected (too_long).
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from typing import Iterable

from loraflow.io import write_json, write_jsonl, write_text
from loraflow.data.conservation import check_coverage, reference_digests
from loraflow.data.readers import (
    STRUCTURAL, DataError, RawRow, RowError, SourceInfo, iter_hub_rows, iter_raw_rows, message, role_problem, to_conversation,
)
from loraflow.data.textfix import FixOptions, TextProblem, exact_key, fix_text, looks_like_html, near_key

log = logging.getLogger(__name__)

OVERLONG_WARN_SHARE = 0.10
DEDUP_MODES = {"exact": "exact", "near": "near", "none": "none", True: "exact", False: "none"}


SYMBOL_RUN = 4  # repeats that make a run of one symbol (as clean.collapse_symbol_runs counts them)


def has_content(text: str, symbol_only: str = "runs") -> bool:
    """A letter, digit or mark, an emoji or other pictographic symbol (So), or a non-ASCII maths
    symbol (∞, ≠) is content. Text of punctuation and ASCII symbols alone is content as well (code
    answers such as '&&', '::', '<>', '...', '?'), unless it is a run of one repeated symbol ('~~~~',
    '#####': 4+ times); with symbol_only "any" (clean.symbol_only) no such text is content."""
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "LNM" or cat == "So" or (cat == "Sm" and not ch.isascii()):
            return True
    marks = [ch for ch in text if not ch.isspace()]
    if not marks or symbol_only == "any":
        return False
    return not (len(set(marks)) == 1 and len(marks) >= SYMBOL_RUN)


def dedup_key(messages: list[dict], mode: str = "exact") -> str:
    return near_key(messages) if mode == "near" else exact_key(messages)


# --------------------------------------------------------------------------------------------------
# One row
# --------------------------------------------------------------------------------------------------


def _clean_row(raw: RawRow, where: str, columns: dict, options: FixOptions, min_answer_chars: int, max_chars: int):
    """(row format, messages, meta, changes) of a usable row; raises RowError with the rejection reason."""
    if raw.error:
        raise raw.error
    conv = to_conversation(raw.data, columns, where)
    changes = []
    messages = []
    for turn in conv.turns:
        texts = []
        for field, text in turn.parts:
            try:
                fixed, field_changes = fix_text(text, options)
            except TextProblem as err:
                raise RowError(err.reason, f"{where}: field {field}: {err.detail}") from None
            changes += [(field, c) for c in field_changes]
            texts.append(fixed)
        messages.append(message(turn.role, turn.sep.join(texts), turn.weight))
    problem = role_problem(messages)
    if problem:
        raise RowError(*problem)
    for m in messages:
        if m["role"] == "system":
            continue
        if not m["content"].strip():
            raise RowError("empty", f"empty {m['role']} turn")
        if not has_content(m["content"], options.symbol_only):
            what = "only symbols" if options.symbol_only == "any" else "only a run of one repeated symbol"
            raise RowError("symbol_only", f"{m['role']} turn has {what}: {m['content'][:40]!r} (clean.symbol_only={options.symbol_only})")
    answer = messages[-1]["content"].strip()
    if len(answer) < min_answer_chars:
        raise RowError("too_short", f"answer has {len(answer)} characters (< clean.min_answer_chars={min_answer_chars})")
    total = sum(len(m["content"]) for m in messages)
    if max_chars and total > max_chars:
        raise RowError("too_long", f"{total} characters (> clean.max_chars={max_chars})")
    return conv.row_format, messages, conv.meta, changes, conv.turns[-1].parts


# --------------------------------------------------------------------------------------------------
# Token lengths
# --------------------------------------------------------------------------------------------------


class TokenBudget:
    """Token counts of conversations exactly as the format and tokenise stages will see them (the same
    chat template, system prompt and tokenizer call), and where max_length cuts the last answer."""

    def __init__(self, tokenizer, system_prompt: str, max_tokens: int):
        self.tokenizer, self.system_prompt, self.max_tokens = tokenizer, system_prompt, max_tokens

    def measure(self, conversations: list[list[dict]], batch: int = 512) -> list[tuple[int, int, int]]:
        """[(tokens, prompt tokens, answer characters kept under max_length)] per conversation."""
        from loraflow.data.chatml import render_with_spans, with_system_prompt

        out = []
        for start in range(0, len(conversations), batch):
            chunk = conversations[start : start + batch]
            rendered = [render_with_spans(self.tokenizer, with_system_prompt(m, self.system_prompt)) for m in chunk]
            enc = self.tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
            for messages, (text, spans), offsets in zip(chunk, rendered, enc["offset_mapping"]):
                answer_start = spans[-1][0]
                prompt_tokens = sum(1 for a, _ in offsets if a < answer_start)
                kept = len(messages[-1]["content"])
                if len(offsets) > self.max_tokens:
                    kept = max(0, min(offsets[self.max_tokens - 1][1] - answer_start, kept))
                out.append((len(offsets), prompt_tokens, kept))
        return out


# --------------------------------------------------------------------------------------------------
# All rows
# --------------------------------------------------------------------------------------------------


def _rejection(raw: RawRow, reason: str, detail: str) -> dict:
    return {"line": raw.line, "source": raw.source(), "reason": reason, "detail": detail, "row": raw.data}


def triage_rows(rows: Iterable[RawRow], source: str, on_bad_row: str, accept, empty_hint: str = "") -> tuple[list, list[dict], int]:
    """Every task's cleaning skeleton: each row is either accepted, `accept(raw, where)`'s result kept, or
    rejected with the reason of the RowError it raised; a structural problem (a malformed line, a missing
    column ...) stops everything with one DataError naming file and line unless on_bad_row is reject.
    Returns (accepted results, rejected rows, rows in)."""
    accepted, rejected, rows_in = [], [], 0
    for raw in rows:
        rows_in += 1
        where = raw.where or f"{source}:{raw.line}"
        try:
            accepted.append(accept(raw, where))
        except RowError as err:
            if err.reason in STRUCTURAL and on_bad_row == "error":
                detail = err.detail if err.detail.startswith(source) else f"{where}: {err.detail}"
                if "data.on_bad_row" not in detail:
                    detail += " (or set data.on_bad_row: reject to skip such rows with a reason)"
                raise DataError(detail) from None
            rejected.append(_rejection(raw, err.reason, err.detail))
    if rows_in == 0:
        raise DataError(f"{source}: no data rows found (empty file?){empty_hint}")
    return accepted, rejected, rows_in


def check_conserved(stats: dict, rows_out: int) -> None:
    """Sets stats["conserved"]: rows in (stats["rows_in"]) = rows out; a broken count is a bug, never skipped.
    The count is the weaker check, for stages that get rows, not a file; the clean stage checks content
    (check_content)."""
    stats["conserved"] = stats["rows_in"] == rows_out
    if not stats["conserved"]:
        raise DataError(f"{stats.get('input', 'data')}: row conservation broken: {stats['rows_in']} rows in, {rows_out} out "
                        "(a loraflow bug: please report it)")


def check_content(stats: dict, info: SourceInfo | None, records_out: list[int], read: dict[int, RawRow]) -> None:
    """Sets stats["conserved"] (and stats["source_records"]): the source records named by the rows out
    (every clean and rejected row) are the file's records exactly once, read with the content a
    reference reading finds. Sources that are not files (hub datasets), or rows without a source
    record, get the count check."""
    reference = reference_digests(info) if info is not None and 0 not in read else None
    if reference is None:
        check_conserved(stats, len(records_out))
        return
    missing = next((r for r in records_out if r not in read), None)
    if missing is not None:
        raise DataError(f"{stats['input']}: conservation check failed: an output row names source record {missing}, "
                        "which was never read (a loraflow bug: please report it)")
    stats["source_records"] = check_coverage(stats["input"], reference, [read[r] for r in records_out])
    stats["conserved"] = True


def _change_record(line: int, field: str, change) -> dict:
    record = {"line": line, "field": field, "fixer": change.fixer, "before": change.before, "after": change.after}
    if change.detail:
        record["detail"] = change.detail
    return record


def clean_rows(
    rows: Iterable[RawRow],
    source: str,
    columns: dict,
    on_bad_row: str = "error",
    min_answer_chars: int = 1,
    max_chars: int = 0,
    options: FixOptions | None = None,
    dedup: str | bool = "exact",
    budget: TokenBudget | None = None,
    overlong: str = "truncate",
    info: SourceInfo | None = None,
) -> tuple[list[dict], list[dict], dict, list[dict]]:
    """Pure cleaning logic: (clean rows, rejected rows, stats, change records)."""
    options = options or FixOptions()
    mode = DEDUP_MODES[dedup]
    info = info if info is not None else getattr(rows, "info", None)
    seen = {}
    read: dict[int, RawRow] = {}  # by source record, for the content check

    def tap(stream: Iterable[RawRow]) -> Iterable[RawRow]:
        for raw in stream:
            read.setdefault(raw.record, raw)
            yield raw

    def accept(raw: RawRow, where: str):
        fmt, messages, meta, changes, answer_parts = _clean_row(raw, where, columns, options, min_answer_chars, max_chars)
        if mode != "none":
            key = dedup_key(messages, mode)
            if key in seen:
                how = "exactly (after NFC and trimming)" if mode == "exact" else "up to case, width, spacing and trailing punctuation"
                raise RowError("duplicate", f"same conversation as line {seen[key]}, {how}")
            seen[key] = raw.line
        return fmt, (raw, messages, meta, changes, answer_parts)

    accepted, rejected, rows_in = triage_rows(tap(rows), source, on_bad_row, accept, empty_hint="; check data.path")
    formats = Counter(fmt for fmt, _ in accepted)
    kept = [item for _, item in accepted]
    html_left = 0 if options.strip_html else sum(any(looks_like_html(m["content"]) for m in item[1]) for item in kept)

    overlong_stats = None
    truncations: dict[int, tuple[str, str, str]] = {}
    if budget is not None and kept:
        lengths = budget.measure([k[1] for k in kept])
        survivors = []
        over = prompt_too_long = 0
        for item, (n_tokens, n_prompt, kept_chars) in zip(kept, lengths):
            raw, messages = item[0], item[1]
            if n_tokens > budget.max_tokens:
                over += 1
                if n_prompt >= budget.max_tokens:
                    prompt_too_long += 1
                if overlong == "reject":
                    rejected.append(_rejection(raw, "too_long", f"{n_tokens} tokens (> tokenize.max_length={budget.max_tokens}; "
                                                                 "tokenize.overlong: truncate would keep it, cut to fit)"))
                    continue
                if n_prompt >= budget.max_tokens:
                    rejected.append(_rejection(raw, "prompt_too_long", f"the prompt alone has {n_prompt} tokens (>= tokenize.max_length="
                                                                       f"{budget.max_tokens}); no room for the answer"))
                    continue
                answer = messages[-1]["content"]
                field = item[4][-1][0] if len(item[4]) == 1 else "+".join(f for f, _ in item[4])
                truncations[raw.line] = (field, answer, answer[:kept_chars])
            survivors.append(item)
        kept = survivors
        n = len(lengths)
        overlong_stats = {
            "policy": overlong, "max_length": budget.max_tokens, "rows_measured": n, "over_max_length": over,
            "truncated": len(truncations), "prompt_too_long": prompt_too_long,
            "share": round(over / n, 4) if n else 0.0,
        }
        if n and over / n > OVERLONG_WARN_SHARE:
            if overlong == "truncate":
                effect = f"{len(truncations)} rows have their answer truncated, {prompt_too_long} are rejected (prompt too long)"
            else:
                effect = f"{over} rows are rejected (too_long); tokenize.overlong: truncate would keep {over - prompt_too_long} of them"
            overlong_stats["warning"] = (f"{over} of {n} rows ({100 * over / n:.0f} %) are longer than tokenize.max_length="
                                         f"{budget.max_tokens} tokens: {effect}; consider a larger tokenize.max_length")
            log.warning("%s", overlong_stats["warning"])

    clean, change_records = [], []
    per_fixer_rows: dict[str, set] = defaultdict(set)
    per_fixer_fields: Counter = Counter()
    for raw, messages, meta, changes, _ in kept:
        for field, change in changes:
            change_records.append(_change_record(raw.line, field, change))
            per_fixer_rows[change.fixer].add(raw.line)
            per_fixer_fields[change.fixer] += 1
        if raw.line in truncations:
            field, before, after = truncations[raw.line]
            what = "answer cut" if after != before else "answer kept whole, its end-of-turn marker cut"
            change_records.append({"line": raw.line, "field": field, "fixer": "truncate", "before": before, "after": after,
                                   "detail": f"{what} at tokenize.max_length={budget.max_tokens} tokens by the tokenise stage; "
                                             "the test reference keeps the whole answer"})
            per_fixer_rows["truncate"].add(raw.line)
            per_fixer_fields["truncate"] += 1
        clean.append({"id": f"{raw.line}", "line": raw.line, "source": raw.source(), "messages": messages, "meta": meta})
    if not clean:
        reasons = Counter(r["reason"] for r in rejected)
        raise DataError(f"{source}: all {rows_in} rows were rejected ({dict(reasons)}); nothing to train on "
                        "(see rejected.jsonl; data.columns, data.format and the clean.* options decide what is read)")
    stats = {
        "input": source,
        **({"file": info.as_dict()} if info else {}),
        "row_formats": dict(sorted(formats.items())),
        "rows_in": rows_in,
        "clean": len(clean),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
        "fixers_enabled": options.enabled() + (["truncate"] if overlong_stats and overlong == "truncate" else []),
        "changes": {f: {"rows": len(per_fixer_rows[f]), "fields": per_fixer_fields[f]} for f in sorted(per_fixer_rows)},
        "fixed": {f: len(per_fixer_rows[f]) for f in sorted(per_fixer_rows)},
        "dedup": mode,
    }
    if html_left:
        stats["html_left_as_is"] = html_left
    if overlong_stats:
        stats["overlong"] = overlong_stats
    check_content(stats, info, [r["source"]["record"] for r in (*clean, *rejected)], read)
    return clean, rejected, stats, change_records


# --------------------------------------------------------------------------------------------------
# Stage entry point
# --------------------------------------------------------------------------------------------------


def clean_dataset(
    data_path: str,
    model_dir: str,
    out_clean: str,
    out_rejected: str,
    out_stats: str,
    columns: dict,
    out_changes: str | None = None,
    out_report: str | None = None,
    data_format: str = "auto",
    encoding: str = "utf-8",
    delimiter: str | None = None,
    hf_split: str = "train",
    on_bad_row: str = "error",
    min_answer_chars: int = 1,
    max_chars: int = 0,
    max_tokens: int = 512,
    overlong: str = "truncate",
    mojibake: str = "repair",
    dedup: str | bool = "exact",
    strip_html: bool = False,
    nfkc: bool = False,
    remove_zero_width: bool = False,
    collapse_symbol_runs: bool = False,
    collapse_whitespace: bool = False,
    trim: bool = False,
    symbol_only: str = "runs",
    system_prompt: str = "",
) -> dict:
    """Clean stage entry point. Token lengths use the base model's chat template and tokenizer."""
    from transformers import AutoTokenizer

    from loraflow.data.chatml import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)
    options = FixOptions(mojibake=mojibake, strip_html=strip_html, nfkc=nfkc, remove_zero_width=remove_zero_width,
                         collapse_symbol_runs=collapse_symbol_runs, collapse_whitespace=collapse_whitespace, trim=trim,
                         symbol_only=symbol_only)
    log.info("clean settings: min_answer_chars=%s, max_chars=%s, dedup=%s, %s", min_answer_chars, max_chars, dedup,
             ", ".join(f"{k}={v}" for k, v in options.settings().items()))
    info = SourceInfo(data_path)
    if data_path.startswith("hf:"):
        rows = iter_hub_rows(data_path, hf_split)
        info.file_format = "hub"
    else:
        rows = iter_raw_rows(data_path, data_format, encoding, delimiter, info)
    clean, rejected, stats, changes = clean_rows(
        rows, data_path, columns, on_bad_row, min_answer_chars, max_chars, options, dedup,
        TokenBudget(tokenizer, system_prompt, max_tokens), overlong, info,
    )
    write_jsonl(out_clean, clean)
    write_jsonl(out_rejected, rejected)
    if out_changes:
        write_jsonl(out_changes, changes)
    if out_report:
        from loraflow.data.audit import clean_report_html

        write_text(out_report, clean_report_html(stats, changes, rejected))
    write_json(out_stats, stats)
    fmt = info.as_dict()
    log.info("read %s: %s, row formats %s", data_path, ", ".join(f"{k} {v}" for k, v in fmt.items() if k != "notes"), stats["row_formats"])
    for note in fmt.get("notes", []):
        log.info("note: %s", note)
    log.info("clean: %d rows in, %d clean, %d rejected %s", stats["rows_in"], stats["clean"], stats["rejected"], stats["rejected_by_reason"])
    log.info("changes per fixer (rows): %s", stats["fixed"] or "none")
    if "overlong" in stats:
        o = stats["overlong"]
        log.info("overlong (tokenize.overlong=%s, max_length=%d): %d rows over, %d truncated, %d prompt too long",
                 o["policy"], o["max_length"], o["over_max_length"], o["truncated"], o["prompt_too_long"])
    if stats.get("html_left_as_is"):
        log.info("%d rows contain HTML markup, kept as is (clean.strip_html: true converts it to text)", stats["html_left_as_is"])
    return stats


# --------------------------------------------------------------------------------------------------
# seq_cls
# --------------------------------------------------------------------------------------------------

_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_SYMBOL_RUN = re.compile(r"([^\w\s])\1{3,}")
_SPACES = re.compile(r"[ \t\u3000]+")
_NEWLINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """The aggressive normaliser used for classification inputs (task seq_cls, loraflow.tasks.seq_cls.data):
    NFKC, HTML tags and entities removed, control/format characters removed, symbol runs and
    whitespace collapsed. Not used by the chat data stages, which are lossless (loraflow.data.textfix)."""
    text = html.unescape(_TAG.sub(" ", text))
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf"))
    text = _SYMBOL_RUN.sub(lambda m: "..." if m.group(1) == "." else m.group(1), text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _NEWLINES.sub("\n\n", text).strip()

"""Clean stage: keep every legitimate character, repair only what is shown to be broken, record every
change, reject the rest with a reason.

Every input row ends in exactly one of clean.jsonl or rejected.jsonl, with its source location
(`source`: file, record, lines); at the end a content check (loraflow.data.conservation) proves that
the rows out cover the file's records exactly once, each with the content a reference reading of the
file finds, and clean_stats.json records it as `conserved` with the counts and changes per fixer.
Every changed field is one
line of changes.jsonl (line, field, fixer, before, after), and clean_report.html shows examples of
each fixer for `snakemake --report`. The fixers themselves are in loraflow.data.textfix, the skeleton
every task shares (accept or reject each row, check conservation) in loraflow.data.triage.

Rows longer than tokenize.max_length tokens: with tokenize.overlong = truncate (the default) they are
kept and the tokenise stage cuts the last answer at max_length (recorded here as fixer `truncate`;
the test reference keeps the whole answer); a row whose prompt alone does not fit is rejected
(prompt_too_long). With overlong = reject every such row is rejected (too_long).
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter, defaultdict
from dataclasses import fields
from typing import Iterable

from loraflow.data.conversations import message, role_problem, to_conversation
from loraflow.data.dedup import DEDUP_MODES, dedup_key
from loraflow.data.markup import looks_like_html
from loraflow.data.readers import iter_hub_rows, iter_raw_rows
from loraflow.data.records import DataError, RawRow, RowError, SourceInfo
from loraflow.data.settings import CleanOutputs, CleanSettings, LengthSettings, ReaderSettings
from loraflow.data.textfix import FixOptions, TextProblem, fix_text
from loraflow.data.token_budget import TokenBudget
from loraflow.data.triage import check_content, rejection, triage_rows
from loraflow.io import write_json, write_jsonl, write_text

log = logging.getLogger(__name__)

OVERLONG_WARN_SHARE = 0.10
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
            raise RowError(
                "symbol_only",
                f"{m['role']} turn has {what}: {m['content'][:40]!r} (clean.symbol_only={options.symbol_only})",
            )
    answer = messages[-1]["content"].strip()
    if len(answer) < min_answer_chars:
        raise RowError(
            "too_short", f"answer has {len(answer)} characters (< clean.min_answer_chars={min_answer_chars})"
        )
    total = sum(len(m["content"]) for m in messages)
    if max_chars and total > max_chars:
        raise RowError("too_long", f"{total} characters (> clean.max_chars={max_chars})")
    return conv.row_format, messages, conv.meta, changes, conv.turns[-1].parts


# --------------------------------------------------------------------------------------------------
# All rows
# --------------------------------------------------------------------------------------------------


def _change_record(line: int, field: str, change) -> dict:
    record = {"line": line, "field": field, "fixer": change.fixer, "before": change.before, "after": change.after}
    if change.detail:
        record["detail"] = change.detail
    return record


def fix_options(settings: CleanSettings) -> FixOptions:
    """The fixers' part of the clean settings."""
    return FixOptions(**{f.name: getattr(settings, f.name) for f in fields(FixOptions)})


def clean_rows(
    rows: Iterable[RawRow],
    source: str,
    columns: dict,
    on_bad_row: str = "error",
    settings: CleanSettings | None = None,
    budget: TokenBudget | None = None,
    info: SourceInfo | None = None,
) -> tuple[list[dict], list[dict], dict, list[dict]]:
    """Pure cleaning logic: (clean rows, rejected rows, stats, change records). Without a `budget`
    token lengths are not checked."""
    settings = settings or CleanSettings()
    options = fix_options(settings)
    min_answer_chars, max_chars = settings.min_answer_chars, settings.max_chars
    overlong = budget.overlong if budget is not None else "truncate"
    mode = DEDUP_MODES[settings.dedup]
    info = info if info is not None else getattr(rows, "info", None)
    seen: dict[str, int] = {}
    read: dict[int, RawRow] = {}  # by source record, for the content check

    def tap(stream: Iterable[RawRow]) -> Iterable[RawRow]:
        for raw in stream:
            read.setdefault(raw.record, raw)
            yield raw

    def accept(raw: RawRow, where: str):
        fmt, messages, meta, changes, answer_parts = _clean_row(
            raw, where, columns, options, min_answer_chars, max_chars
        )
        if mode != "none":
            key = dedup_key(messages, mode)
            if key in seen:
                how = (
                    "exactly (after NFC and trimming)"
                    if mode == "exact"
                    else "up to case, width, spacing and trailing punctuation"
                )
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
                    rejected.append(
                        rejection(
                            raw,
                            "too_long",
                            f"{n_tokens} tokens (> tokenize.max_length={budget.max_tokens}; "
                            "tokenize.overlong: truncate would keep it, cut to fit)",
                        )
                    )
                    continue
                if n_prompt >= budget.max_tokens:
                    rejected.append(
                        rejection(
                            raw,
                            "prompt_too_long",
                            f"the prompt alone has {n_prompt} tokens (>= tokenize.max_length="
                            f"{budget.max_tokens}); no room for the answer",
                        )
                    )
                    continue
                answer = messages[-1]["content"]
                field = item[4][-1][0] if len(item[4]) == 1 else "+".join(f for f, _ in item[4])
                truncations[raw.line] = (field, answer, answer[:kept_chars])
            survivors.append(item)
        kept = survivors
        n = len(lengths)
        overlong_stats = {
            "policy": overlong,
            "max_length": budget.max_tokens,
            "rows_measured": n,
            "over_max_length": over,
            "truncated": len(truncations),
            "prompt_too_long": prompt_too_long,
            "share": round(over / n, 4) if n else 0.0,
        }
        if n and over / n > OVERLONG_WARN_SHARE:
            if overlong == "truncate":
                effect = (
                    f"{len(truncations)} rows have their answer truncated, {prompt_too_long} are rejected (prompt too "
                    "long)"
                )
            else:
                effect = (
                    f"{over} rows are rejected (too_long); tokenize.overlong: truncate would keep "
                    f"{over - prompt_too_long} of them"
                )
            overlong_stats["warning"] = (
                f"{over} of {n} rows ({100 * over / n:.0f} %) are longer than tokenize.max_length="
                f"{budget.max_tokens} tokens: {effect}; consider a larger tokenize.max_length"
            )
            log.warning("%s", overlong_stats["warning"])

    clean, change_records = [], []
    per_fixer_rows: dict[str, set] = defaultdict(set)
    per_fixer_fields: Counter = Counter()
    for raw, messages, meta, changes, _ in kept:
        for field, change in changes:
            change_records.append(_change_record(raw.line, field, change))
            per_fixer_rows[change.fixer].add(raw.line)
            per_fixer_fields[change.fixer] += 1
        if budget is not None and raw.line in truncations:  # only a budget truncates
            field, before, after = truncations[raw.line]
            what = "answer cut" if after != before else "answer kept whole, its end-of-turn marker cut"
            change_records.append(
                {
                    "line": raw.line,
                    "field": field,
                    "fixer": "truncate",
                    "before": before,
                    "after": after,
                    "detail": f"{what} at tokenize.max_length={budget.max_tokens} tokens by the tokenise stage; "
                    "the test reference keeps the whole answer",
                }
            )
            per_fixer_rows["truncate"].add(raw.line)
            per_fixer_fields["truncate"] += 1
        clean.append(
            {"id": f"{raw.line}", "line": raw.line, "source": raw.source(), "messages": messages, "meta": meta}
        )
    if not clean:
        reasons = Counter(r["reason"] for r in rejected)
        raise DataError(
            f"{source}: all {rows_in} rows were rejected ({dict(reasons)}); nothing to train on "
            "(see rejected.jsonl; data.columns, data.format and the clean.* options decide what is read)"
        )
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
    out: CleanOutputs,
    reader: ReaderSettings,
    settings: CleanSettings = CleanSettings(),
    lengths: LengthSettings = LengthSettings(),
) -> dict:
    """Clean stage entry point. Token lengths use the base model's chat template and tokenizer."""
    from transformers import AutoTokenizer

    from loraflow.data.chatml import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)
    log.info(
        "clean settings: min_answer_chars=%s, max_chars=%s, dedup=%s, %s",
        settings.min_answer_chars,
        settings.max_chars,
        settings.dedup,
        ", ".join(f"{k}={v}" for k, v in fix_options(settings).settings().items()),
    )
    info = SourceInfo(data_path)
    if data_path.startswith("hf:"):
        rows = iter_hub_rows(data_path, reader.hf_split)
        info.file_format = "hub"
    else:
        rows = iter_raw_rows(data_path, reader.data_format, reader.encoding, reader.delimiter, info)
    budget = TokenBudget(tokenizer, lengths.system_prompt, lengths.max_tokens, lengths.overlong)
    clean, rejected, stats, changes = clean_rows(
        rows, data_path, reader.columns, reader.on_bad_row, settings, budget, info
    )
    write_jsonl(out.out_clean, clean)
    write_jsonl(out.out_rejected, rejected)
    if out.out_changes:
        write_jsonl(out.out_changes, changes)
    if out.out_report:
        from loraflow.data.audit import clean_report_html

        write_text(out.out_report, clean_report_html(stats, changes, rejected))
    write_json(out.out_stats, stats)
    fmt = info.as_dict()
    log.info(
        "read %s: %s, row formats %s",
        data_path,
        ", ".join(f"{k} {v}" for k, v in fmt.items() if k != "notes"),
        stats["row_formats"],
    )
    for note in fmt.get("notes", []):
        log.info("note: %s", note)
    log.info(
        "clean: %d rows in, %d clean, %d rejected %s",
        stats["rows_in"],
        stats["clean"],
        stats["rejected"],
        stats["rejected_by_reason"],
    )
    log.info("changes per fixer (rows): %s", stats["fixed"] or "none")
    if "overlong" in stats:
        o = stats["overlong"]
        log.info(
            "overlong (tokenize.overlong=%s, max_length=%d): %d rows over, %d truncated, %d prompt too long",
            o["policy"],
            o["max_length"],
            o["over_max_length"],
            o["truncated"],
            o["prompt_too_long"],
        )
    if stats.get("html_left_as_is"):
        log.info(
            "%d rows contain HTML markup, kept as is (clean.strip_html: true converts it to text)",
            stats["html_left_as_is"],
        )
    return stats

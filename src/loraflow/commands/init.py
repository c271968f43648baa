"""`loraflow init DATAFILE`: inspect a data file (encoding, format, columns, row shape) and write a
config that reads it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from loraflow.commands import CliError

# Column names people use, most specific first (matched case-insensitively).
PROMPT_NAMES = ("question", "prompt", "query", "ask", "input", "title", "problem", "q", "user", "human", "text")
ANSWER_NAMES = (
    "answer",
    "response",
    "output",
    "completion",
    "reply",
    "target",
    "solution",
    "a",
    "assistant",
    "gpt",
    "label",
)
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category")
TEXT_NAMES = ("text", "sentence", "review", "content", "document")
CONVERSATION_NAMES = ("messages", "conversations", "conversation", "dialog", "dialogue", "turns", "chat")
SAMPLE_ROWS = 500


def detect_encoding(path: str) -> tuple[str, str]:
    """(encoding, how it was found): a byte-order mark, valid UTF-8, or charset detection's guess."""
    from loraflow.data.readers import sniff_bom, suggest_encoding

    raw = Path(path).read_bytes()
    bom, _ = sniff_bom(raw)
    if bom:
        return bom, "byte-order mark"
    try:
        raw.decode("utf-8")
        return "utf-8", "valid UTF-8"
    except UnicodeDecodeError:
        pass
    guess = suggest_encoding(raw)
    if guess is None:
        raise CliError(
            f"{path}: cannot tell the encoding (not UTF-8, and charset detection has no guess); set data.encoding by "
            "hand"
        )
    if guess.replace("_", "").lower() in ("gbk", "gb2312", "cp936", "hz"):
        guess = "gb18030"  # the superset: decodes every GBK/GB2312 file
    return guess, "charset detection"


def _find(keys: dict[str, str], names: tuple[str, ...], exclude: frozenset[str] | set[str] = frozenset()) -> str | None:
    for name in names:
        if name in keys and keys[name] not in exclude:
            return keys[name]
    return None


def detect_columns(rows: list[dict]) -> tuple[dict[str, str], str]:
    """data.columns entries (only those that differ from the defaults) and the row shape found."""
    keys_seen = Counter(k for row in rows for k in row)
    common = [k for k, n in keys_seen.items() if n >= 0.5 * len(rows)]
    lower = {k.lower(): k for k in common}
    if "messages" in lower:
        return ({} if lower["messages"] == "messages" else {"messages": lower["messages"]}), "messages"
    if "conversations" in lower:
        return (
            {} if lower["conversations"] == "conversations" else {"conversations": lower["conversations"]}
        ), "sharegpt"
    conv = _find(lower, CONVERSATION_NAMES)
    if conv and all(isinstance(row.get(conv), list) for row in rows[:20]):
        first_turn: Any = next((row[conv][0] for row in rows if row.get(conv)), {})
        key = "conversations" if isinstance(first_turn, dict) and "from" in first_turn else "messages"
        return {key: conv}, "sharegpt" if key == "conversations" else "messages"
    if "instruction" in lower and "output" in lower:
        columns = {
            k: lower[k] for k in ("instruction", "output", "input", "system", "history") if k in lower and lower[k] != k
        }
        return columns, "alpaca"
    label, text = _find(lower, LABEL_NAMES), _find(lower, TEXT_NAMES)
    if label and text and not _find(lower, tuple(n for n in ANSWER_NAMES if n != "label")):
        return {"text_column": text, "label_column": label}, "classification"
    answer = _find(lower, ANSWER_NAMES)
    prompt = _find(lower, PROMPT_NAMES, {answer} if answer else set())
    if not (prompt and answer):
        raise CliError(
            f"cannot find a prompt and an answer column among {', '.join(common) or 'no common columns'}; "
            "write data.columns by hand (question: <prompt column>, answer: <answer column>), see docs/data.md"
        )
    columns = {}
    if prompt != "question":
        columns["question"] = prompt
    if answer != "answer":
        columns["answer"] = answer
    if "system" in lower:
        columns["system"] = lower["system"]
    return columns, "qa"


def inspect_data(path: str) -> dict:
    """What `init` finds out about a data file: format, encoding, delimiter, columns, row shapes."""
    from loraflow.data.conversations import to_conversation
    from loraflow.data.readers import DataError, SourceInfo, iter_raw_rows

    if not Path(path).is_file():
        raise CliError(f"{path}: no such file")
    info = SourceInfo(path)
    encoding, how = ("parquet", "binary") if Path(path).suffix.lower() in (".parquet", ".pq") else detect_encoding(path)
    rows, bad = [], 0
    try:
        for raw in iter_raw_rows(path, "auto", encoding if encoding != "parquet" else "utf-8", None, info):
            if raw.error or not isinstance(raw.data, dict):
                bad += 1
            else:
                rows.append(raw.data)
            if len(rows) + bad >= SAMPLE_ROWS:
                break
    except DataError as err:
        raise CliError(str(err)) from None
    if not rows:
        raise CliError(f"{path}: no readable rows in the first {SAMPLE_ROWS} ({bad} malformed)")
    columns, shape = detect_columns(rows)
    if shape == "classification":
        return {
            "path": path,
            "file_format": info.file_format,
            "encoding": info.encoding or encoding,
            "encoding_found_by": how,
            "delimiter": info.delimiter,
            "columns": columns,
            "shape": shape,
            "rows_sampled": len(rows) + bad,
            "malformed": bad,
            "row_formats": {"text + label": len(rows)},
            "row_problems": {},
            "notes": list(info.notes),
        }
    mapping = {
        "messages": "messages",
        "instruction": "instruction",
        "input": "input",
        "output": "output",
        "question": "question",
        "answer": "answer",
        "system": "system",
        **columns,
    }
    formats: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for i, row in enumerate(rows):
        try:
            formats[to_conversation(row, mapping, f"row {i + 1}").row_format] += 1
        except Exception as err:  # RowError: counted, shown as a summary
            problems[getattr(err, "reason", type(err).__name__)] += 1
    return {
        "path": path,
        "file_format": info.file_format,
        "encoding": info.encoding or encoding,
        "encoding_found_by": how,
        "delimiter": info.delimiter,
        "columns": columns,
        "shape": shape,
        "rows_sampled": len(rows) + bad,
        "malformed": bad,
        "row_formats": dict(formats),
        "row_problems": dict(problems),
        "notes": list(info.notes),
    }


def render_config(found: dict) -> str:
    """A complete config (every key, schema defaults) whose data section reads the inspected file."""
    import yaml

    from loraflow.config import validate_config

    encoding = found["encoding"] if found["file_format"] != "parquet" else "utf-8"
    if found["shape"] == "classification":  # text + label rows: task seq_cls (docs/seq_cls.md)
        if found["file_format"] not in ("jsonl", "json", "csv"):
            raise CliError(f"{found['path']}: task seq_cls reads .jsonl, .json and .csv files; convert the file first")
        config = validate_config(
            {
                "task": "seq_cls",
                "classify": {
                    "data": found["path"],
                    "format": found["file_format"],
                    "encoding": encoding,
                    **found["columns"],
                },
            }
        )
    else:
        data = {
            "path": found["path"],
            "format": found["file_format"],
            "encoding": encoding,
            "delimiter": found["delimiter"],
            "system_prompt": "",
        }
        if found["columns"]:
            data["columns"] = dict(found["columns"])
        config = validate_config({"data": data})
        config["data"].pop("builtin_rows", None)
    head = [
        f"# Written by `loraflow init {found['path']}`. Detected: {found['file_format']} file, encoding "
        f"{found['encoding']} ({found['encoding_found_by']})"
        + (f", delimiter {found['delimiter']!r}" if found["delimiter"] else "")
        + f", rows shaped as {found['shape']} ({found['row_formats']} in the first {found['rows_sampled']} rows).",
        "# Run: snakemake --configfile THIS_FILE --cores 1 --resources gpu=1   (every key: "
        "workflow/schemas/config.schema.yaml)",
    ]
    if found["shape"] == "classification":
        head.append("# Text + label rows: task seq_cls (docs/seq_cls.md).")
    else:
        head.append("# The clean stage keeps every character of your text; the clean.* fixers are off (docs/data.md).")
    for note in found["notes"]:
        head.append(f"# Note: {note}")
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return "\n".join(head) + "\n" + body


def cmd_init(args) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        raise CliError(
            f"{out} exists; choose another file with -o (and run snakemake --configfile {out.name}), or --force"
        )
    found = inspect_data(args.data_file)
    text = render_config(found)
    from loraflow.io import write_text

    write_text(out, text)
    print(
        f"{args.data_file}: {found['file_format']}, encoding {found['encoding']} ({found['encoding_found_by']})"
        + (f", delimiter {found['delimiter']!r}" if found["delimiter"] else "")
        + f"; rows: {found['shape']} {found['row_formats']}"
        + (f"; columns {found['columns']}" if found["columns"] else "")
    )
    if found["row_problems"] or found["malformed"]:
        print(
            f"  in the first {found['rows_sampled']} rows: {found['malformed']} malformed, problems "
            f"{found['row_problems']}"
            " (the clean stage reports each with file and line)"
        )
    print(f"wrote {out}; run: snakemake --configfile {out} --cores 1 --resources gpu=1")
    return 0

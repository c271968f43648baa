"""Delimited text (CSV, TSV): the delimiter, the quoting decision and the records with their spans.

CSV follows RFC 4180: a field that starts with a quote is quoted, `""` inside it is one quote. A
quoted field that is not closed, or text after its closing quote, would merge or change records, so
it stops with the line where the quoting breaks. TSV follows its own convention: no quoting (a quote
is text), unless the file shows CSV-style quoting consistently: every quote is part of a properly
quoted field, and some quoted field needs it (holds a tab, a newline or a doubled quote) or every
field is quoted. The decision is logged in one line.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, cast

from loraflow.data.records import DataError, RawRow, RowError, digest, one_line

DELIMITERS = (",", "\t", ";", "|")
DELIMITER_NAMES = {",": "','", "\t": "tab", ";": "';'", "|": "'|'"}
_BAD_BYTE = re.compile("[\udc80-\udcff]")


@dataclass
class Quoting:
    """The result of scanning the quotes of a delimited file."""

    quoted_fields: int = 0  # fields that start with a quote and close properly
    needed: int = 0  # quoted fields that hold the delimiter, a newline or a doubled quote
    fields: int = 0  # all fields
    problem: str = ""  # why the quotes are not CSV quoting ("" when they are)
    problem_line: int = 0
    loose_quote: bool = False  # a quote inside an unquoted field (text in CSV, no CSV quoting in TSV)


def scan_quoting(text: str, sep: str) -> Quoting:
    """Walk the quotes, delimiters and line ends of `text` as RFC 4180 reads them."""
    q = Quoting()
    state, start, line, field_start, content = "start", 0, 1, 0, False
    for m in re.finditer(r'"|\r\n|\n|\r|' + re.escape(sep), text):
        tok, pos = m.group(), m.start()
        between = pos > start  # ordinary characters since the last token
        start = m.end()
        if state == "start":
            if tok == '"' and not between:
                state, field_start, content = "quoted", line, False
            elif tok == '"':  # text, then a quote: a quote inside an unquoted field
                state = "field"
                q.loose_quote = True
            else:
                q.fields += 1
        elif state == "field":
            if tok == '"':
                q.loose_quote = True
            else:
                state = "start"
                q.fields += 1
        elif state == "quoted":
            if tok == '"':
                state = "closing"
            else:
                content = True
        elif state == "closing":  # after a quote inside a quoted field
            if tok == '"' and not between:
                state, content = "quoted", True
            elif between:
                q.problem = q.problem or "text after the closing quote of a quoted field"
                q.problem_line = q.problem_line or line
                state = "field" if tok == '"' else "start"
            else:
                q.quoted_fields += 1
                q.needed += content
                q.fields += 1
                state = "start"
        if tok in ("\n", "\r\n", "\r"):
            line += 1
        if state == "quoted" and tok == sep:
            content = True
    if state == "closing":
        q.quoted_fields += 1
        q.needed += content
    elif state == "quoted":
        q.problem = q.problem or "a quoted field is never closed"
        q.problem_line = q.problem_line or field_start
    return q


def pick_quoting(path: str, text: str, sep: str, log_notes: list[str]) -> int:
    """csv.QUOTE_MINIMAL or csv.QUOTE_NONE for `text`, with the decision in `log_notes`."""
    if '"' not in text:
        if sep == "\t":
            log_notes.append("TSV dialect: no quotes in the file; read without quoting")
        return csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    q = scan_quoting(text, sep)
    if sep != "\t":
        if q.problem:
            raise DataError(
                f'{path}:{q.problem_line}: broken CSV quoting ({q.problem}); a field that starts with " must end '
                'with " before the delimiter or the line end, and a quote inside it is written "" '
                "(or set data.delimiter if this is not a CSV file)"
            )
        return csv.QUOTE_MINIMAL
    consistent = not q.problem and not q.loose_quote and q.quoted_fields > 0
    if consistent and (q.needed > 0 or q.quoted_fields == q.fields):
        log_notes.append(
            f"TSV dialect: CSV-style quoting used consistently ({q.quoted_fields} quoted fields); read with quoting"
        )
        return csv.QUOTE_MINIMAL
    why = (
        f"{q.problem} at line {q.problem_line}"
        if q.problem
        else "a quote inside an unquoted field"
        if q.loose_quote
        else "no field needs quoting"
    )
    log_notes.append(f"TSV dialect: quotes are text ({why}); read without quoting")
    return csv.QUOTE_NONE


def field_counts(text: str, sep: str, records: int = 50) -> list[int]:
    reader = csv.reader(io.StringIO(text[: 1 << 17], newline=""), delimiter=sep)
    counts = []
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                counts.append(len(record))
            if len(counts) >= records:
                break
    except csv.Error:
        return []
    if len(text) > 1 << 17 and len(counts) > 1:
        counts = counts[:-1]  # the cut may have split the last record
    return counts


def _consistent(counts: list[int]) -> bool:
    return len(counts) >= 1 and counts[0] > 1 and sum(c == counts[0] for c in counts) >= 0.9 * len(counts)


def pick_delimiter(text: str, fmt: str, delimiter: str | None) -> str:
    """data.delimiter if set; tab for TSV; else csv.Sniffer's choice when the first records agree with
    it, else the candidate whose field counts agree best; ',' when nothing splits the header."""
    if delimiter is not None:
        sep = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
        if len(sep) != 1 or sep in '\r\n"':
            raise DataError(
                f"data.delimiter: must be one character other than a quote or line break (or 'tab'), got {delimiter!r}"
            )
        return sep
    if fmt == "tsv":
        return "\t"
    sample = text[: 1 << 16]
    try:
        sniffed = (
            csv.Sniffer().sniff(sample[: sample.rfind("\n") + 1] or sample, delimiters="".join(DELIMITERS)).delimiter
        )
    except csv.Error:
        sniffed = None
    if sniffed and _consistent(field_counts(text, sniffed)):
        return sniffed
    for sep in DELIMITERS:
        if _consistent(field_counts(text, sep)):
            return sep
    return ","


def _reader(text: str, sep: str, quoting: int):
    quote = cast(Literal[0, 1, 2, 3], quoting)  # a csv.QUOTE_* constant: the callers pass one
    return csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quote, strict=False)


def csv_records(path: str, text: str, sep: str, quoting: int) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of every record after the header that holds any text: the
    records the conservation check expects (the header is record 0 and not yielded)."""
    reader = _reader(text, sep, quoting)
    start = 1
    header = True
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(
                f"{path}:{start}: unreadable CSV record ({one_line(exc)}); check data.delimiter and the quoting"
            ) from None
        end = reader.line_num
        if header:
            header = False
            yield 0, end, record
        elif any(cell.strip() for cell in record):
            yield start, end, record
        start = end + 1


def _reason(record: list[str], encoding: str) -> str:
    """The decoder's words for the first bad byte of a record decoded with surrogateescape."""
    data = "\x00".join(record).encode(encoding, "surrogateescape")
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        return exc.reason
    return "undecodable bytes"


def iter_csv(
    path: str, text: str, sep: str, quoting: int, explicit: bool, encoding: str, hint: Callable[[], str]
) -> Iterator[RawRow]:
    """Rows of a delimited file; bytes that were not valid in the encoding (decoded as escapes) make
    their record a bad_encoding row, a record with the wrong field count a bad_csv row."""
    name = DELIMITER_NAMES.get(sep, repr(sep))
    how = "set by data.delimiter" if explicit else "detected; set data.delimiter if that is wrong"
    header: list[str] | None = None
    number = 0
    for start, end, record in csv_records(path, text, sep, quoting):
        if header is None:
            header = record
            if any(_BAD_BYTE.search(cell) for cell in header):
                raise DataError(f"{path}:1: the header holds bytes that are not valid {encoding}; {hint()}")
            continue
        number += 1
        where = f"{path}:{start}"
        row = RawRow(start, None, None, where, number, end, digest(record), path)
        if any(_BAD_BYTE.search(cell) for cell in record):
            row.data = sep.join(record).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            row.error = RowError(
                "bad_encoding", f"{where}: bytes are not valid {encoding} ({_reason(record, encoding)}); {hint()}"
            )
        elif len(record) != len(header):
            row.data = sep.join(record)
            row.error = RowError(
                "bad_csv", f"{where}: {len(record)} fields, the header has {len(header)} (delimiter {name} {how})"
            )
        else:
            row.data = dict(zip(header, record))
        yield row

"""Every task's cleaning skeleton: each row is accepted or rejected with a reason, a structural problem
stops the stage unless data.on_bad_row is reject, and the rows out are checked against the rows in."""

from __future__ import annotations

from typing import Iterable

from loraflow.data.conservation import check_coverage, reference_digests
from loraflow.data.records import DataError, RawRow, RowError, SourceInfo

#: Reasons that are problems of the file's structure: they stop the clean stage unless data.on_bad_row is reject.
STRUCTURAL = {"bad_json", "bad_encoding", "bad_csv", "bad_row", "missing_columns", "wrong_type", "bad_role"}


def rejection(raw: RawRow, reason: str, detail: str) -> dict:
    return {"line": raw.line, "source": raw.source(), "reason": reason, "detail": detail, "row": raw.data}


def triage_rows(
    rows: Iterable[RawRow], source: str, on_bad_row: str, accept, empty_hint: str = ""
) -> tuple[list, list[dict], int]:
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
            rejected.append(rejection(raw, err.reason, err.detail))
    if rows_in == 0:
        raise DataError(f"{source}: no data rows found (empty file?){empty_hint}")
    return accepted, rejected, rows_in


def check_conserved(stats: dict, rows_out: int) -> None:
    """Sets stats["conserved"]: rows in (stats["rows_in"]) = rows out; a broken count is a bug, never skipped.
    The count is the weaker check, for stages that get rows, not a file; the clean stage checks content
    (check_content)."""
    stats["conserved"] = stats["rows_in"] == rows_out
    if not stats["conserved"]:
        raise DataError(
            f"{stats.get('input', 'data')}: row conservation broken: {stats['rows_in']} rows in, {rows_out} out "
            "(a loraflow bug: please report it)"
        )


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
        raise DataError(
            f"{stats['input']}: conservation check failed: an output row names source record {missing}, "
            "which was never read (a loraflow bug: please report it)"
        )
    stats["source_records"] = check_coverage(stats["input"], reference, [read[r] for r in records_out])
    stats["conserved"] = True

"""Opening a data file: compression (.gz, .bz2, .xz, .zst), binary files, and the text encoding
(byte-order mark, the NUL-byte pattern of UTF-16/32 without one, data.encoding), with encoding hints
that never corrupt: an encoding is suggested only when it decodes the whole file and every line that
is valid in the configured encoding reads the same under it."""

from __future__ import annotations

import codecs
from pathlib import Path

from loraflow.data.records import DataError, SourceInfo, one_line

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: magic bytes -> (compression, module, extension)
_COMPRESSION = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_COMPRESSION_EXT = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
#: magic bytes of binary formats people point data.path at by mistake
_BINARY_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx or .docx file is one: export it as CSV)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"SQLite format 3", "an SQLite database"),
    (b"\x93NUMPY", "a NumPy array"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.xls/.doc: export it as CSV)"),
)
SAMPLE = 1 << 16
MAX_LINES_NAMED = 5


def strip_compression_suffix(path: str) -> str:
    p = Path(path)
    return str(p.with_suffix("")) if p.suffix.lower() in _COMPRESSION_EXT else path


def read_source(path: str, info: SourceInfo) -> bytes:
    """The file's bytes, decompressed when it is compressed (by magic bytes or extension)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(
            f"{path}: is a directory; data.path must name one data file (.jsonl, .json, .csv, .tsv, .parquet, "
            "optionally compressed .gz/.bz2/.xz/.zst)"
        )
    if not p.is_file():
        raise DataError(f"{path}: data file not found (data.path)")
    raw = p.read_bytes()
    kind = next((name for magic, name in _COMPRESSION if raw.startswith(magic)), None)
    if kind is None and _COMPRESSION_EXT.get(p.suffix.lower()) and raw:
        raise DataError(
            f"{path}: the name says {_COMPRESSION_EXT[p.suffix.lower()]}-compressed, but the content is not; check "
            "data.path"
        )
    if kind is None:
        return raw
    info.compression = kind
    return _decompress(path, raw, kind)


def _decompress(path: str, raw: bytes, kind: str) -> bytes:
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DataError(
                f"{path}: zstd-compressed; install the Python package zstandard to read it (or decompress the file)"
            ) from None
        try:
            return zstandard.ZstdDecompressor().stream_reader(raw).read()
        except zstandard.ZstdError as exc:
            raise DataError(f"{path}: not a readable zstd file ({one_line(exc)}); check data.path") from None
    import bz2
    import gzip
    import lzma
    import zlib

    module = {"gzip": gzip, "bz2": bz2, "xz": lzma}[kind]
    try:
        return module.decompress(raw)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable {kind} file ({one_line(exc)}); check data.path") from None


# --------------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------------


def sniff_bom(raw: bytes) -> tuple[str | None, int]:
    """(encoding, BOM length) from a byte-order mark; (None, 0) without one. UTF-32 is tested first
    because its little-endian BOM starts with the UTF-16 one."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name, len(bom)
    return None, 0


def sniff_wide(raw: bytes) -> str | None:
    """UTF-16/32 without a byte-order mark, from where the NUL bytes fall: ASCII text (and the JSON/CSV
    syntax around any script) has a NUL in every other byte (UTF-16) or three of four (UTF-32; its
    highest byte is always NUL). A candidate must decode strictly, with hardly any NUL characters."""
    sample = raw[: SAMPLE - SAMPLE % 4]
    n = len(sample)
    if n < 4 or b"\x00" not in sample:
        return None
    zeros = [sample[i::4].count(0) for i in range(4)]
    quarter, odd, even = n / 4, zeros[1] + zeros[3], zeros[0] + zeros[2]
    candidates = []
    if zeros[3] >= 0.99 * quarter and zeros[2] >= 0.5 * quarter and zeros[0] < 0.5 * quarter:
        candidates.append("utf-32-le")
    if zeros[0] >= 0.99 * quarter and zeros[1] >= 0.5 * quarter and zeros[3] < 0.5 * quarter:
        candidates.append("utf-32-be")
    if odd >= 0.1 * n / 2 and even <= 0.2 * odd:  # 0.1: the syntax of CJK rows is enough
        candidates.append("utf-16-le")
    if even >= 0.1 * n / 2 and odd <= 0.2 * even:
        candidates.append("utf-16-be")
    for name in candidates:
        try:
            text = sample.decode(name)
        except UnicodeDecodeError as exc:
            if len(raw) == n or exc.start < n - 4:  # not just a character cut by the sample's end
                continue
            text = sample[: exc.start].decode(name)
        if text.count("\x00") <= max(1, len(text) // 50):
            return name
    return None


def looks_binary(raw: bytes, encoding: str) -> str | None:
    """What kind of binary file `raw` is (for the message), or None for text: a known magic number, or
    bytes that are not text in `encoding` and hold NULs or many control bytes. Text that decodes is
    text, control characters and all (the cleaner removes them)."""
    for magic, what in _BINARY_MAGIC:
        if raw.startswith(magic):
            return what
    sample = raw[:SAMPLE]
    if sample.count(0) > len(sample) // 10:
        return "it holds NUL bytes; if it is UTF-16 or UTF-32 text, set data.encoding"
    try:
        sample.decode(encoding)
        return None
    except UnicodeDecodeError as exc:
        if len(raw) > len(sample) and exc.start >= len(sample) - 4:  # a character cut by the sample's end
            return None
    controls = sum(sample.count(b) for b in range(32) if b not in (9, 10, 12, 13, 27))
    if b"\x00" in sample or controls > 0.05 * len(sample):
        return "it holds NUL or control bytes and is not valid " + encoding
    return None


def family(encoding: str) -> str:
    """utf-16 for utf-16 / utf-16-le / utf-16-be, utf-8 for utf-8 / utf-8-sig, else the codec name."""
    name = codecs.lookup(encoding).name
    for suffix in ("-sig", "-le", "-be"):
        name = name.removesuffix(suffix)
    return name


def check_encoding_name(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r} (e.g. utf-8, gb18030, cp1252, utf-16)") from None


def ascii_compatible(encoding: str) -> bool:
    """True when newline and the JSON/CSV syntax characters are single ASCII bytes in `encoding`,
    so the bytes may be split into lines before decoding."""
    try:
        return '\n{[,"\t'.encode(encoding) == b'\n{[,"\t'
    except (LookupError, UnicodeError):
        return False


def choose_encoding(path: str, raw: bytes, encoding: str, info: SourceInfo) -> tuple[str, bytes]:
    """(encoding, bytes without BOM): the byte-order mark wins, then the NUL-byte pattern of UTF-16/32
    (over a UTF-8/16/32 setting; another explicit setting gets a hint), then data.encoding."""
    encoding = check_encoding_name(encoding)
    bom_encoding, bom_len = sniff_bom(raw)
    if bom_encoding:
        if family(encoding) != family(bom_encoding):
            info.notes.append(f"byte-order mark says {bom_encoding}; used instead of data.encoding {encoding}")
        return bom_encoding, raw[bom_len:]
    wide = sniff_wide(raw)
    if wide:
        if family(encoding) in ("utf-8", "utf-16", "utf-32"):
            if family(encoding) != family(wide) or codecs.lookup(encoding).name != wide:
                info.notes.append(f"no byte-order mark; the NUL-byte pattern says {wide}: read as {wide}")
            return wide, raw
        raise DataError(
            f"{path}: the NUL-byte pattern says the file is {wide}, not {encoding}; set data.encoding: {wide}"
        )
    what = looks_binary(raw, encoding) if ascii_compatible(encoding) else None
    if what:
        raise DataError(
            f"{path}: binary file ({what}), not text data (.jsonl, .json, .csv, .tsv) or Parquet; check data.path"
        )
    return encoding, raw


def candidate_encodings(raw: bytes) -> list[str]:
    """The encodings charset-normalizer finds plausible for (the first 256 kB of) `raw`, best first."""
    from charset_normalizer import from_bytes

    sample = raw[: 1 << 18]
    if len(raw) > len(sample) and b"\n" in sample:  # never cut a multi-byte character in two
        sample = sample[: sample.rfind(b"\n") + 1]
    results = from_bytes(sample)
    best = results.best()
    names = [best.encoding] if best else []
    return names + [r.encoding for r in results if r.encoding not in names]


_FALLBACKS = ("gb18030", "cp1252", "shift_jis", "big5")
#: charset detection's narrower guesses -> their superset (decodes every file the narrower one does)
_SUPERSETS = {"gbk": "gb18030", "gb2312": "gb18030", "cp936": "gb18030", "latin_1": "cp1252"}


def bad_lines(raw: bytes, encoding: str) -> list[int]:
    """1-based numbers of the lines whose bytes are not valid `encoding` (an ASCII-compatible one)."""
    out = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError:
            out.append(number)
    return out


def safe_encodings(raw: bytes, encoding: str) -> list[str]:
    """Encodings that decode the whole file and read every line that is valid `encoding` the same."""
    own = codecs.lookup(encoding).name
    lines = [line for line in raw.split(b"\n") if not line.isascii()] if ascii_compatible(encoding) else []
    valid = []
    for line in lines:
        try:
            valid.append((line, line.decode(encoding)))
        except UnicodeDecodeError:
            pass
    detected = candidate_encodings(raw)
    safe = _safe(raw, valid, own, detected) or _safe(raw, valid, own, [n for n in _FALLBACKS if n not in detected])
    if safe and safe[0] in _SUPERSETS and _SUPERSETS[safe[0]] not in safe[:1]:
        better = _safe(raw, valid, own, [_SUPERSETS[safe[0]]])  # the common superset, when it reads the file too
        safe = better + [n for n in safe if n not in better]
    return safe


_ASCII = bytes(range(128))


def _safe(raw: bytes, valid: list[tuple[bytes, str]], own: str, names: list[str]) -> list[str]:
    out = []
    for name in names:
        try:
            if codecs.lookup(name).name != own and ascii_compatible(name):
                raw.decode(name)
                lines = valid
                if _ASCII.decode(name, "replace") != _ASCII.decode("ascii"):  # Shift_JIS: 0x5C is ¥, 0x7E is ‾
                    lines = valid + [(line, line.decode("ascii")) for line in raw.split(b"\n") if line.isascii()]
                if all(line.decode(name) == text for line, text in lines):
                    out.append(name)
        except (LookupError, UnicodeDecodeError):
            continue
    return out


def encoding_hint(raw: bytes, encoding: str, per_row: bool = True) -> str:
    """The fix for bytes that are not valid `encoding`: a safe encoding, or (when none is safe) the
    bad lines and data.on_bad_row: reject (for formats that can skip one row)."""
    safe = safe_encodings(raw, encoding)
    if safe:
        more = f" (also possible: {', '.join(safe[1:3])})" if len(safe) > 1 else ""
        return f"set data.encoding: {safe[0]}{more}"
    lines = bad_lines(raw, encoding) if ascii_compatible(encoding) else []
    named = ", ".join(map(str, lines[:MAX_LINES_NAMED])) + (
        f" and {len(lines) - MAX_LINES_NAMED} more" if len(lines) > MAX_LINES_NAMED else ""
    )
    where = (f"lines {named} are" if len(lines) > 1 else f"line {named} is") if lines else "some lines are"
    them = "them" if len(lines) != 1 else "it"
    fix = f"set data.on_bad_row: reject to skip {them} with a reason, or fix {them}" if per_row else f"fix {them}"
    return f"{where} not valid {encoding}, and no one encoding reads the whole file the same; {fix}"


def decode_bytes(path: str, raw: bytes, encoding: str) -> str:
    """Decode a whole file; a byte that is not valid names its line and a safe fix."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise DataError(
            f"{path}:{line}: bytes are not valid {encoding} ({exc.reason} at byte {exc.start}); "
            f"{encoding_hint(raw, encoding, per_row=False)}"
        ) from None

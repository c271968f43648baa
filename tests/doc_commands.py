"""The shell commands README.md and docs/*.md show, as a reader would copy them (tests/test_docs_commands.py).

What counts as a command:
- every line of a fenced ```bash / ```sh / ```shell block (a trailing `\\` joins the next line; `# ...`
  comments outside quotes are dropped), and every `$ `-prompted line of a ```console block;
- every inline code span of two or more words whose first word (after an optional `.venv/bin/`) is one
  of COMMAND_WORDS, e.g. `snakemake --report report.html` or `loraflow best`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGS = {"bash", "sh", "shell", "console"}
COMMAND_WORDS = {"snakemake", "loraflow", "bash", "pip", "python", "mlflow", "tensorboard"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
INLINE = re.compile(r"(?<!`)`(?!`)((?:(?!\n[ \t]*\n)[^`])+?)`(?!`)")
# snakemake options of several values whose values are rule names: a rule after one of them is its value
RULE_VALUED = {"forcerun", "until", "omit_from", "allowed_rules", "prioritize", "preemptible_rules", "consider_ancient"}


@dataclass(frozen=True)
class DocCommand:
    text: str  # as written: continuations joined, comments dropped
    source: str  # file:line
    fenced: bool
    env: tuple[str, ...] = ()  # `export NAME=...` lines before it in its block, which a reader has run

    @property
    def key(self) -> str:
        """The command without `.venv/bin/` and with single spaces: the same command in two docs is run once."""
        return " ".join(re.sub(r"(^|\s)\.venv/bin/", r"\1", self.text).split())


def strip_comment(line: str) -> str:
    """`line` without a shell comment (a `#` at a word start, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def split_and(text: str) -> list[str]:
    """The parts of `a && b` (split outside quotes), each as written."""
    parts, quote, start, i = [], None, 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif text.startswith("&&", i):
            parts.append(text[start:i])
            start, i = i + 2, i + 1
        i += 1
    return [p.strip() for p in [*parts, text[start:]] if p.strip()]


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the first content line, lines) of every fenced block, indent removed."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, start = m.group("fence"), len(m.group("indent")), i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        blocks.append(
            (
                m.group("info").lower(),
                start + 1,
                [line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[start:j]],
            )
        )
        i = j + 1
    return blocks


def block_commands(lang: str, first: int, lines: list[str], name: str) -> list[DocCommand]:
    out, env, pending, pending_line = [], [], "", 0
    for n, raw in enumerate(lines, start=first):
        if lang == "console":
            if not raw.startswith("$ ") and not pending:
                continue
            raw = raw[2:] if raw.startswith("$ ") else raw
        line = strip_comment(raw)
        if not pending:
            pending_line = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = " ".join((pending + line).split())
        pending = ""
        if text:
            out.append(DocCommand(text, f"{name}:{pending_line}", True, tuple(env)))
            if text.startswith("export "):
                env.append(text)
    return out


def is_inline_command(span: str) -> bool:
    words = span.split()
    return len(words) >= 2 and re.sub(r"^\.venv/bin/", "", words[0]) in COMMAND_WORDS


def doc_commands(repo: Path) -> list[DocCommand]:
    """Every command of README.md and docs/*.md, in reading order."""
    out = []
    for path in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        name = str(path.relative_to(repo))
        text = path.read_text(encoding="utf-8")
        prose = text.splitlines()
        for lang, first, lines in fenced_blocks(text):
            if lang in SHELL_LANGS:
                out += block_commands(lang, first, lines, name)
            for k in range(first - 2, first + len(lines)):  # the fences and their content are not prose
                if k < len(prose):
                    prose[k] = ""
        flat = "\n".join(prose)
        for m in INLINE.finditer(flat):
            span = " ".join(m.group(1).split())
            if is_inline_command(span):
                out.append(DocCommand(span, f"{name}:{flat.count(chr(10), 0, m.start()) + 1}", False))
    return out


def fenced_code(repo: Path, lang: str, contains: str) -> str:
    """The first ```lang block of README.md or docs/*.md that contains `contains`."""
    for path in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        for block_lang, _, lines in fenced_blocks(path.read_text(encoding="utf-8")):
            if block_lang == lang and contains in "\n".join(lines):
                return "\n".join(lines) + "\n"
    raise LookupError(f"no ```{lang} block with {contains!r} in the docs")


def snakemake_args(text: str) -> list[str] | None:
    """The arguments after the `snakemake` word of a command (None: not a snakemake command)."""
    words = shlex.split(text)
    for i, word in enumerate(words):
        if re.fullmatch(r"(\S*/)?snakemake", word):
            return words[i + 1 :]
        if "=" not in word:  # leading NAME=value assignments only
            return None
    return None


def workflow_rules(repo: Path) -> set[str]:
    """The names of the workflow's rules (what a snakemake command's targets name)."""
    files = [repo / "workflow" / "Snakefile", *sorted((repo / "workflow" / "rules").glob("*.smk"))]
    return {
        m
        for f in files
        for m in re.findall(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", f.read_text(encoding="utf-8"), re.M)
    }


def is_target(word: str, rules: set[str]) -> bool:
    """A rule name (also with a module prefix, `lf_all`) or a file under results/."""
    return word.startswith("results/") or any(word == r or word.endswith("_" + r) for r in rules)


def swallowed_targets(args: list[str], parser, rules: set[str]) -> list[str]:
    """Targets that Snakemake reads as values of the option of several values before them
    (`--resources gpu=1 export`: `export` is read as a malformed resource). `parser`: snakemake's own;
    after an option whose values are rule names (`--forcerun track`) a rule name is its value, as meant."""
    actions = {opt: a for a in parser._actions for opt in a.option_strings}
    swallowed, current = [], None
    for word in args:
        if word.startswith("-"):
            current = actions.get(word.split("=", 1)[0])
            if current is not None and (current.nargs not in ("*", "+") or "=" in word):
                current = None  # takes a fixed number of values, or --opt=value just that one
        elif current is not None and current.dest not in RULE_VALUED and is_target(word, rules):
            swallowed.append(word)
    return swallowed


def with_dry_run(text: str) -> str:
    """`text` with `-n` right after its `snakemake` word (unchanged when it is a dry run already)."""
    args = snakemake_args(text) or []
    if "-n" in args or "--dry-run" in args or "--dryrun" in args:
        return text
    return re.sub(r"((?:^|\s)(?:\S*/)?snakemake)(?=\s|$)", r"\1 -n", text, count=1)

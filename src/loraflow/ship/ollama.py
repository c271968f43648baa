"""Ollama Modelfile: the chat template as a Go template, stop tokens, system prompt, decoding.

The Jinja chat template is not translated; it is *measured*. Conversations with marker contents are
rendered with the tokenizer's own template, and the text around each marker gives, per role, the
prefix and suffix of a message (`<|im_start|>user\\n` ... `<|im_end|>\\n`), the text before the first
message (e.g. a BOS the template writes) and the generation prompt. The Go template is assembled from
those pieces, and `template_mismatches` re-renders real conversations both ways (Jinja, and a Python
model of the Go template) to prove they give the same text. A template that cannot be written this way
(not prefix-stable, roles that change each other's text) stops the export with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraflow.ship.exportable import ExportError

MARK = "LFMARK{}Z"


@dataclass(frozen=True)
class Segments:
    begin: str
    prefix: dict  # role -> text before the content
    suffix: dict  # role -> text after the content
    generation: str  # the assistant header add_generation_prompt appends


def _render(tokenizer, messages: list[dict], gen: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def measure_segments(tokenizer) -> Segments:
    """Per-role prefix/suffix of the tokenizer's chat template (system first, then user/assistant turns)."""
    roles = ["system", "user", "assistant", "user", "assistant", "user"]
    conv = [{"role": r, "content": MARK.format(i)} for i, r in enumerate(roles)]
    renders = [_render(tokenizer, conv[: k + 1]) for k in range(len(conv))]
    for k in range(1, len(renders)):
        if not renders[k].startswith(renders[k - 1]):
            raise ExportError(
                "the chat template is not prefix-stable (adding a message changes the text before it); "
                "an equivalent Ollama TEMPLATE cannot be written"
            )
    bos = getattr(tokenizer, "bos_token", None)
    begin = (
        bos
        if bos and renders[0].startswith(bos) and not renders[0].startswith(bos + bos) and _writes_bos(tokenizer)
        else ""
    )
    pieces = [renders[0][len(begin) :]] + [renders[k][len(renders[k - 1]) :] for k in range(1, len(renders))]
    prefix: dict[str, str] = {}
    suffix: dict[str, str] = {}
    for i, (role, piece) in enumerate(zip(roles, pieces)):
        marker = MARK.format(i)
        if piece.count(marker) != 1:
            raise ExportError(f"the chat template does not write a {role} message's content exactly once")
        before, after = piece.split(marker)
        if role in prefix and (prefix[role], suffix[role]) != (before, after):
            raise ExportError(
                f"the chat template writes {role} messages differently depending on their position; "
                "an equivalent Ollama TEMPLATE cannot be written"
            )
        prefix[role], suffix[role] = before, after
    full = _render(tokenizer, conv[:-1])
    generation = _render(tokenizer, conv[:-1], gen=True)
    if not generation.startswith(full):
        raise ExportError("the chat template's generation prompt changes the conversation before it")
    return Segments(begin, prefix, suffix, generation[len(full) :])


def _writes_bos(tokenizer) -> bool:
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    return "bos_token" in template


def render_segments(seg: Segments, system: str | None, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """What the Go template of `go_template(seg)` renders for Ollama's .System and .Messages."""
    out = seg.begin
    if system:
        out += seg.prefix["system"] + system + seg.suffix["system"]
    for m in messages:
        if m["role"] in ("user", "assistant"):
            out += seg.prefix[m["role"]] + m["content"] + seg.suffix[m["role"]]
    return out + (seg.generation if add_generation_prompt else "")


def _go_literal(text: str) -> str:
    """Template text is copied verbatim by Go's text/template except the action delimiter."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(seg: Segments) -> str:
    """The Ollama TEMPLATE (Go text/template). No `{{-` trim markers: the literal newlines matter."""
    L = _go_literal
    return (
        f"{L(seg.begin)}{{{{ if .System }}}}{L(seg.prefix['system'])}{{{{ .System }}}}{L(seg.suffix['system'])}{{{{ "
        "end }}{{ range .Messages }}"
        f'{{{{ if eq .Role "user" }}}}{L(seg.prefix["user"])}{{{{ .Content }}}}{L(seg.suffix["user"])}'
        f'{{{{ else if eq .Role "assistant" }}}}{L(seg.prefix["assistant"])}{{{{ .Content '
        f"}}}}{L(seg.suffix['assistant'])}"
        f"{{{{ end }}}}{{{{ end }}}}{L(seg.generation)}"
    )


def template_mismatches(tokenizer, seg: Segments, conversations: list[list[dict]]) -> list[int]:
    """Indices of conversations (prompt messages, system first) whose Go-template rendering differs
    from the Jinja rendering with the generation prompt."""
    bad = []
    for i, messages in enumerate(conversations):
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        rest = messages[1:] if system is not None else messages
        if render_segments(seg, system, rest) != _render(tokenizer, messages, gen=True):
            bad.append(i)
    return bad


def _quote(text: str) -> str:
    if '"""' in text:
        raise ExportError('text for the Modelfile contains """, which a Modelfile block cannot hold')
    return f'"""{text}"""'


def modelfile(
    gguf_file: str, template: str, system_prompt: str | None, stops: list[str], num_predict: int, header: str = ""
) -> str:
    """An Ollama Modelfile. Greedy decoding as in the evaluation: temperature 0, and repeat_penalty 1
    (Ollama's default 1.1 would change greedy answers); num_predict = evaluate.max_new_tokens."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"FROM ./{gguf_file}", "", f"TEMPLATE {_quote(template)}", ""]
    if system_prompt:
        lines += [f"SYSTEM {_quote(system_prompt)}", ""]
    for s in stops:
        lines.append(f'PARAMETER stop "{s}"')
    lines += [
        "PARAMETER temperature 0",
        "PARAMETER top_k 1",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_predict {num_predict}",
        "",
    ]
    return "\n".join(lines)


def parse_modelfile(text: str) -> dict:
    """{instruction: value or [values]} of a Modelfile (triple-quoted blocks included); for tests and checks."""
    out: dict = {"PARAMETER": []}
    i, lines = 0, text.splitlines(keepends=True)
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        if rest.startswith('"""'):
            body = rest[3:]
            while '"""' not in body:
                body += lines[i]
                i += 1
            value = body[: body.index('"""')]
        else:
            value = rest.rstrip("\n")
        if key == "PARAMETER":
            name, _, v = value.partition(" ")
            out["PARAMETER"].append((name, v.strip('"') if v.startswith('"') else v))
        else:
            out[key] = value
    return out

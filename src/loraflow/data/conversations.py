"""Rows -> conversations: the row formats loraflow recognises, per row.

OpenAI/ChatML `messages` (string content or a list of text parts; role `developer` is the system role),
ShareGPT `conversations` (from/value, roles human/user, gpt/assistant/bot/model, system), Alpaca
(instruction/input/output with optional `system` and `history`) and question/answer rows. A turn's
`weight` (0: not trained on, 1: trained) is kept on its message; its other keys (`name` ...) go to
meta["turn_fields"]. Fields that are not part of the conversation are returned as `meta` and carried
through the data stages unchanged. A row that cannot be read as a conversation raises a `RowError`
naming its file and line (loraflow.data.readers reads the rows of a file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loraflow.data.dialect import DELIMITERS
from loraflow.data.records import RowError

#: Role names of the common formats, mapped to ChatML roles (OpenAI's `developer` is its newer system role).
ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
}
#: Roles of tool-use turns (OpenAI, ShareGPT/LLaMA-Factory, Llama 3): not trainable as plain chat.
TOOL_ROLES = {"tool", "function", "function_call", "observation", "ipython", "tool_call", "tool_response"}
#: Content-part types that hold text (OpenAI chat and responses formats).
TEXT_PART_TYPES = {"text", "input_text", "output_text"}
#: meta key of the turns' keys that are not part of the conversation (a message's `name` ...)
TURN_FIELDS = "turn_fields"


@dataclass
class Turn:
    """One conversation turn before cleaning: its role and the source fields it is made of."""

    role: str
    parts: list[tuple[str, str]]  # (field path in the source row, text)
    sep: str = "\n"
    weight: int | None = None  # per-turn training weight (0: not trained on, 1: trained), when the source has one

    def content(self) -> str:
        return self.sep.join(text for _, text in self.parts)


@dataclass
class Conversation:
    row_format: str  # messages | sharegpt | alpaca | qa
    turns: list[Turn]
    meta: dict


#: keys of a turn that are part of the conversation; any other key (`name`, ...) goes to meta["turn_fields"]
_TURN_OWN_KEYS = {"role", "from", "content", "value", "weight"}


def _weight(t: dict, path: str, where: str) -> int | None:
    """A turn's `weight` (axolotl's convention: 0 = not trained on, 1 = trained), or None without one."""
    if "weight" not in t:
        return None
    w = t["weight"]
    if isinstance(w, bool) or (isinstance(w, (int, float)) and w in (0, 1)):
        return int(w)
    raise RowError("wrong_type", f"{where}: {path}.weight must be 0, 1, true or false, got {w!r}")


def _turn_list(row: dict, key: str, where: str, extra: dict | None = None) -> list[Turn]:
    """The turns of a messages/conversations list; keys of a turn that are not part of the
    conversation are put into `extra` by turn (e.g. {"messages[1]": {"name": "alice"}})."""
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise RowError("wrong_type", f"{where}: field {key!r} must be a non-empty list of turns")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RowError("wrong_type", f"{where}: {key}[{i}] must be an object, got {type(t).__name__}")
        role_key = "role" if "role" in t else "from"
        role = t.get(role_key)
        if not isinstance(role, str):
            raise RowError("wrong_type", f"{where}: {key}[{i}] needs a string 'role' (or ShareGPT 'from')")
        if role.lower() in TOOL_ROLES or t.get("tool_calls") or t.get("function_call"):
            what = f"role {role!r}" if role.lower() in TOOL_ROLES else "tool_calls"
            raise RowError(
                "tool_calls",
                f"{where}: {key}[{i}] is a tool-call turn ({what}); loraflow trains on plain "
                "chat turns, so conversations with tool calls are rejected",
            )
        mapped = ROLE_ALIASES.get(role.lower())
        if mapped is None:
            raise RowError(
                "bad_role",
                f"{where}: {key}[{i}] has unknown role {role!r} (allowed: system/developer, "
                "user/human, assistant/gpt/bot/model)",
            )
        content_key = "content" if "content" in t else "value"
        path = f"{key}[{i}].{content_key}"
        content = t.get(content_key)
        if isinstance(content, str):
            parts = [(path, content)]
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if isinstance(part, str):
                    parts.append((f"{path}[{j}]", part))
                elif (
                    isinstance(part, dict)
                    and part.get("type", "text") in TEXT_PART_TYPES
                    and isinstance(part.get("text"), str)
                ):
                    parts.append((f"{path}[{j}].text", part["text"]))
                elif isinstance(part, dict) and isinstance(part.get("type"), str):
                    raise RowError(
                        "non_text_content",
                        f"{where}: {path}[{j}] is a {part['type']!r} part; only text parts can be trained on",
                    )
                else:
                    raise RowError(
                        "wrong_type", f"{where}: {path}[{j}] must be a text part {{'type': 'text', 'text': ...}}"
                    )
            if not parts:
                raise RowError("wrong_type", f"{where}: {path} is an empty list of parts")
        else:
            got = "null" if content is None else type(content).__name__
            raise RowError(
                "wrong_type", f"{where}: {key}[{i}] needs a string '{content_key}' (or a list of text parts), got {got}"
            )
        out.append(Turn(mapped, parts, weight=_weight(t, f"{key}[{i}]", where)))
        others = {k: v for k, v in t.items() if k not in _TURN_OWN_KEYS and k != role_key and k != content_key}
        if others and extra is not None:
            extra[f"{key}[{i}]"] = others
    return out


def _text(row: dict, key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _history(row: dict, key: str, where: str) -> list[Turn]:
    history = row.get(key)
    if history is None:
        return []
    if not isinstance(history, list):
        raise RowError("wrong_type", f"{where}: field {key!r} must be a list of [question, answer] pairs")
    turns = []
    for k, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowError("wrong_type", f"{where}: {key}[{k}] must be a [question, answer] pair of strings")
        turns += [Turn("user", [(f"{key}[{k}][0]", pair[0])]), Turn("assistant", [(f"{key}[{k}][1]", pair[1])])]
    return turns


def _split_hint(row: dict) -> str:
    """A CSV read with the wrong delimiter has one column whose name holds the real delimiter."""
    if len(row) == 1 and any(sep in str(next(iter(row))) for sep in DELIMITERS):
        return ", or data.delimiter: the header was read as one column"
    return ""


def to_conversation(row: Any, columns: dict[str, str], where: str) -> Conversation:
    """Recognise the row's format and split it into turns (with their source fields) and metadata."""
    if not isinstance(row, dict):
        raise RowError("bad_row", f"{where}: expected an object, got {type(row).__name__}")
    c = {"conversations": "conversations", "history": "history", "system": "system", **columns}
    turn_fields: dict = {}
    if c["messages"] in row:
        fmt, used, turns = "messages", [c["messages"]], _turn_list(row, c["messages"], where, turn_fields)
    elif c["conversations"] in row:
        fmt, used, turns = "sharegpt", [c["conversations"]], _turn_list(row, c["conversations"], where, turn_fields)
    elif c["instruction"] in row and c["output"] in row:
        fmt, used = "alpaca", [c["instruction"], c["input"], c["output"], c["history"]]
        parts = [(c["instruction"], _text(row, c["instruction"], where))]
        if row.get(c["input"]) is not None and _text(row, c["input"], where).strip():
            parts.append((c["input"], row[c["input"]]))
        turns = [
            *_history(row, c["history"], where),
            Turn("user", parts, "\n\n"),
            Turn("assistant", [(c["output"], _text(row, c["output"], where))]),
        ]
    elif c["question"] in row and c["answer"] in row:
        fmt, used = "qa", [c["question"], c["answer"]]
        turns = [
            Turn("user", [(c["question"], _text(row, c["question"], where))]),
            Turn("assistant", [(c["answer"], _text(row, c["answer"], where))]),
        ]
    else:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise RowError(
            "missing_columns",
            f"{where}: row has none of the mapped column sets [{c['messages']}] | [{c['conversations']}] | "
            f"[{c['instruction']}, {c['output']}] | [{c['question']}, {c['answer']}]; its keys: {keys} "
            f"(set data.columns to map yours{_split_hint(row)})",
        )
    system = row.get(c["system"])
    if system is not None:
        used.append(c["system"])
        if turns[0].role == "system":
            raise RowError("role_order", f"{where}: both a {c['system']!r} field and a system turn")
        turns.insert(0, Turn("system", [(c["system"], _text(row, c["system"], where))]))
    meta = {k: v for k, v in row.items() if k not in used}
    if turn_fields:
        if TURN_FIELDS in meta:
            raise RowError(
                "wrong_type",
                f"{where}: the row has a field {TURN_FIELDS!r}, the name loraflow keeps the turns' "
                "other keys (such as `name`) under; rename it",
            )
        meta[TURN_FIELDS] = turn_fields
    return Conversation(fmt, turns, meta)


def message(role: str, content: str, weight: int | None) -> dict:
    """A message dict: role and content, and `weight` only when the source turn has one."""
    return (
        {"role": role, "content": content} if weight is None else {"role": role, "content": content, "weight": weight}
    )


def to_messages(row: Any, columns: dict[str, str], where: str) -> list[dict]:
    """Map one parsed row to a list of {role, content[, weight]} messages (uncleaned), or raise RowError."""
    conv = to_conversation(row, columns, where)
    return [message(t.role, t.content(), t.weight) for t in conv.turns]


def role_problem(messages: list[dict]) -> tuple[str, str] | None:
    """(reason, detail) if the turn order is unusable for supervised training, else None."""
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        return "no_assistant", "no assistant turn to learn from"
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        return "role_order", "a system message may only come first"
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if body != expected[: len(body)] or body[-1] != "assistant":
        return "role_order", f"turns must alternate user/assistant and end with assistant, got {'/'.join(body)}"
    return None

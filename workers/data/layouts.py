"""TRL's preference layouts as the product's dialogue text. Torch-free and pure: no files, no context.

TRL ("Dataset formats", preference type) stores one pair per record, in one of four layouts, each with a
`DatasetFormat` name here:

* standard, explicit prompt - ``{"prompt": str, "chosen": str, "rejected": str}``: the ``canonical`` layout
  (its required fields; TRL files name no objective, so `objective=` is needed).
* standard, implicit prompt - ``{"chosen": str, "rejected": str}``, the prompt inside each text:
  ``trl-implicit`` (``hh-rlhf`` when the texts are HH-RLHF transcripts, see `workers.data.loaders`).
* conversational, explicit prompt - ``{"prompt": [messages], "chosen": [messages], "rejected": [messages]}``:
  ``trl-conversational``.
* conversational, implicit prompt - ``{"chosen": [messages], "rejected": [messages]}``, both whole
  conversations that share their leading messages: ``trl-conversational-implicit``.

A message is ``{"role": "user" | "assistant" | "system", "content": str}``; its other keys are ignored.

Rendering (deterministic; the reward model reads HH-RLHF transcripts, see `workers.data.text`):

* a message is ``"\\n\\n<Turn>: <content>"``, Turn = ``Human`` for user, ``Assistant`` for assistant,
  ``System`` for system; content verbatim (never stripped);
* a prompt is its messages rendered in order: ``[user "Hi?"]`` -> ``"\\n\\nHuman: Hi?"``;
* a response must begin with an assistant message: its content verbatim, then the later messages rendered as
  above: ``[assistant "Hello!", user "Bye", assistant "Bye!"]`` -> ``"Hello!\\n\\nHuman: Bye\\n\\nAssistant: Bye!"``.

So `format_text(prompt, response)` is the whole conversation rendered, and a conversation gives exactly the
prompt and response strings of the same dialogue as an HH-RLHF transcript.

Implicit prompts:

* conversational (`split_conversations`): the prompt is the longest run of leading messages the two share
  that is followed by an assistant message in both (a shared assistant reply goes back into the responses,
  as HH-RLHF does when two dialogues diverge after it); the rest of each is its response. Two conversations
  that share no such run do not share a prompt (an error).
* standard (`split_transcripts`): the texts are split as HH-RLHF transcripts, at the last
  ``"\\n\\nAssistant:"`` turn inside their common prefix (one space after it is dropped). Texts without
  such a shared turn (plain text, another transcript convention) cannot be split sensibly: the loader keeps
  prompt ``""`` and the whole texts as the responses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from workers.data.text import ASSISTANT, HUMAN, SYSTEM

TURNS: dict[str, str] = {"user": HUMAN, "assistant": ASSISTANT, "system": SYSTEM}
"""Message role -> the transcript turn it renders to."""
ROLES: tuple[str, ...] = tuple(TURNS)


class Message(NamedTuple):
    role: str
    content: str


class LayoutError(ValueError):
    """A record that does not fit its layout; the message names keys and types, never the record's values."""


def type_name(v: Any) -> str:
    """The JSON name of a value's type ('object', 'list', 'string', ...)."""
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__)


def shape_name(v: Any) -> str:
    """A type as a message may show it: 'string', 'list of objects', 'empty list', ..."""
    if isinstance(v, list):
        return f"list of {type_name(v[0])}s" if v else "empty list"
    return type_name(v)


def is_message_list(v: Any) -> bool:
    """True for a list holding at least one object (a conversation, well-formed or not)."""
    return isinstance(v, list) and any(isinstance(m, dict) for m in v)


def messages(value: Any, key: str) -> list[Message]:
    """The messages of `value` (the record's `key`), validated; LayoutError names the first bad one."""
    if not isinstance(value, list):
        raise LayoutError(f"{key!r} must be a list of messages, got {type_name(value)}")
    if not value:
        raise LayoutError(f"{key!r} is an empty list of messages")
    out = []
    for i, m in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise LayoutError(f"{where} must be a message (an object with 'role' and 'content'), got {type_name(m)}")
        role, content = m.get("role"), m.get("content")
        if role is None:
            raise LayoutError(f"{where} has no 'role'")
        if not isinstance(role, str):
            raise LayoutError(f"{where} 'role' must be a string, got {type_name(role)}")
        if role not in TURNS:
            raise LayoutError(f"{where} 'role' is not one of {', '.join(ROLES)}")
        if content is None:
            raise LayoutError(f"{where} has no 'content'")
        if not isinstance(content, str):
            parts = " (content parts are not supported: give the text as a string)" if isinstance(content, list) else ""
            raise LayoutError(f"{where} 'content' must be a string, got {type_name(content)}{parts}")
        out.append(Message(role, content))
    return out


def render(msgs: Sequence[Message]) -> str:
    """Messages as transcript turns: ``"\\n\\nHuman: ..."``, ``"\\n\\nAssistant: ..."``, ``"\\n\\nSystem: ..."``."""
    return "".join(f"{TURNS[m.role]} {m.content}" for m in msgs)


def render_response(msgs: Sequence[Message], key: str) -> str:
    """A response: the first (assistant) message's content, then the later messages as turns."""
    if msgs[0].role != "assistant":
        raise LayoutError(f"{key!r} must begin with an assistant message, got a {msgs[0].role} message")
    return msgs[0].content + render(msgs[1:])


def split_conversations(chosen: Sequence[Message], rejected: Sequence[Message]
                        ) -> tuple[Sequence[Message], Sequence[Message], Sequence[Message]]:
    """(shared prompt, chosen response, rejected response) of two whole conversations (see the module)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    for cut in range(shared, 0, -1):
        if cut < len(chosen) and cut < len(rejected) and chosen[cut].role == rejected[cut].role == "assistant":
            return chosen[:cut], chosen[cut:], rejected[cut:]
    raise LayoutError("'chosen' and 'rejected' share no leading messages followed by an assistant message "
                      "in both (they do not share a prompt)")


def split_transcripts(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen response, rejected response) of two HH-RLHF transcripts, or None when they share no
    ``"\\n\\nAssistant:"`` turn: the prompt is the shared text before the last Assistant turn that both hold."""
    shared = os.path.commonprefix([chosen, rejected])
    idx = chosen.rfind(ASSISTANT, 0, len(shared))
    if idx < 0:
        return None
    return chosen[:idx], _drop_space(chosen[idx + len(ASSISTANT):]), _drop_space(rejected[idx + len(ASSISTANT):])


def _drop_space(s: str) -> str:
    return s[1:] if s.startswith(" ") else s

"""JSON with a nesting limit: deeply nested input is a `JSONTooDeep` (a ValueError), never a RecursionError.

Python's decoder recurses once per `[` or `{`, so `[[[[...` a few thousand deep exhausts the stack. Before
text reaches it, `check_depth` walks the brackets (skipping string contents) in C-speed regex steps and
refuses anything nested deeper than the limit. Torch-free, importable from both planes.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64
"""Deepest nesting accepted anywhere (a dataset record is 2 or 3 deep; a neuron set 2)."""

_TOKEN = re.compile(r'[\[\]{}"]')
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)  # from inside a string to (not past) its end


class JSONTooDeep(ValueError):
    """JSON nested deeper than the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"JSON nested deeper than {limit} levels")


def check_depth(text: str, start: int = 0, limit: int = MAX_JSON_DEPTH, *, one_value: bool = False) -> int:
    """Raise `JSONTooDeep` if brackets in `text[start:]` nest deeper than `limit`.

    With `one_value`, stop where the container opening at `start` closes and return the index just past
    it, or -1 when the text ends first (more input is needed). Otherwise return -1 after the whole text.
    Syntax is not checked (the decoder does that); only the nesting of brackets outside strings.
    """
    if not one_value and text.count("[", start) + text.count("{", start) <= limit:
        return -1  # cannot nest deeper than there are brackets
    depth, i, n = 0, start, len(text)
    while True:
        m = _TOKEN.search(text, i)
        if m is None:
            return -1
        c, i = m.group(), m.end()
        if c == '"':
            j = _STRING_REST.match(text, i).end()  # type: ignore[union-attr]  # always matches (may be empty)
            if j >= n or text[j] != '"':
                return -1  # the string runs past the end of the text
            i = j + 1
        elif c in "[{":
            depth += 1
            if depth > limit:
                raise JSONTooDeep(limit)
        else:
            depth -= 1
            if one_value and depth <= 0:
                return i


def loads(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` that refuses nesting deeper than `limit` (JSONTooDeep) instead of overflowing the stack."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    check_depth(text, 0, limit)
    return json.loads(text)

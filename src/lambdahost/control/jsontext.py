"""JSON parsing that fails cleanly on hostile input.

`json.loads` recurses once per nesting level, so `[` x 100,000 raises RecursionError rather
than ValueError. `loads` turns that into `TooDeep`, a ValueError, so every caller's ordinary
"could not parse" path answers it. `check` decides whether bytes are valid JSON without that
limit: an Invoke payload is handed to the function as-is, however deep it nests."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["TooDeep", "check", "loads"]


class TooDeep(ValueError):
    """The document nests deeper than the parser's recursion allows."""

    def __init__(self) -> None:
        super().__init__("the document nests too deeply to be parsed")


def loads(data: str | bytes | bytearray) -> Any:
    """`json.loads`, with too-deep nesting reported as `TooDeep` (a ValueError)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise TooDeep() from None


def check(data: str | bytes | bytearray) -> None:
    """Raise ValueError unless `data` is one JSON document (as `json.loads` reads it)."""
    try:
        json.loads(data)
        return
    except RecursionError:
        pass  # valid or not, it nests deeply: scan it without recursion
    if isinstance(data, bytes | bytearray):
        # What json.loads does with bytes; UnicodeDecodeError is a ValueError.
        text = bytes(data).decode(json.detect_encoding(data), "surrogatepass")
    else:
        text = data
    if not _scan(text):
        raise ValueError("Expecting a well-formed JSON document")


# The grammar, token by token. Runs of "[" and of closers are one token each, so the usual
# deep documents ("[[[[…]]]]") cost a few regex matches, not one per level.
_WS = r"[ \t\n\r]*"
_TOKEN = re.compile(
    _WS
    + r"""(?:
        (?P<arrays>\[(?:[ \t\n\r]*\[)*)
      | (?P<object>\{)
      | (?P<closers>[\]}](?:[ \t\n\r]*[\]}])*)
      | (?P<comma>,)
      | (?P<colon>:)
      | (?P<string>"(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")
      | (?P<scalar>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?
                  |true|false|null|NaN|-?Infinity)
    )""",
    re.VERBOSE,
)
_SPACES = re.compile(r"[ \t\n\r]+")
_OPENER_OF = str.maketrans("]}", "[{")

# Parser states: what may come next.
_VALUE, _VALUE_OR_END, _KEY, _KEY_OR_END, _COLON, _AFTER = range(6)


def _scan(text: str) -> bool:
    stack: list[str] = []  # open containers, "[" or "{"
    state = _VALUE
    pos = 0
    end = len(text)
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            # Only trailing whitespace may follow one complete top-level value.
            rest = text[pos:].strip(" \t\n\r")
            return not rest and state == _AFTER and not stack
        pos = match.end()
        kind = match.lastgroup
        if kind == "arrays":
            if state not in (_VALUE, _VALUE_OR_END):
                return False
            stack.extend("[" * match.group().count("["))
            state = _VALUE_OR_END
        elif kind == "object":
            if state not in (_VALUE, _VALUE_OR_END):
                return False
            stack.append("{")
            state = _KEY_OR_END
        elif kind == "closers":
            closers = _SPACES.sub("", match.group(kind))
            first = closers[0]
            if not (
                state == _AFTER
                or (state == _VALUE_OR_END and first == "]")
                or (state == _KEY_OR_END and first == "}")
            ):
                return False
            count = len(closers)
            if count > len(stack):
                return False
            expected = "".join(reversed(stack[-count:]))
            if closers.translate(_OPENER_OF) != expected:
                return False
            del stack[-count:]
            state = _AFTER
        elif kind == "comma":
            if state != _AFTER or not stack:
                return False
            state = _VALUE if stack[-1] == "[" else _KEY
        elif kind == "colon":
            if state != _COLON:
                return False
            state = _VALUE
        elif kind == "string":
            if state in (_KEY, _KEY_OR_END):
                state = _COLON
            elif state in (_VALUE, _VALUE_OR_END):
                state = _AFTER
            else:
                return False
        else:  # scalar
            if state not in (_VALUE, _VALUE_OR_END):
                return False
            state = _AFTER
        if pos >= end:
            return state == _AFTER and not stack

"""Why a document is not JSON, worded as Lambda's parser (Java's Jackson) words it.

Lambda answers an Invoke whose payload is not JSON with `InvalidRequestContentException`
and Jackson's message, e.g. (as AWS answered it, quoted in
https://github.com/alexcasalboni/aws-lambda-power-tuning/issues/148):

    Could not parse request body into json: Could not parse payload into json: Unrecognized
    token 'test': was expecting (JSON String, Number, Array, Object or token 'null', 'true' or
    'false')\\n at [Source: (byte[])"test data"; line: 1, column: 6]

`describe` finds the first error with Python's parser and words it as Jackson 2.x does for
the usual mistakes; the location is Jackson's (1-based, in bytes, just past what it read)."""

from __future__ import annotations

import json

VALUES = "(JSON String, Number, Array, Object or token 'null', 'true' or 'false')"
_SNIPPET = 500  # Jackson shows the first 500 bytes of the source
_TOKEN_MAX = 256  # and at most this much of an unrecognized token


def describe(data: bytes) -> str:
    """Jackson's message for the first syntax error in `data` (which must be invalid)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start]
        if 0x80 <= bad < 0xC0 or bad >= 0xF8:
            return _at(data, exc.start + 1, f"Invalid UTF-8 start byte 0x{bad:x}")
        follow = data[exc.start + 1] if exc.start + 1 < len(data) else None
        if follow is None:
            return _at(data, len(data), "Unexpected end-of-input in VALUE_STRING")
        return _at(data, exc.start + 2, f"Invalid UTF-8 middle byte 0x{follow:x}")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return _word(data, text, exc.msg, exc.pos)
    except RecursionError:
        pass
    return _at(data, len(data), "Unexpected end-of-input")  # (deep and broken: rare)


def _word(data: bytes, text: str, msg: str, pos: int) -> str:
    def at(consumed_chars: int, message: str) -> str:
        return _at(data, len(text[:consumed_chars].encode()), message)

    if pos >= len(text) or msg.startswith("Unterminated string"):
        return _end_of_input(data, text, pos if pos < len(text) else len(text))
    char = text[pos]
    if msg == "Expecting value":
        if char in "]},":
            return at(pos + 1, f"Unexpected character ({_desc(char)}): expected a value")
        if char.isalpha() or char in "_$":
            end = pos
            while end < len(text) and (text[end].isalnum() or text[end] in "_$"):
                end += 1
            token = text[pos:end]
            if len(token) > _TOKEN_MAX:
                token = token[:_TOKEN_MAX] + "..."
            consumed = min(end + 1, len(text))  # Jackson also reads the character after it
            return at(consumed, f"Unrecognized token '{token}': was expecting {VALUES}")
        return at(pos + 1, f"Unexpected character ({_desc(char)}): expected a valid value {VALUES}")
    if msg == "Expecting ',' delimiter":
        kind = "Object" if _innermost(text, pos)[0] == "{" else "Array"
        return at(
            pos + 1,
            f"Unexpected character ({_desc(char)}): was expecting comma to separate {kind} entries",
        )
    if msg == "Expecting ':' delimiter":
        return at(
            pos + 1,
            f"Unexpected character ({_desc(char)}): was expecting a colon to separate field "
            "name and value",
        )
    if msg.startswith("Expecting property name"):
        return at(
            pos + 1,
            f"Unexpected character ({_desc(char)}): was expecting double-quote to start field name",
        )
    if msg.startswith("Invalid control character"):
        return at(
            pos + 1,
            f"Illegal unquoted character ({_desc(char)}): has to be escaped using backslash "
            "to be included in string value",
        )
    if msg.startswith("Invalid \\escape") and pos + 1 < len(text):
        escaped = text[pos + 1]
        return at(pos + 2, f"Unrecognized character escape {_desc(escaped)}")
    # "Extra data" and the rest: what follows one complete value.
    return at(
        pos + 1,
        f"Unexpected character ({_desc(char)}): Expected space separating root-level values",
    )


def _end_of_input(data: bytes, text: str, pos: int) -> str:
    opener, start = _innermost(text, len(text))
    if opener == '"':
        return _at(
            data,
            len(data),
            "Unexpected end-of-input: was expecting closing quote for a string value",
        )
    if opener is None:
        return _at(data, len(data), "Unexpected end-of-input")
    kind = "Object" if opener == "{" else "Array"
    marker = _location(data, len(text[:start].encode()), eof=True)
    return _at(
        data,
        len(data),
        f"Unexpected end-of-input: expected close marker for {kind} (start marker at {marker})",
    )


def _innermost(text: str, end: int) -> tuple[str | None, int]:
    """The innermost container (or string) still open at `end`, and where it opened."""
    stack: list[tuple[str, int]] = []
    i = 0
    while i < end:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= end:
                return '"', i
            i = j
        elif c in "[{":
            stack.append((c, i))
        elif c in "]}" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else (None, 0)


def _desc(char: str) -> str:
    """Jackson's `_getCharDesc`."""
    code = ord(char)
    if code < 32 or 127 <= code < 160:
        return f"(CTRL-CHAR, code {code})"
    if code > 255:
        return f"'{char}' (code {code} / 0x{code:x})"
    return f"'{char}' (code {code})"


def _at(data: bytes, consumed: int, message: str) -> str:
    return f"{message}\n at {_location(data, consumed, eof=consumed >= len(data))}"


def _location(data: bytes, consumed: int, eof: bool = False) -> str:
    """`[Source: (byte[])"…"; line: L, column: C]` after `consumed` bytes were read. Jackson
    counts a line when it skips a line feed as whitespace, not when it reads the offending
    character itself, which may be one."""
    rows_to = consumed if eof else max(consumed - 1, 0)
    line = data.count(b"\n", 0, rows_to) + 1
    row_start = data.rfind(b"\n", 0, rows_to) + 1
    column = consumed - row_start + 1
    shown = data[:_SNIPPET].decode("utf-8", "replace")
    more = f"[truncated {len(data) - _SNIPPET} bytes]" if len(data) > _SNIPPET else ""
    return f'[Source: (byte[])"{shown}"{more}; line: {line}, column: {column}]'

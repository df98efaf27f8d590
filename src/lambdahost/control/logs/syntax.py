"""What CloudWatch Logs clients send and get back besides data: errors, filter patterns and
paging tokens."""

from __future__ import annotations

import base64
import binascii
import shlex
from dataclasses import dataclass

from lambdahost.errors import LambdaError

TOKEN_TS_MAX = 2**63 - 1  # SQLite's (and PostgreSQL's) largest integer

Position = tuple[int, int]  # (timestamp ms, row id): the total order of events
HEAD: Position = (0, 0)  # before every event
TAIL: Position = (TOKEN_TS_MAX, 0)  # after every event


class LogsError(LambdaError):
    """Logs errors travel as HTTP 400 with a `__type`, whatever their kind."""

    status = 400


class ResourceNotFound(LogsError):
    code = "ResourceNotFoundException"


class ResourceAlreadyExists(LogsError):
    code = "ResourceAlreadyExistsException"


class InvalidParameter(LogsError):
    code = "InvalidParameterException"


# --- filter patterns -------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterPattern:
    """CloudWatch's unstructured term syntax: every plain term must appear (case-sensitive),
    `"quoted phrases"` match as a whole, `-term` must not appear, and when `?term`s are given
    at least one of them must appear."""

    required: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FilterPattern:
        text = (text or "").strip()
        if not text or text == '""':
            return cls()
        if text[0] in "{[" or text.startswith("%"):
            raise InvalidParameter(
                'lambdahost supports only term filter patterns (terms, "phrases", ?any, -not); '
                "JSON, space-delimited and regex patterns are not implemented."
            )
        try:
            words = shlex.split(text, posix=True)
        except ValueError:
            raise InvalidParameter("Invalid filter pattern: unbalanced quotes.") from None
        required: list[str] = []
        excluded: list[str] = []
        any_of: list[str] = []
        for word in words:
            if word.startswith("?") and len(word) > 1:
                any_of.append(word[1:])
            elif word.startswith("-") and len(word) > 1:
                excluded.append(word[1:])
            elif word:
                required.append(word)
        return cls(tuple(required), tuple(excluded), tuple(any_of))

    @property
    def matches_everything(self) -> bool:
        return not (self.required or self.excluded or self.any_of)

    def matches(self, message: str) -> bool:
        return (
            all(term in message for term in self.required)
            and not any(term in message for term in self.excluded)
            and (not self.any_of or any(term in message for term in self.any_of))
        )


# --- tokens ----------------------------------------------------------------------------------


def position_token(direction: str, position: Position) -> str:
    """`f/…` or `b/…` followed by 56 digits, the shape AWS uses for GetLogEvents tokens."""
    ts, row_id = position
    return f"{direction}/{min(max(ts, 0), TOKEN_TS_MAX):020d}{max(row_id, 0):036d}"


def parse_position_token(token: str) -> tuple[str, Position]:
    direction, _, digits = token.partition("/")
    if direction not in ("f", "b") or len(digits) != 56 or not digits.isdigit():
        raise InvalidParameter("The specified nextToken is invalid.")
    return direction, (min(int(digits[:20]), TOKEN_TS_MAX), min(int(digits[20:]), TOKEN_TS_MAX))


def opaque_token(*parts: object) -> str:
    text = "\x1f".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(text.encode()).decode()


def parse_opaque_token(token: str, count: int) -> list[str]:
    try:
        parts = base64.urlsafe_b64decode(token.encode()).decode().split("\x1f")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        parts = []
    if len(parts) != count:
        raise InvalidParameter("The specified nextToken is invalid.")
    return parts


def token_number(text: str) -> int:
    """A number carried in a paging token. The token comes back from the client, so it is
    checked like input: digits only, within a 64-bit integer (SQLite's, too)."""
    digits = text[1:] if text.startswith("-") else text
    if not digits.isdigit() or len(digits) > 19 or not -(2**63) <= int(text) < 2**63:
        raise InvalidParameter("The specified nextToken is invalid.")
    return int(text)


def event_id(row_id: int) -> str:
    # Stable and ordered like AWS's 56-digit ids: derived from the row's primary key.
    return f"{row_id:056d}"

"""Column types that behave the same on SQLite and PostgreSQL.

Used by `tables.py` and by the migrations, so both dialects get the same schema semantics:

- `Name(n)` / `Message()`: strings. SQLite compares and sorts them byte by byte (BINARY);
  PostgreSQL by the database's default collation, often a linguistic one (`a < B < b`, `_`
  and `/` ignored at first), which would reorder listings and break name-keyed paging. On
  PostgreSQL they carry `COLLATE "C"`, which is byte order for UTF-8 too. PostgreSQL also
  cannot store NUL characters in text, which SQLite (and Lambda's APIs) accept: there they
  are escaped on the way in and restored on the way out (see `escape_nul`).
- `RowId`: a 64-bit auto-incrementing key. SQLite's `INTEGER PRIMARY KEY` already is one
  (and must be spelled INTEGER to alias the rowid); PostgreSQL gets BIGINT (BIGSERIAL).

On SQLite these are the plain types, with no per-value processing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

# Introduces an escape in stored text: ESC + "0" is NUL, ESC + ESC is ESC itself.
# A private-use character, so real text rarely pays for the escape.
ESC = "\ue000"
_ESCAPED_NUL = ESC + "0"


def escape_nul(value: str) -> str:
    if "\x00" not in value and ESC not in value:
        return value
    return value.replace(ESC, ESC + ESC).replace("\x00", _ESCAPED_NUL)


def unescape_nul(value: str) -> str:
    if ESC not in value:
        return value
    out: list[str] = []
    i = 0
    while (j := value.find(ESC, i)) != -1:
        out.append(value[i:j])
        escaped = value[j + 1 : j + 2]
        out.append("\x00" if escaped == "0" else escaped)
        i = j + 2
    out.append(value[i:])
    return "".join(out)


class _PostgresString(TypeDecorator[str]):
    """PostgreSQL's side of `Name`: byte-order collation, NUL escaped."""

    impl: Any = String
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        super().__init__(length=length, collation="C")
        self.length = length  # part of the statement cache key

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else escape_nul(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else unescape_nul(value)


class _PostgresText(_PostgresString):
    """PostgreSQL's side of `Message`."""

    impl = Text


def Name(length: int) -> TypeEngine[str]:  # noqa: N802 - used like a type
    """A bounded string (names, ids, free text up to `length`)."""
    return String(length).with_variant(_PostgresString(length), "postgresql")


def Message() -> TypeEngine[str]:  # noqa: N802 - used like a type
    """Unbounded text (log messages)."""
    return Text().with_variant(_PostgresText(), "postgresql")


RowId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")

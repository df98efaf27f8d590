"""Input validation from a botocore shape: every protocol checks requests the same way.

One `ValidationException` lists every failure, worded as AWS words them."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from botocore.model import Shape

from lambdahost.errors import ValidationError


def validate(shape: Shape, params: dict[str, Any]) -> None:
    """Check the model's constraints; raise one ValidationException listing every failure."""
    problems: list[str] = []
    _check_structure(shape, params, "", problems)
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise ValidationError(f"{count} validation {noun} detected: " + "; ".join(problems))


def _check_structure(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"Value at '{path}' failed to satisfy constraint: Member must be an object")
        return
    for required in shape.required_members:
        if value.get(required) is None:
            where = _member_path(path, required)
            problems.append(
                f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
            )
    for name, member in shape.members.items():
        if name in value and value[name] is not None:
            _check(member, value[name], _member_path(path, name), problems)


_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _member_path(path: str, name: str) -> str:
    lowered = name[0].lower() + name[1:]
    return f"{path}.{lowered}" if path else lowered


def _check(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    meta = shape.metadata
    kind = shape.type_name
    shown = "*** sensitive ***" if meta.get("sensitive") else value
    if kind == "string":
        if not isinstance(value, str):
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must be a string"
            )
            return
        if "enum" in meta and value not in meta["enum"]:
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"enum value set: [{', '.join(meta['enum'])}]"
            )
        if "min" in meta and len(value) < meta["min"]:
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must have "
                f"length greater than or equal to {meta['min']}"
            )
        if "max" in meta and len(value) > meta["max"]:
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must have "
                f"length less than or equal to {meta['max']}"
            )
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and not pattern.fullmatch(value):
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"regular expression pattern: {meta['pattern']}"
            )
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must be a number"
            )
            return
        # The wire type bounds every number, so none overflows a 64-bit column further on.
        low, high = _INT_RANGE[kind]
        low, high = max(low, meta.get("min", low)), min(high, meta.get("max", high))
        if value < low:
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value greater than or equal to {low}"
            )
        if value > high:
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value less than or equal to {high}"
            )
    elif kind == "blob":
        if not isinstance(value, bytes | bytearray):
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must be base64 data"
            )
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                "Member must be a boolean"
            )
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must be a list"
            )
            return
        if "max" in meta and len(value) > meta["max"]:
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must have length less "
                f"than or equal to {meta['max']}"
            )
        if "min" in meta and len(value) < meta["min"]:
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must have length greater "
                f"than or equal to {meta['min']}"
            )
        for item in value:
            _check(shape.member, item, f"{path}.member", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"Value at '{path}' failed to satisfy constraint: Member must be a map")
            return
        for k, v in value.items():
            _check(shape.key, k, f"{path}.key", problems)
            if v is not None:
                _check(shape.value, v, f"{path}.value", problems)
    elif kind == "structure":
        _check_structure(shape, value, path, problems)


@cache
def _pattern(java_regex: str) -> re.Pattern[str] | None:
    translated = java_regex
    if r"\p{" in translated:
        # Python's `re` lacks Java's \p{..} classes; the tag patterns, their only users,
        # mean letters, separators and digits, which \w and \s cover.
        translated = translated.replace(r"[\p{L}\p{Z}\p{N}", r"[\w\s").replace("_.", ".")
    try:
        return re.compile(translated, re.DOTALL)
    except re.error:
        pass
    # Java reads `-` after a class escape (`[\w-_]`) as a literal; Python refuses it.
    try:
        return re.compile(re.sub(r"(\\[wdsWDS])-", r"\1\\-", translated), re.DOTALL)
    except re.error:
        return None  # a pattern we cannot translate is not checked, rather than fail the call

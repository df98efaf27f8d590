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


# Enums AWS lists in another order than botocore's model (recorded answer, localstack
# test_lambda.snapshot.json: test_lambda_url_invalid_invoke_mode).
_ENUM_ORDER = {"InvokeMode": ("RESPONSE_STREAM", "BUFFERED")}

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
            listed = _ENUM_ORDER.get(shape.name, meta["enum"])
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"enum value set: [{', '.join(listed)}]"
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
    elif kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must be a number"
            )
            return
        if "max" in meta and value > meta["max"]:
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value less than or equal to {meta['max']}"
            )
        if "min" in meta and value < meta["min"]:
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value greater than or equal to {meta['min']}"
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
        # AWS words a bad key or value once for the whole map, listing every constraint of
        # the member (recorded answer, localstack test_lambda_api.snapshot.json:
        # routing_config_exc_toohigh, routing_config_exc_version_latest).
        for part, member, items in (
            ("keys", shape.key, list(value)),
            ("value", shape.value, list(value.values())),
        ):
            failed: list[str] = []
            for item in items:
                _check(member, item, "", failed)
            if failed or (part == "value" and any(v is None for v in items)):
                shown = "{" + ", ".join(f"{k}={_java(v)}" for k, v in value.items()) + "}"
                problems.append(
                    f"Value '{shown}' at '{path}' failed to satisfy constraint: Map {part} must "
                    f"satisfy constraint: [{', '.join(_constraints(member, part == 'value'))}]"
                )
    elif kind == "structure":
        _check_structure(shape, value, path, problems)


def _constraints(shape: Shape, not_null: bool) -> list[str]:
    """Every constraint of a map's key or value shape, in the order AWS lists them."""
    meta = shape.metadata
    found: list[str] = []
    if shape.type_name == "string":
        if "max" in meta:
            found.append(f"Member must have length less than or equal to {meta['max']}")
        if "min" in meta:
            found.append(f"Member must have length greater than or equal to {meta['min']}")
        if "pattern" in meta:
            found.append(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    else:
        if "max" in meta:
            found.append(f"Member must have value less than or equal to {meta['max']}")
        if "min" in meta:
            found.append(f"Member must have value greater than or equal to {meta['min']}")
    if not_null:
        found.append("Member must not be null")
    return found


def _java(value: Any) -> str:
    """A map value as Java's `toString` shows it."""
    if isinstance(value, float):
        return repr(value)
    return "null" if value is None else str(value)


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

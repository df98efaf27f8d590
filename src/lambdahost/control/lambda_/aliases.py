"""Aliases: named pointers to a version, optionally splitting traffic with a second one."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lambdahost.control.lambda_.functions import LATEST, FunctionService, check_revision
from lambdahost.control.lambda_.paging import page
from lambdahost.errors import (
    InvalidParameterValue,
    ResourceConflict,
    ResourceNotFound,
    ValidationError,
)
from lambdahost.store.tables import AliasRow, FunctionRow, VersionRow

_NAME = re.compile(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$")


class AliasService:
    def __init__(self, functions: FunctionService) -> None:
        self.functions = functions
        self.db = functions.db

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        fn_name = self.functions.ref(params["FunctionName"]).name
        name = params["Name"]
        _check_name(name)
        with self.db.session() as s:
            self._function(s, fn_name)
            routing = self._routing(
                s, fn_name, params["FunctionVersion"], params.get("RoutingConfig")
            )
            if s.get(AliasRow, (fn_name, name)) is not None:
                raise ResourceConflict(f"Alias already exists: {self.functions.arn(fn_name, name)}")
            row = AliasRow(
                function_name=fn_name,
                name=name,
                function_version=params["FunctionVersion"],
                description=params.get("Description") or "",
                routing=routing,
                revision_id=str(uuid.uuid4()),
            )
            s.add(row)
            return self._render(row)

    def get(self, function: str, name: str) -> dict[str, Any]:
        fn_name = self.functions.ref(function).name
        with self.db.session() as s:
            return self._render(self._alias(s, fn_name, name))

    def update(self, params: dict[str, Any]) -> dict[str, Any]:
        fn_name = self.functions.ref(params["FunctionName"]).name
        with self.db.session() as s:
            row = self._alias(s, fn_name, params["Name"])
            check_revision(params.get("RevisionId"), row.revision_id)
            version = params.get("FunctionVersion") or row.function_version
            routing_config = params.get("RoutingConfig")
            if routing_config is None and params.get("FunctionVersion"):
                routing_config = {"AdditionalVersionWeights": row.routing}
            if routing_config is not None or params.get("FunctionVersion"):
                row.routing = self._routing(s, fn_name, version, routing_config)
            row.function_version = version
            if params.get("Description") is not None:
                row.description = params["Description"]
            row.revision_id = str(uuid.uuid4())
            return self._render(row)

    def delete(self, function: str, name: str) -> None:
        fn_name = self.functions.ref(function).name
        with self.db.session() as s:
            self._function(s, fn_name)
            row = s.get(AliasRow, (fn_name, name))
            if row is not None:
                s.delete(row)

    def list(
        self, function: str, version: str | None, marker: str | None, max_items: int | None
    ) -> dict[str, Any]:
        fn_name = self.functions.ref(function).name
        with self.db.session() as s:
            self._function(s, fn_name)
            query = (
                select(AliasRow).where(AliasRow.function_name == fn_name).order_by(AliasRow.name)
            )
            if version:
                query = query.where(AliasRow.function_version == version)
            rows = [self._render(r) for r in s.scalars(query)]
        return page(rows, "Aliases", marker, max_items, most=10_000)

    def resolve(self, function: str, name: str) -> tuple[str, str]:
        """The version an invoke of `function:name` runs now (weighted), and the alias ARN."""
        primary, routing, arn = self.routing(function, name)
        return pick_version(primary, routing), arn

    def routing(self, function: str, name: str) -> tuple[str, dict[str, float], str]:
        """The alias's primary version, its extra version weights, and its ARN."""
        fn_name = self.functions.ref(function).name
        with self.db.session() as s:
            row = self._alias(s, fn_name, name)
            return row.function_version, dict(row.routing), self.functions.arn(fn_name, name)

    def version_for(self, function: str, qualifier: str | None) -> str | None:
        """The version a qualifier names: itself, or an alias's primary version."""
        qualifier = self.functions.ref(function).qualified(qualifier)
        if qualifier is None or qualifier == LATEST or qualifier.isdigit():
            return qualifier
        fn_name = self.functions.ref(function).name
        with self.db.session() as s:
            row = s.get(AliasRow, (fn_name, qualifier))
            if row is None:  # the function or its alias: the ARN names what was asked for
                raise ResourceNotFound(
                    f"Function not found: {self.functions.arn(fn_name, qualifier)}"
                )
            return row.function_version

    def exists(self, function_name: str, name: str) -> bool:
        with self.db.session() as s:
            return s.get(AliasRow, (function_name, name)) is not None

    def _routing(
        self, s: Session, fn_name: str, version: str, config: dict[str, Any] | None
    ) -> dict[str, float]:
        self._version(s, fn_name, version)
        weights = dict((config or {}).get("AdditionalVersionWeights") or {})
        if not weights:
            return {}
        if len(weights) > 1:
            raise InvalidParameterValue(
                "Number of items in AdditionalVersionWeights cannot be greater than 1"
            )
        if version == LATEST:
            raise InvalidParameterValue(
                "$LATEST is not supported for an alias pointing to more than 1 version"
            )
        for extra, weight in weights.items():
            if not re.fullmatch(r"[0-9]{1,1024}", extra):
                raise _bad_weights(
                    weights,
                    "keys",
                    "Member must have length less than or equal to 1024, Member must have "
                    "length greater than or equal to 1, Member must satisfy regular expression "
                    "pattern: [0-9]+",
                )
            if extra == version:
                raise InvalidParameterValue(
                    f"Invalid function version {extra}. Function version {extra} is already "
                    "included in routing configuration."
                )
            if not 0.0 <= float(weight) <= 1.0:
                raise _bad_weights(
                    weights,
                    "value",
                    "Member must have value less than or equal to 1.0, Member must have value "
                    "greater than or equal to 0.0, Member must not be null",
                )
            self._version(s, fn_name, extra)
        return {k: float(v) for k, v in weights.items()}

    def _function(self, s: Session, fn_name: str) -> FunctionRow:
        fn = s.get(FunctionRow, fn_name)
        if fn is None:
            raise ResourceNotFound(f"Function not found: {self.functions.arn(fn_name)}")
        return fn

    def _version(self, s: Session, fn_name: str, version: str) -> None:
        self._function(s, fn_name)
        if s.get(VersionRow, (fn_name, version)) is None:
            raise ResourceNotFound(f"Function not found: {self.functions.arn(fn_name, version)}")

    def _alias(self, s: Session, fn_name: str, name: str) -> AliasRow:
        self._function(s, fn_name)
        row = s.get(AliasRow, (fn_name, name))
        if row is None:
            # https://docs.aws.amazon.com/lambda/latest/api/API_GetAlias.html (AWS's wording)
            raise ResourceNotFound(f"Cannot find alias arn: {self.functions.arn(fn_name, name)}")
        return row

    def _render(self, row: AliasRow) -> dict[str, Any]:
        alias: dict[str, Any] = {
            "AliasArn": self.functions.arn(row.function_name, row.name),
            "Name": row.name,
            "FunctionVersion": row.function_version,
            "Description": row.description,
            "RevisionId": row.revision_id,
        }
        if row.routing:
            alias["RoutingConfig"] = {"AdditionalVersionWeights": dict(row.routing)}
        return alias


def pick_version(primary: str, routing: dict[str, float]) -> str:
    """Weighted routing: each extra version gets its weight's share, the primary the rest."""
    roll = random.random()
    for extra, weight in routing.items():
        if roll < weight:
            return extra
        roll -= weight
    return primary


def _bad_weights(weights: dict[str, Any], part: str, constraints: str) -> ValidationError:
    """AWS's wording for a bad AdditionalVersionWeights key or value (recorded answers,
    localstack test_lambda_api.snapshot.json: routing_config_exc_toohigh/_version_latest)."""
    shown = "{" + ", ".join(f"{k}={float(v)!r}" for k, v in weights.items()) + "}"
    return ValidationError(
        f"1 validation error detected: Value '{shown}' at 'routingConfig.additionalVersionWeights' "
        f"failed to satisfy constraint: Map {part} must satisfy constraint: [{constraints}]"
    )


def _check_name(name: str) -> None:
    if name == LATEST or not _NAME.match(name):
        raise InvalidParameterValue(
            f"Alias name {name} is invalid: it must be 1-128 letters, digits, '-' or '_', "
            "and not all digits or $LATEST."
        )

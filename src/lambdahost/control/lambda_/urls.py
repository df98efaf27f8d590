"""Function URLs: one HTTP endpoint per function or alias, and its auth, CORS and mode.

A URL's id is derived from (account, region, function, qualifier), so it is stable: the
same function and alias get the same URL after a restart or a delete and re-create. The
endpoint is `http://<id>.lambda-url.<region>.localhost:<port>/`; `api/function_urls.py`
serves it (and the DNS-free form `/_lambdahost/url/<id>/…`)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lambdahost.control.lambda_.changes import FunctionChanges
from lambdahost.control.lambda_.functions import LATEST, FunctionService
from lambdahost.control.lambda_.paging import page
from lambdahost.errors import (
    AccessDenied,
    InvalidParameterValue,
    ResourceConflict,
    ResourceNotFound,
    ValidationError,
)
from lambdahost.store.tables import AliasRow, FunctionRow, FunctionUrlRow

CORS_METHODS = frozenset(("GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "*"))
LIST_MAX = 50


@dataclass(frozen=True)
class FunctionUrl:
    """A URL as the serving side needs it."""

    url_id: str
    function_name: str
    qualifier: str  # "" for the unqualified function, else an alias name
    auth_type: str  # NONE | AWS_IAM
    cors: dict[str, Any] | None
    invoke_mode: str  # BUFFERED | RESPONSE_STREAM (served buffered for now)


class UrlService:
    def __init__(self, functions: FunctionService, changes: FunctionChanges) -> None:
        self.functions = functions
        self.db = functions.db
        self.region = functions.settings.region
        changes.subscribe(self.forget_removed)

    # -- the API --------------------------------------------------------------------------

    def create(self, params: dict[str, Any], port: int | None) -> dict[str, Any]:
        name, qualifier = self._target(params["FunctionName"], params.get("Qualifier"))
        cors = _checked_cors(params.get("Cors"))
        now = _timestamp()
        with self.db.session() as s:
            self._check_exists(s, name, qualifier)
            if s.get(FunctionUrlRow, (name, qualifier)) is not None:
                raise ResourceConflict(
                    "Failed to create function url config for [functionArn = "
                    f"{self._arn(name, qualifier)}]. Error message:  FunctionUrlConfig exists "
                    "for this Lambda function"
                )
            row = FunctionUrlRow(
                function_name=name,
                qualifier=qualifier,
                url_id=url_id(self.functions.settings.account_id, self.region, name, qualifier),
                auth_type=params["AuthType"],
                cors=cors,
                invoke_mode=params.get("InvokeMode") or "",  # "": never set (BUFFERED)
                created=now,
                last_modified=now,
            )
            s.add(row)
            rendered = self._render(row, port, implicit_mode=False)
        rendered.pop("LastModifiedTime")  # CreateFunctionUrlConfig does not return it
        return rendered

    def get(self, function: str, qualifier: str | None, port: int | None) -> dict[str, Any]:
        name, qualifier = self._target(function, qualifier)
        with self.db.session() as s:
            return self._render(self._row(s, name, qualifier), port)

    def update(self, params: dict[str, Any], port: int | None) -> dict[str, Any]:
        name, qualifier = self._target(params["FunctionName"], params.get("Qualifier"))
        with self.db.session() as s:
            row = self._row(s, name, qualifier)
            if params.get("AuthType"):
                row.auth_type = params["AuthType"]
            if params.get("Cors") is not None:
                row.cors = _checked_cors(params["Cors"])
            if params.get("InvokeMode"):
                row.invoke_mode = params["InvokeMode"]
            row.last_modified = _timestamp()
            return self._render(row, port, implicit_mode=False)

    def delete(self, function: str, qualifier: str | None) -> None:
        name, qualifier = self._target(function, qualifier)
        with self.db.session() as s:
            s.delete(self._row(s, name, qualifier))

    def list(
        self, function: str, marker: str | None, max_items: int | None, port: int | None
    ) -> dict[str, Any]:
        name = self.functions.ref(function).name
        with self.db.session() as s:
            self._check_exists(s, name, "")
            query = (
                select(FunctionUrlRow)
                .where(FunctionUrlRow.function_name == name)
                .order_by(FunctionUrlRow.qualifier)
            )
            rows = [self._render(r, port) for r in s.scalars(query)]
        return page(rows, "FunctionUrlConfigs", marker, max_items, most=LIST_MAX)

    # -- serving --------------------------------------------------------------------------

    def owns(self, url_id: str) -> bool:
        """Whether a URL with this id was created in this account (whatever its state)."""
        with self.db.session() as s:
            query = select(FunctionUrlRow.url_id).where(FunctionUrlRow.url_id == url_id)
            return s.scalars(query).first() is not None

    def find(self, url_id: str) -> FunctionUrl | None:
        """The URL with this id, or None; AccessDenied when the alias it points at is gone."""
        with self.db.session() as s:
            row = s.scalars(select(FunctionUrlRow).where(FunctionUrlRow.url_id == url_id)).first()
            if row is None:
                return None
            if row.qualifier and s.get(AliasRow, (row.function_name, row.qualifier)) is None:
                raise AccessDenied("The alias of this function URL was deleted.")
            return FunctionUrl(
                url_id=row.url_id,
                function_name=row.function_name,
                qualifier=row.qualifier,
                auth_type=row.auth_type,
                cors=dict(row.cors) if row.cors else None,
                invoke_mode=row.invoke_mode or "BUFFERED",
            )

    def endpoint(self, url_id: str, port: int | None) -> str:
        suffix = f":{port}" if port else ""
        return f"http://{url_id}.lambda-url.{self.region}.localhost{suffix}/"

    def forget_removed(self, function_name: str) -> None:
        """Drop the URLs of a deleted function."""
        with self.db.session() as s:
            if s.get(FunctionRow, function_name) is not None:
                return
            rows = s.scalars(
                select(FunctionUrlRow).where(FunctionUrlRow.function_name == function_name)
            ).all()
            for row in rows:
                s.delete(row)

    # -- helpers --------------------------------------------------------------------------

    def _target(self, function: str, qualifier: str | None) -> tuple[str, str]:
        ref = self.functions.ref(function)
        qualifier = ref.qualified(qualifier) or ""
        if qualifier == LATEST or qualifier.isdigit():
            # Function URLs point at $LATEST (unqualified) or an alias, never at a version.
            raise ValidationError(
                f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "((?!^\\d+$)^[0-9a-zA-Z-_]+$)"
            )
        return ref.name, qualifier

    def _check_exists(self, s: Session, name: str, qualifier: str) -> None:
        # `qualifier` is "" or an alias here; AWS words a missing function or alias so.
        try:
            self.functions.require(s, name, qualifier)
        except ResourceNotFound:
            raise ResourceNotFound("Function does not exist") from None

    def _row(self, s: Session, name: str, qualifier: str) -> FunctionUrlRow:
        self._check_exists(s, name, qualifier)
        row = s.get(FunctionUrlRow, (name, qualifier))
        if row is None:
            raise ResourceNotFound("The resource you requested does not exist.")
        return row

    def _arn(self, name: str, qualifier: str) -> str:
        return self.functions.arn(name, qualifier or None)

    def _render(
        self, row: FunctionUrlRow, port: int | None, implicit_mode: bool = True
    ) -> dict[str, Any]:
        """The config as Get/List show it; Create and Update (`implicit_mode=False`) leave
        `InvokeMode` out while the caller never set it, as Lambda does (recorded AWS answers,
        localstack test_lambda_api.snapshot.json: test_url_config_lifecycle)."""
        config: dict[str, Any] = {
            "FunctionUrl": self.endpoint(row.url_id, port),
            "FunctionArn": self._arn(row.function_name, row.qualifier),
            "AuthType": row.auth_type,
            "CreationTime": row.created,
            "LastModifiedTime": row.last_modified,
        }
        if row.invoke_mode or implicit_mode:
            config["InvokeMode"] = row.invoke_mode or "BUFFERED"
        if row.cors:
            config["Cors"] = dict(row.cors)
        return config


def url_id(account_id: str, region: str, function_name: str, qualifier: str) -> str:
    """32 lowercase letters and digits, a pure function of what the URL points at."""
    digest = hashlib.sha256(f"{account_id}:{region}:{function_name}:{qualifier}".encode()).digest()
    return base64.b32encode(digest).decode().lower()[:32]


def _checked_cors(cors: dict[str, Any] | None) -> dict[str, Any] | None:
    if not cors:
        return None
    for method in cors.get("AllowMethods") or []:
        if method.upper() not in CORS_METHODS:
            raise InvalidParameterValue(
                f"Invalid Cors.AllowMethods value {method}: use GET, PUT, HEAD, POST, PATCH, "
                "DELETE or *."
            )
    for origin in cors.get("AllowOrigins") or []:
        if origin != "*" and "://" not in origin:
            raise InvalidParameterValue(
                f"Invalid Cors.AllowOrigins value {origin}: use * or scheme://host[:port]."
            )
    return {k: v for k, v in cors.items() if v is not None}


def _timestamp() -> str:
    """`2021-10-27T17:51:40.497108Z`, as function URL times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

"""Asynchronous invocation settings per function qualifier: retries, event age, destinations."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lambdahost.config import Settings
from lambdahost.control.lambda_.functions import LATEST, FunctionService
from lambdahost.control.lambda_.paging import page
from lambdahost.control.lambda_.targets import check_target
from lambdahost.control.lambda_.values import AsyncPolicy
from lambdahost.errors import InvalidParameterValue, ResourceNotFound
from lambdahost.store.tables import EventInvokeConfigRow, FunctionRow

SETTINGS = ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")
# Recorded AWS answers (localstack test_lambda_api.snapshot.json,
# test_lambda_eventinvokeconfig_exceptions: put_functionname_nootherargs, put_functionname_
# name_notfound, put_alias_doesnotexist, list_function_doesnotexist, update_eventinvokeconfig_
# function_doesnotexist).
NO_SETTINGS = "You must specify at least one of error handling or destination setting."
NO_FUNCTION = "The function doesn't exist."


class EventConfigService:
    def __init__(self, settings: Settings, functions: FunctionService) -> None:
        self.settings = settings
        self.functions = functions
        self.db = functions.db

    def put(self, params: dict[str, Any], *, merge: bool = False) -> dict[str, Any]:
        if not merge and all(params.get(key) is None for key in SETTINGS):
            raise InvalidParameterValue(NO_SETTINGS)  # before the function is looked up
        name, qualifier = self._target(
            params["FunctionName"], params.get("Qualifier"), missing_function=True
        )
        self.check_destinations(params.get("DestinationConfig") or {})
        with self.db.session() as s:
            row = s.get(EventInvokeConfigRow, (name, qualifier))
            if merge and row is None:
                self._row(s, name, qualifier)  # raises the AWS error
            config = dict(row.config) if (merge and row is not None) else {}
            for key in SETTINGS:
                if params.get(key) is not None:
                    config[key] = params[key]
            if row is None:
                row = EventInvokeConfigRow(
                    function_name=name,
                    qualifier=qualifier,
                    config=config,
                    last_modified_s=time.time(),
                )
                s.add(row)
            else:
                row.config, row.last_modified_s = config, time.time()
            return self._render(row)

    def get(self, identifier: str, qualifier: str | None) -> dict[str, Any]:
        name, qualifier = self._target(identifier, qualifier, missing_config=True)
        with self.db.session() as s:
            return self._render(self._row(s, name, qualifier))

    def delete(self, identifier: str, qualifier: str | None) -> None:
        name, qualifier = self._target(identifier, qualifier, missing_config=True)
        with self.db.session() as s:
            s.delete(self._row(s, name, qualifier))

    def list(self, identifier: str, marker: str | None, max_items: int | None) -> dict[str, Any]:
        name = self.functions.ref(identifier).name
        with self.db.session() as s:
            if s.get(FunctionRow, name) is None:
                raise ResourceNotFound(NO_FUNCTION)
            rows = [
                self._render(r)
                for r in s.scalars(
                    select(EventInvokeConfigRow)
                    .where(EventInvokeConfigRow.function_name == name)
                    .order_by(EventInvokeConfigRow.qualifier)
                )
            ]
        return page(rows, "FunctionEventInvokeConfigs", marker, max_items)

    def effective(self, name: str, qualifier: str | None) -> AsyncPolicy:
        """The policy an async invoke of `name:qualifier` runs with (defaults filled in)."""
        with self.db.session() as s:
            row = s.get(EventInvokeConfigRow, (name, qualifier or LATEST))
            return AsyncPolicy.parse(row.config if row else {})

    def check_destinations(self, destinations: dict[str, Any]) -> None:
        for key in ("OnSuccess", "OnFailure"):
            arn = (destinations.get(key) or {}).get("Destination")
            if arn:
                self.check_target(arn)

    def check_target(self, arn: str) -> None:
        """A destination ARN we can deliver to, or a clear 400."""
        check_target(self.settings, arn)

    def _target(
        self,
        identifier: str,
        qualifier: str | None,
        *,
        missing_config: bool = False,
        missing_function: bool = False,
    ) -> tuple[str, str]:
        """The function and qualifier; 404 unless both exist. Get and Delete word a missing
        function as a missing config (`missing_config`), Put and Update as a function that
        doesn't exist (`missing_function`), as AWS answers them."""
        ref = self.functions.ref(identifier)
        qualifier = ref.qualified(qualifier) or LATEST
        with self.db.session() as s:
            try:
                self.functions.require(s, ref.name, qualifier)
            except ResourceNotFound:
                if missing_config:
                    self._row(s, ref.name, qualifier)  # raises: there is no config either
                if missing_function:
                    raise ResourceNotFound(NO_FUNCTION) from None
                raise
        return ref.name, qualifier

    def _row(self, s: Session, name: str, qualifier: str) -> EventInvokeConfigRow:
        row = s.get(EventInvokeConfigRow, (name, qualifier))
        if row is None:
            raise ResourceNotFound(
                f"The function {self.functions.arn(name, qualifier)} doesn't have an "
                "EventInvokeConfig"
            )
        return row

    def _render(self, row: EventInvokeConfigRow) -> dict[str, Any]:
        return {
            "FunctionArn": self.functions.arn(row.function_name, row.qualifier),
            "LastModified": row.last_modified_s,
            **row.config,
        }

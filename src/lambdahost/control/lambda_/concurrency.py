"""Reserved and provisioned concurrency settings (the counting happens in `invoke/`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from lambdahost.control.clock import last_modified
from lambdahost.control.lambda_.functions import LATEST, FunctionService
from lambdahost.control.lambda_.values import ProvisionedConfig
from lambdahost.errors import InvalidParameterValue, ResourceNotFound
from lambdahost.store.tables import FunctionRow, ProvisionedConfigRow

MIN_UNRESERVED = 100


class ConcurrencyLimitExceeded(InvalidParameterValue):
    """AWS's body for this one has `message` but no `Type` (recorded answer, localstack
    test_lambda_api.snapshot.json: test_function_concurrency_limits)."""

    error_type = None


class ConcurrencyService:
    def __init__(
        self,
        functions: FunctionService,
        account_limit: int,
        on_reserved_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.functions = functions
        self.db = functions.db
        self.account_limit = account_limit
        self._on_reserved_change = on_reserved_change  # the limiter counts against these

    # -- reserved -------------------------------------------------------------------------

    def put_reserved(self, identifier: str, value: int) -> dict[str, Any]:
        name = self.functions.ref(identifier).name
        with self.db.session() as s:
            fn = s.get(FunctionRow, name)
            if fn is None:
                raise ResourceNotFound(f"Function not found: {self.functions.arn(name)}")
            others = s.scalar(
                select(func.coalesce(func.sum(FunctionRow.reserved_concurrency), 0)).where(
                    FunctionRow.name != name
                )
            )
            if self.account_limit - int(others or 0) - value < MIN_UNRESERVED:
                raise ConcurrencyLimitExceeded(
                    "Specified ReservedConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
                )
            fn.reserved_concurrency = value
        self._on_reserved_change()
        return {"ReservedConcurrentExecutions": value}

    def get_reserved(self, identifier: str) -> dict[str, Any]:
        name = self.functions.ref(identifier).name
        with self.db.session() as s:
            fn = s.get(FunctionRow, name)
            if fn is None:
                raise ResourceNotFound(f"Function not found: {self.functions.arn(name)}")
            if fn.reserved_concurrency is None:
                return {}
            return {"ReservedConcurrentExecutions": fn.reserved_concurrency}

    def delete_reserved(self, identifier: str) -> None:
        name = self.functions.ref(identifier).name
        with self.db.session() as s:
            fn = s.get(FunctionRow, name)
            if fn is None:
                raise ResourceNotFound(f"Function not found: {self.functions.arn(name)}")
            fn.reserved_concurrency = None
        self._on_reserved_change()

    def reserved_by_function(self) -> dict[str, int]:
        with self.db.session() as s:
            rows = s.execute(
                select(FunctionRow.name, FunctionRow.reserved_concurrency).where(
                    FunctionRow.reserved_concurrency.is_not(None)
                )
            ).all()
        return {name: int(value or 0) for name, value in rows}

    def unreserved(self) -> int:
        return self.account_limit - sum(self.reserved_by_function().values())

    # -- provisioned ----------------------------------------------------------------------

    def put_provisioned(self, identifier: str, qualifier: str, requested: int) -> str:
        name = self._check_qualifier(identifier, qualifier)
        reserved = self.reserved_by_function().get(name)
        if reserved is not None and requested > reserved:
            raise InvalidParameterValue(
                f"Requested Provisioned Concurrency ({requested}) is greater than the function's "
                f"reserved concurrency ({reserved})."
            )
        if requested > self.unreserved() - MIN_UNRESERVED and reserved is None:
            raise InvalidParameterValue(
                "Requested Provisioned Concurrency exceeds the account's unreserved concurrency."
            )
        stamp = last_modified()
        with self.db.session() as s:
            row = s.get(ProvisionedConfigRow, (name, qualifier))
            if row is None:
                s.add(
                    ProvisionedConfigRow(
                        function_name=name,
                        qualifier=qualifier,
                        requested=requested,
                        last_modified=stamp,
                    )
                )
            else:
                row.requested, row.last_modified = requested, stamp
        return stamp

    def get_provisioned(self, identifier: str, qualifier: str) -> ProvisionedConfig:
        name = self._check_qualifier(identifier, qualifier)
        with self.db.session() as s:
            row = s.get(ProvisionedConfigRow, (name, qualifier))
            if row is None:
                raise ResourceNotFound("No Provisioned Concurrency Config found for this function")
            return _provisioned(row)

    def delete_provisioned(self, identifier: str, qualifier: str) -> None:
        name = self._check_qualifier(identifier, qualifier)
        with self.db.session() as s:
            row = s.get(ProvisionedConfigRow, (name, qualifier))
            if row is None:
                raise ResourceNotFound("No Provisioned Concurrency Config found for this function")
            s.delete(row)

    def list_provisioned(self, identifier: str | None = None) -> list[ProvisionedConfig]:
        with self.db.session() as s:
            query = select(ProvisionedConfigRow)
            if identifier is not None:
                name = self.functions.ref(identifier).name
                if s.get(FunctionRow, name) is None:
                    raise ResourceNotFound(f"Function not found: {self.functions.arn(name)}")
                query = query.where(ProvisionedConfigRow.function_name == name)
            rows = s.scalars(query.order_by(ProvisionedConfigRow.qualifier))
            return [_provisioned(row) for row in rows]

    def _check_qualifier(self, identifier: str, qualifier: str) -> str:
        name = self.functions.ref(identifier).name
        if qualifier == LATEST:
            raise InvalidParameterValue(
                "Provisioned Concurrency Configs cannot be applied to unpublished function "
                "versions."
            )
        with self.db.session() as s:
            self.functions.require(s, name, qualifier)
        return name


def _provisioned(row: ProvisionedConfigRow) -> ProvisionedConfig:
    return ProvisionedConfig(row.function_name, row.qualifier, row.requested, row.last_modified)

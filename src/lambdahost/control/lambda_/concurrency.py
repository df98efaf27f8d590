"""Reserved and provisioned concurrency settings (the counting happens in `invoke/`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lambdahost.control.clock import last_modified
from lambdahost.control.lambda_.functions import LATEST, FunctionService
from lambdahost.control.lambda_.values import ProvisionedConfig
from lambdahost.errors import InvalidParameterValue, LambdaError, ResourceConflict, ResourceNotFound
from lambdahost.store.tables import AliasRow, FunctionRow, ProvisionedConfigRow

MIN_UNRESERVED = 100


class ConcurrencyLimitExceeded(InvalidParameterValue):
    """AWS's body for this one has `message` but no `Type` (recorded answer, localstack
    test_lambda_api.snapshot.json: test_function_concurrency_limits)."""

    error_type = None


class ProvisionedConfigNotFound(LambdaError):
    status = 404
    code = "ProvisionedConcurrencyConfigNotFoundException"


# Recorded AWS answers (localstack test_lambda_api.snapshot.json: test_function_concurrency_
# exceptions, test_provisioned_concurrency_exceptions, test_lambda_provisioned_lifecycle).
FUNCTIONS_ONLY = (
    "This operation is permitted on Lambda functions only. Aliases and versions do not support "
    "this operation. Please specify either a function name or an unqualified function ARN."
)
NO_PROVISIONED_CONFIG = "No Provisioned Concurrency Config found for this function"
ALIAS_OR_VERSION = "The function resource provided must be an alias or a published version."
VERSION_ALREADY_PROVISIONED = (
    "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned "
    "version"
)
VERSION_OF_PROVISIONED_ALIAS = "Version is pointed by a Provisioned Concurrency alias"


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
        name = self._unqualified(identifier)
        with self.db.session() as s:
            fn = s.get(FunctionRow, name)
            if fn is None:
                # AWS names $LATEST here (recorded: put_function_concurrency_with_function_
                # name_doesnotexist).
                raise ResourceNotFound(f"Function not found: {self.functions.arn(name, LATEST)}")
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
            provisioned = s.scalar(
                select(func.coalesce(func.sum(ProvisionedConfigRow.requested), 0)).where(
                    ProvisionedConfigRow.function_name == name
                )
            )
            if value < int(provisioned or 0):
                raise InvalidParameterValue(
                    f"Specified ReservedConcurrentExecutions ({value}) is less than the "
                    f"function's total provisioned concurrency ({int(provisioned or 0)})."
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
        name = self._check_qualifier(identifier, qualifier, put=True)
        reserved = self.reserved_by_function().get(name)
        with self.db.session() as s:
            others = s.scalars(
                select(ProvisionedConfigRow).where(
                    ProvisionedConfigRow.function_name == name,
                    ProvisionedConfigRow.qualifier != qualifier,
                )
            ).all()
            self._check_overlap(s, name, qualifier, [row.qualifier for row in others])
        provisioned_elsewhere = sum(row.requested for row in others)
        if reserved is not None and requested + provisioned_elsewhere > reserved:
            raise InvalidParameterValue(
                f"Requested Provisioned Concurrency ({requested}) is greater than the function's "
                f"reserved concurrency ({reserved})."
            )
        if reserved is None:
            unreserved = self.unreserved()
            if requested > unreserved:
                raise ConcurrencyLimitExceeded(
                    "Specified ConcurrentExecutions for function is greater than account's "
                    f"unreserved concurrency [{unreserved}]."
                )
            if unreserved - requested < MIN_UNRESERVED:
                raise ConcurrencyLimitExceeded(
                    "Specified ConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of [{MIN_UNRESERVED}]."
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
                raise ProvisionedConfigNotFound(NO_PROVISIONED_CONFIG)
            return _provisioned(row)

    def delete_provisioned(self, identifier: str, qualifier: str) -> bool:
        """Delete the config of `qualifier`; False when there was none (AWS answers 204
        either way: recorded delete_provisioned_config_doesnotexist)."""
        name = self._check_qualifier(identifier, qualifier)
        with self.db.session() as s:
            row = s.get(ProvisionedConfigRow, (name, qualifier))
            if row is None:
                return False
            s.delete(row)
            return True

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

    def _unqualified(self, identifier: str) -> str:
        ref = self.functions.ref(identifier)
        if ref.qualifier:
            raise InvalidParameterValue(FUNCTIONS_ONLY)
        return ref.name

    def _check_qualifier(self, identifier: str, qualifier: str, *, put: bool = False) -> str:
        name = self.functions.ref(identifier).name
        if qualifier == LATEST:
            raise InvalidParameterValue(
                "Provisioned Concurrency Configs cannot be applied to unpublished function "
                "versions."
                if put
                else ALIAS_OR_VERSION
            )
        with self.db.session() as s:
            if qualifier.isdigit():
                self.functions.require(s, name, qualifier)
            elif s.get(FunctionRow, name) is None or s.get(AliasRow, (name, qualifier)) is None:
                raise ResourceNotFound(
                    f"Cannot find alias arn: {self.functions.arn(name, qualifier)}"
                )
        return name

    @staticmethod
    def _check_overlap(s: Session, name: str, qualifier: str, configured: list[str]) -> None:
        """One version gets provisioned concurrency once: through itself or one alias."""

        def version_of(q: str) -> str | None:
            if q.isdigit():
                return q
            alias = s.get(AliasRow, (name, q))
            return alias.function_version if alias is not None else None

        target = version_of(qualifier)
        for other in configured:
            if version_of(other) != target:
                continue
            if qualifier.isdigit():
                raise ResourceConflict(VERSION_OF_PROVISIONED_ALIAS)
            raise ResourceConflict(VERSION_ALREADY_PROVISIONED)


def _provisioned(row: ProvisionedConfigRow) -> ProvisionedConfig:
    return ProvisionedConfig(row.function_name, row.qualifier, row.requested, row.last_modified)

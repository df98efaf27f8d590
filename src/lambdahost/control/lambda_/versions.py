"""Published versions: immutable snapshots of `$LATEST`'s code and configuration."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlalchemy import select

from lambdahost.control.clock import last_modified
from lambdahost.control.lambda_.functions import (
    LATEST,
    STATE_FIELDS,
    FunctionService,
    check_revision,
    listed_configuration,
)
from lambdahost.control.lambda_.paging import page
from lambdahost.control.lambda_.states import creating
from lambdahost.errors import InvalidParameterValue, ResourceConflict, ResourceNotFound
from lambdahost.store.tables import FunctionRow, VersionRow

# Fields that differ between two snapshots of identical code and configuration.
VOLATILE = {"Version", "FunctionArn", "LastModified", "RevisionId", *STATE_FIELDS, "Description"}


class VersionService:
    def __init__(self, functions: FunctionService) -> None:
        self.functions = functions
        self.db = functions.db

    def publish(
        self,
        identifier: str,
        *,
        code_sha256: str | None = None,
        description: str | None = None,
        revision_id: str | None = None,
        during_change: bool = False,
    ) -> dict[str, Any]:
        """Snapshot $LATEST. `during_change` is for `Publish=True` on the change itself."""
        name = self.functions.ref(identifier).name
        with self.db.session() as s:
            fn = s.get(FunctionRow, name)
            latest = s.get(VersionRow, (name, LATEST))
            if fn is None or latest is None:
                raise ResourceNotFound(f"Function not found: {self.functions.arn(name)}")
            config = latest.config
            check_revision(revision_id, config["RevisionId"])
            if code_sha256 and code_sha256 != config["CodeSha256"]:
                # Recorded AWS answer (localstack test_lambda_api.snapshot.json,
                # test_publish_with_wrong_sha256): a 400, not a 412.
                raise InvalidParameterValue(
                    f"CodeSHA256 ({code_sha256}) is different from current CodeSHA256 in $LATEST "
                    f"({config['CodeSha256']}). Please try again with the CodeSHA256 in $LATEST."
                )
            changing = (
                config.get("State") == "Pending" or config.get("LastUpdateStatus") == "InProgress"
            )
            if changing and not during_change:
                raise ResourceConflict(
                    "The operation cannot be performed at this time. An update is in progress "
                    f"for resource: {config['FunctionArn']}"
                )
            newest = self._newest(s, name, fn.last_version)
            if newest is not None and _same(newest.config, config):
                return dict(newest.config)
            fn.last_version += 1
            number = str(fn.last_version)
            snapshot = copy.deepcopy(config)
            for key in STATE_FIELDS:
                snapshot.pop(key, None)
            snapshot.update(
                Version=number,
                FunctionArn=self.functions.arn(name, number),
                RevisionId=str(uuid.uuid4()),
                LastModified=last_modified(),
            )
            if changing:
                # Published with the change it rides on (Publish=True): the version is
                # created with it, Pending until it settles (recorded AWS answer, localstack
                # test_lambda.snapshot.json: update_lambda_response_with_publish).
                snapshot.update(creating())
            else:
                snapshot.update(State="Active", LastUpdateStatus="Successful")
            if description is not None:
                snapshot["Description"] = description
            s.add(
                VersionRow(
                    function_name=name,
                    version=number,
                    config=snapshot,
                    code_sha256=latest.code_sha256,
                    revision_id=snapshot["RevisionId"],
                    settled=not changing,
                    layer_digests=list(latest.layer_digests or []),
                )
            )
        if changing:
            self.functions.states.settle_later(name)
        return snapshot

    def list(self, identifier: str, marker: str | None, max_items: int | None) -> dict[str, Any]:
        name = self.functions.ref(identifier).name
        with self.db.session() as s:
            if s.get(FunctionRow, name) is None:
                raise ResourceNotFound(f"Function not found: {self.functions.arn(name)}")
            rows = s.scalars(select(VersionRow).where(VersionRow.function_name == name)).all()
        ordered = sorted(rows, key=lambda r: -1 if r.version == LATEST else int(r.version))
        listed = [listed_configuration(r.config, qualified=True) for r in ordered]
        return page(listed, "Versions", marker, max_items)

    def delete(self, identifier: str, version: str) -> None:
        """Delete one published version (the rule is `FunctionService.delete`'s)."""
        self.functions.delete(self.functions.ref(identifier).name, version)

    @staticmethod
    def _newest(s: Any, name: str, number: int) -> VersionRow | None:
        return s.get(VersionRow, (name, str(number))) if number else None


def _same(published: dict[str, Any], latest: dict[str, Any]) -> bool:
    def strip(config: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in VOLATILE}

    return strip(published) == strip(latest)

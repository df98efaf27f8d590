"""Layers: versioned zip archives that functions stack under /opt.

A deleted layer version stays stored for the functions that already use it, as in AWS."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lambdahost.config import Settings
from lambdahost.control.clock import last_modified
from lambdahost.control.iam import AccessDenied, Caller, principal_matches
from lambdahost.control.lambda_ import rules
from lambdahost.control.lambda_.archive import ArchiveError, UnpackedArchive, unpack_zip
from lambdahost.control.lambda_.code import tree_size
from lambdahost.control.lambda_.functions import check_revision
from lambdahost.control.lambda_.paging import page
from lambdahost.control.lambda_.values import ResolvedLayer
from lambdahost.errors import InvalidParameterValue, ResourceConflict, ResourceNotFound
from lambdahost.store.blobs import BlobStore
from lambdahost.store.db import Database
from lambdahost.store.tables import LayerRow, LayerVersionRow

_LAYER_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):layer:"
    r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<version>\d+))?$"
)
_LAYER_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,140}$")
_VERSION_MAX = 2**63 - 1  # the model's `long`, and SQLite's INTEGER
GET_LAYER_VERSION = "lambda:GetLayerVersion"

# Another account's layer version for a function of this one: (layer version ARN, owner
# account, this account) -> the layer, or AccessDeniedException.
SharedLayer = Callable[[str, str, str], ResolvedLayer]


def layer_access_denied(account_id: str, arn: str) -> AccessDenied:
    """AWS's answer when a function of `account_id` names a layer version it may not use."""
    return AccessDenied(
        f"User: arn:aws:iam::{account_id}:root is not authorized to perform: "
        f"{GET_LAYER_VERSION} on resource: {arn} because no resource-based policy allows the "
        f"{GET_LAYER_VERSION} action"
    )


def _version_of(m: re.Match[str] | None) -> int | None:
    """The version number in a matched layer ARN; None when absent or past a 64-bit long
    (it cannot exist, and SQLite would overflow on it)."""
    digits = m["version"] if m is not None else None
    if not digits or len(digits.lstrip("0")) > 19:  # also spares int() its 4300-digit limit
        return None
    version = int(digits)
    return version if version <= _VERSION_MAX else None


class LayerService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        shared_layer: SharedLayer | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.shared_layer = shared_layer

    def layer_arn(self, name: str, version: int | None = None) -> str:
        arn = f"arn:aws:lambda:{self.settings.region}:{self.settings.account_id}:layer:{name}"
        return f"{arn}:{version}" if version is not None else arn

    def name_of(self, identifier: str) -> str:
        m = _LAYER_ARN.match(identifier)
        if m:
            if m["version"]:
                raise InvalidParameterValue(f"Layer name must not include a version: {identifier}")
            return m["name"]
        if not _LAYER_NAME.match(identifier):
            raise InvalidParameterValue(f"Invalid layer name: {identifier}")
        return identifier

    # -- publishing -----------------------------------------------------------------------

    def publish(self, params: dict[str, Any]) -> dict[str, Any]:
        name = self.name_of(params["LayerName"])
        content = params.get("Content") or {}
        if content.get("S3Bucket") or content.get("S3Key"):
            raise InvalidParameterValue(
                "lambdahost accepts layer content as ZipFile only; S3 locations are not supported."
            )
        data = content.get("ZipFile")
        if not data:
            raise InvalidParameterValue("Please provide a source for the layer content: ZipFile.")
        rules.check_zip_size(len(data))
        # CompatibleRuntimes takes any identifier of the model's Runtime enum (validated
        # from botocore's model), as on AWS: a layer may be meant for runtimes served elsewhere.
        digest = hashlib.sha256(data).hexdigest()
        unpacked = self._unpack(data, digest)
        self.blobs.put(data, digest)
        with self.db.session() as s:
            layer = s.get(LayerRow, name)
            if layer is None:
                layer = LayerRow(name=name, last_version=0)
                s.add(layer)
            layer.last_version += 1
            version = layer.last_version
            info: dict[str, Any] = {
                "LayerArn": self.layer_arn(name),
                "LayerVersionArn": self.layer_arn(name, version),
                "Description": params.get("Description") or "",
                "CreatedDate": last_modified(),
                "Version": version,
                "Content": {
                    "CodeSha256": base64.b64encode(bytes.fromhex(digest)).decode(),
                    "CodeSize": len(data),
                },
            }
            for key in ("CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
                if params.get(key):
                    info[key] = params[key]
            s.add(
                LayerVersionRow(
                    layer_name=name,
                    version=version,
                    info=info,
                    code_sha256=digest,
                    unzipped_bytes=unpacked,
                    deleted=False,
                    policy={},
                    policy_revision="",
                )
            )
        return info

    def _unpack(self, data: bytes, digest: str) -> int:
        dest = self.blobs.unpacked_dir(digest)
        if dest.is_dir():
            return tree_size(dest)
        try:
            result: UnpackedArchive = unpack_zip(data, dest, max_unzipped_bytes=rules.UNZIPPED_MAX)
        except FileExistsError:
            return tree_size(dest)
        except ArchiveError as exc:
            raise InvalidParameterValue(str(exc)) from None
        return result.unzipped_bytes

    # -- reading --------------------------------------------------------------------------

    def get(self, layer: str, version: int) -> dict[str, Any]:
        _check_version_number(version)
        with self.db.session() as s:
            row = self._row(s, self.name_of(layer), version)
            return self._render(row)

    def get_by_arn(self, arn: str) -> dict[str, Any]:
        m = _LAYER_ARN.match(arn)
        version = _version_of(m)
        if m is None or version is None:
            raise InvalidParameterValue(f"Invalid layer version ARN: {arn}")
        return self.get(m["name"], version)

    def list_versions(
        self,
        layer: str,
        runtime: str | None,
        architecture: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> dict[str, Any]:
        name = self.name_of(layer)
        with self.db.session() as s:
            rows = s.scalars(
                select(LayerVersionRow)
                .where(LayerVersionRow.layer_name == name, LayerVersionRow.deleted.is_(False))
                .order_by(LayerVersionRow.version.desc())
            ).all()
            items = [self._render(r) for r in rows if _compatible(r.info, runtime, architecture)]
        return page(items, "LayerVersions", marker, max_items)

    def list_layers(
        self,
        runtime: str | None,
        architecture: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> dict[str, Any]:
        with self.db.session() as s:
            rows = s.scalars(
                select(LayerVersionRow)
                .where(LayerVersionRow.deleted.is_(False))
                .order_by(LayerVersionRow.layer_name, LayerVersionRow.version.desc())
            ).all()
            latest: dict[str, dict[str, Any]] = {}
            for row in rows:
                if row.layer_name not in latest and _compatible(row.info, runtime, architecture):
                    latest[row.layer_name] = self._render(row)
        items = [
            {
                "LayerName": name,
                "LayerArn": info["LayerArn"],
                "LatestMatchingVersion": {
                    k: v for k, v in info.items() if k not in ("LayerArn", "Content")
                },
            }
            for name, info in sorted(latest.items())
        ]
        return page(items, "Layers", marker, max_items)

    def delete(self, layer: str, version: int) -> None:
        _check_version_number(version)
        with self.db.session() as s:
            row = s.get(LayerVersionRow, (self.name_of(layer), version))
            if row is not None:
                row.deleted = True

    def resolve_for_function(self, arns: list[str]) -> list[ResolvedLayer]:
        """Check the layer versions a function references."""
        resolved = []
        for arn in arns:
            m = _LAYER_ARN.match(arn)
            version = _version_of(m)
            if m is None or version is None:
                raise InvalidParameterValue(f"Layer version {arn} does not exist.")
            if (
                m["region"] == self.settings.region
                and m["account"] != self.settings.account_id
                and self.shared_layer is not None
            ):
                resolved.append(self.shared_layer(arn, m["account"], self.settings.account_id))
                continue
            with self.db.session() as s:
                row = s.get(LayerVersionRow, (m["name"], version))
                local = (
                    m["region"] == self.settings.region and m["account"] == self.settings.account_id
                )
                if row is None or row.deleted or not local:
                    raise InvalidParameterValue(f"Layer version {arn} does not exist.")
                size = int(row.info["Content"]["CodeSize"])
                resolved.append(ResolvedLayer(arn, row.code_sha256, size, row.unzipped_bytes))
        return resolved

    def resolve_shared(self, arn: str, account_id: str) -> ResolvedLayer:
        """A layer version of this account for a function of `account_id`: only when the
        version's policy grants that account (or everyone) lambda:GetLayerVersion."""
        m = _LAYER_ARN.match(arn)
        version = _version_of(m)
        if m is None or version is None:
            raise InvalidParameterValue(f"Layer version {arn} does not exist.")
        with self.db.session() as s:
            row = s.get(LayerVersionRow, (m["name"], version))
            if row is None or row.deleted or not _grants(row.policy, Caller.root(account_id)):
                raise layer_access_denied(account_id, arn)
            size = int(row.info["Content"]["CodeSize"])
            return ResolvedLayer(arn, row.code_sha256, size, row.unzipped_bytes)

    def allows(self, caller: Caller, layer: str, version: int) -> bool:
        """Whether the policy of `layer:version` lets `caller` (of another account) read it."""
        with self.db.session() as s:
            row = s.get(LayerVersionRow, (self.name_of(layer), version))
            return row is not None and not row.deleted and _grants(row.policy, caller)

    # -- permissions ----------------------------------------------------------------------

    def add_permission(self, params: dict[str, Any]) -> dict[str, Any]:
        name, version = self.name_of(params["LayerName"]), int(params["VersionNumber"])
        with self.db.session() as s:
            row = self._row(s, name, version)
            check_revision(params.get("RevisionId"), row.policy_revision)
            sid = params["StatementId"]
            if sid in row.policy:
                raise ResourceConflict(
                    f"The statement id ({sid}) provided already exists. Please provide a new "
                    "statement id, or remove the existing statement."
                )
            if params["Action"] != "lambda:GetLayerVersion":
                raise InvalidParameterValue("Action must be lambda:GetLayerVersion.")
            principal = params["Principal"]
            statement: dict[str, Any] = {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": "*" if principal == "*" else {"AWS": f"arn:aws:iam::{principal}:root"},
                "Action": params["Action"],
                "Resource": self.layer_arn(name, version),
            }
            if params.get("OrganizationId"):
                statement["Condition"] = {
                    "StringEquals": {"aws:PrincipalOrgID": params["OrganizationId"]}
                }
            row.policy = {**row.policy, sid: statement}
            row.policy_revision = str(uuid.uuid4())
            return {"Statement": json.dumps(statement), "RevisionId": row.policy_revision}

    def get_policy(self, layer: str, version: int) -> dict[str, Any]:
        with self.db.session() as s:
            row = self._row(s, self.name_of(layer), version)
            if not row.policy:
                raise ResourceNotFound("No policy is associated with the given resource.")
            document = {
                "Version": "2012-10-17",
                "Id": "default",
                "Statement": list(row.policy.values()),
            }
            return {"Policy": json.dumps(document), "RevisionId": row.policy_revision}

    def remove_permission(self, layer: str, version: int, sid: str, revision: str | None) -> None:
        with self.db.session() as s:
            row = self._row(s, self.name_of(layer), version)
            check_revision(revision, row.policy_revision)
            if sid not in row.policy:
                raise ResourceNotFound(f"Statement {sid} is not found in resource policy.")
            row.policy = {k: v for k, v in row.policy.items() if k != sid}
            row.policy_revision = str(uuid.uuid4())

    # -- helpers --------------------------------------------------------------------------

    def _row(self, s: Session, name: str, version: int) -> LayerVersionRow:
        row = s.get(LayerVersionRow, (name, version))
        if row is None or row.deleted:
            raise ResourceNotFound(
                "The resource you requested does not exist. "
                f"(Layer version {self.layer_arn(name, version)})"
            )
        return row

    def _render(self, row: LayerVersionRow) -> dict[str, Any]:
        return copy.deepcopy(dict(row.info))  # the caller may add to it


def _check_version_number(version: int) -> None:
    # Recorded AWS answers (localstack test_lambda_api.snapshot.json, test_layer_exceptions:
    # get_layer_version_exc_layer_version_doesnotexist_negative/_zero,
    # delete_layer_version_exc_layerversion_invalid_version).
    if version < 1:
        raise InvalidParameterValue("Layer Version Cannot be less than 1")


def _grants(policy: dict[str, Any], caller: Caller) -> bool:
    """Whether a layer version's statements allow `caller` lambda:GetLayerVersion. A statement
    with a condition (an organization) is not evaluated here, so it grants nothing."""
    return any(
        st.get("Effect") == "Allow"
        and st.get("Action") in (GET_LAYER_VERSION, "lambda:*", "*")
        and not st.get("Condition")
        and principal_matches(st.get("Principal"), caller)
        for st in policy.values()
    )


def _compatible(info: dict[str, Any], runtime: str | None, architecture: str | None) -> bool:
    if runtime and runtime not in info.get("CompatibleRuntimes", []):
        return False
    if architecture and architecture not in info.get("CompatibleArchitectures", []):
        return False
    return True

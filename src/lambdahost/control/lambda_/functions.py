"""Functions: create, read, update, delete, and the Pending/InProgress state machine.

Every write commits to the store before it returns. Code archives are stored by content
(SHA-256) and unpacked once; the unpacked tree is what environments mount as /var/task."""

from __future__ import annotations

import base64
import copy
import hashlib
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lambdahost.config import Settings
from lambdahost.control.clock import last_modified, now_ms
from lambdahost.control.lambda_ import rules
from lambdahost.control.lambda_.archive import ArchiveError, unpack_zip
from lambdahost.control.lambda_.names import FunctionRef, function_arn, parse_function
from lambdahost.errors import (
    InvalidParameterValue,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
)
from lambdahost.store.blobs import BlobStore
from lambdahost.store.db import Database
from lambdahost.store.tables import AliasRow, FunctionRow, VersionRow

LATEST = "$LATEST"
# Configuration members a client may set, with the values AWS fills in when absent.
DEFAULTS: dict[str, Any] = {
    "Description": "",
    "Timeout": 3,
    "MemorySize": 128,
    "TracingConfig": {"Mode": "PassThrough"},
    "PackageType": "Zip",
    "Architectures": ["x86_64"],
    "EphemeralStorage": {"Size": 512},
    "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
}
SETTABLE = (
    "Role",
    "Handler",
    "Description",
    "Timeout",
    "MemorySize",
    "Runtime",
    "Environment",
    "DeadLetterConfig",
    "KMSKeyArn",
    "TracingConfig",
    "EphemeralStorage",
    "LoggingConfig",
    "ImageConfig",
)

# Checks layer version ARNs: [(arn, sha256 hex, zipped size, unzipped size)].
LayerResolver = Callable[[list[str]], list[tuple[str, str, int, int]]]
ChangeListener = Callable[[str], None]  # called with the function name after a change
Scheduler = Callable[[float, Callable[[], None]], None]


@dataclass(frozen=True)
class FunctionVersion:
    """A version as the rest of the platform sees it."""

    config: dict[str, Any]
    code_sha256: str  # hex
    code_dir: Path
    tags: dict[str, str]
    layer_dirs: tuple[Path, ...] = ()  # unpacked layers in the order they stack under /opt


class FunctionService:
    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self._listeners: list[ChangeListener] = []
        self._schedule: Scheduler = _thread_timer
        self._unpack_lock = threading.Lock()
        self.layers: LayerResolver | None = None
        self.check_target: Callable[[str], None] = lambda arn: None  # dead-letter targets

    # -- wiring ---------------------------------------------------------------------------

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def use_scheduler(self, schedule: Scheduler) -> None:
        self._schedule = schedule

    def arn(self, name: str, qualifier: str | None = None) -> str:
        return function_arn(
            name,
            region=self.settings.region,
            account_id=self.settings.account_id,
            qualifier=qualifier,
        )

    def ref(self, identifier: str) -> FunctionRef:
        return parse_function(
            identifier, region=self.settings.region, account_id=self.settings.account_id
        )

    # -- create ---------------------------------------------------------------------------

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        ref = self.ref(params["FunctionName"])
        if ref.qualifier:
            raise InvalidParameterValue("Function name must not include a qualifier on create.")
        rules.check_configuration(params)
        self._check_dead_letter(params)
        if not params.get("Runtime") or not params.get("Handler"):
            raise InvalidParameterValue(
                "Runtime and Handler are mandatory parameters for functions created with "
                "deployment packages."
            )
        digest, size = self._store_code(params.get("Code") or {})
        now = now_ms()
        arn = self.arn(ref.name)
        config: dict[str, Any] = {
            "FunctionName": ref.name,
            "FunctionArn": arn,
            **copy.deepcopy(DEFAULTS),
            **{k: copy.deepcopy(params[k]) for k in SETTABLE if params.get(k) is not None},
            "CodeSize": size,
            "CodeSha256": _b64(digest),
            "Version": LATEST,
            "LastModified": last_modified(now),
            "RevisionId": str(uuid.uuid4()),
            "State": "Pending",
            "StateReason": "The function is being created.",
            "StateReasonCode": "Creating",
        }
        config["Architectures"] = list(params.get("Architectures") or ["x86_64"])
        config["LoggingConfig"] = {
            "LogFormat": "Text",
            "LogGroup": f"/aws/lambda/{ref.name}",
            **(params.get("LoggingConfig") or {}),
        }
        layer_digests = self._attach_layers(config, params.get("Layers"), digest)
        with self.db.session() as s:
            if s.get(FunctionRow, ref.name) is not None:
                raise ResourceConflict(f"Function already exist: {ref.name}")
            s.add(
                FunctionRow(
                    name=ref.name,
                    arn=arn,
                    created_ms=now,
                    tags=dict(params.get("Tags") or {}),
                    last_version=0,
                )
            )
            s.add(
                VersionRow(
                    function_name=ref.name,
                    version=LATEST,
                    config=config,
                    code_sha256=digest,
                    revision_id=config["RevisionId"],
                    settled=False,
                    layer_digests=layer_digests,
                )
            )
        self._settle_later(ref.name)
        return config

    # -- read -----------------------------------------------------------------------------

    def get(self, identifier: str, qualifier: str | None = None) -> FunctionVersion:
        ref = self.ref(identifier)
        version = ref.qualified(qualifier) or LATEST
        with self.db.session() as s:
            fn = s.get(FunctionRow, ref.name)
            row = s.get(VersionRow, (ref.name, version)) if fn else None
            if fn is None or row is None:
                shown = None if version == LATEST else version
                raise ResourceNotFound(f"Function not found: {self.arn(ref.name, shown)}")
            return FunctionVersion(
                dict(row.config),
                row.code_sha256,
                self.code_dir(row.code_sha256),
                dict(fn.tags),
                tuple(self.code_dir(d) for d in row.layer_digests or ()),
            )

    def code_dir(self, digest: str) -> Path:
        return self.blobs.unpacked_dir(digest)

    def list(
        self, marker: str | None, max_items: int | None, all_versions: bool = False
    ) -> dict[str, Any]:
        """Functions by name ($LATEST only, or every version with FunctionVersion=ALL)."""
        limit = min(max_items or 50, 50)
        after = _decode_marker(marker)
        with self.db.session() as s:
            query = select(VersionRow).where(VersionRow.function_name >= after[0])
            if not all_versions:
                query = query.where(VersionRow.version == LATEST)
            rows = sorted(s.scalars(query), key=_listing_order)
        rows = [r for r in rows if _listing_order(r) > _marker_order(after)]
        page = rows[:limit]
        result: dict[str, Any] = {"Functions": [dict(r.config) for r in page]}
        if len(rows) > limit:
            result["NextMarker"] = _encode_marker(page[-1].function_name, page[-1].version)
        return result

    def count_and_size(self) -> tuple[int, int]:
        with self.db.session() as s:
            count = s.scalar(select(func.count()).select_from(FunctionRow)) or 0
            sizes = s.scalars(select(VersionRow.config)).all()
        return count, sum(int(c.get("CodeSize", 0)) for c in sizes)

    # -- update ---------------------------------------------------------------------------

    def update_code(self, params: dict[str, Any]) -> dict[str, Any]:
        ref = self.ref(params["FunctionName"])
        _no_qualifier(ref)
        digest, size = self._store_code(params)
        if params.get("DryRun"):
            config = self.get(ref.name).config
            return {**config, "CodeSha256": _b64(digest), "CodeSize": size}

        def change(config: dict[str, Any], row: VersionRow) -> None:
            config["CodeSha256"] = _b64(digest)
            config["CodeSize"] = size
            if params.get("Architectures"):
                config["Architectures"] = list(params["Architectures"])
            row.code_sha256 = digest
            arns = [layer["Arn"] for layer in config.get("Layers", [])]
            if arns:
                row.layer_digests = self._attach_layers(config, arns, digest)

        return self._update(ref.name, params.get("RevisionId"), change)

    def update_configuration(self, params: dict[str, Any]) -> dict[str, Any]:
        ref = self.ref(params["FunctionName"])
        _no_qualifier(ref)
        rules.check_configuration(params)
        self._check_dead_letter(params)

        def change(config: dict[str, Any], row: VersionRow) -> None:
            for key in SETTABLE:
                if key in params and params[key] is not None:
                    config[key] = copy.deepcopy(params[key])
            if params.get("LoggingConfig") is not None:
                config["LoggingConfig"] = {
                    "LogFormat": "Text",
                    "LogGroup": f"/aws/lambda/{ref.name}",
                    **params["LoggingConfig"],
                }
            if params.get("Layers") is not None:
                row.layer_digests = self._attach_layers(config, params["Layers"], row.code_sha256)
            if config.get("Environment") == {"Variables": {}}:
                config.pop("Environment")

        return self._update(ref.name, params.get("RevisionId"), change)

    def _update(
        self,
        name: str,
        revision_id: str | None,
        change: Callable[[dict[str, Any], VersionRow], None],
    ) -> dict[str, Any]:
        with self.db.session() as s:
            row = self._latest_row(s, name)
            config = copy.deepcopy(row.config)
            check_revision(revision_id, config["RevisionId"])
            if config.get("State") == "Pending":
                raise ResourceConflict(
                    "The operation cannot be performed at this time. The function is currently "
                    "in the following state: Pending"
                )
            if config.get("LastUpdateStatus") == "InProgress":
                raise ResourceConflict(
                    "The operation cannot be performed at this time. An update is in progress "
                    f"for resource: {config['FunctionArn']}"
                )
            change(config, row)
            config["LastModified"] = last_modified()
            config["RevisionId"] = str(uuid.uuid4())
            config["LastUpdateStatus"] = "InProgress"
            config["LastUpdateStatusReason"] = "The function is being created."
            config["LastUpdateStatusReasonCode"] = "Creating"
            row.config = config
            row.revision_id = config["RevisionId"]
            row.settled = False
        self._notify(name)
        self._settle_later(name)
        return config

    # -- delete and tags ------------------------------------------------------------------

    def delete(self, identifier: str, qualifier: str | None = None) -> None:
        ref = self.ref(identifier)
        version = ref.qualified(qualifier)
        if version == LATEST:
            raise InvalidParameterValue(
                "$LATEST version cannot be deleted without deleting the function."
            )
        with self.db.session() as s:
            fn = s.get(FunctionRow, ref.name)
            if fn is None:
                raise ResourceNotFound(f"Function not found: {self.arn(ref.name)}")
            rows = s.scalars(select(VersionRow).where(VersionRow.function_name == ref.name)).all()
            if version is not None:
                rows = [r for r in rows if r.version == version]
                if not rows:
                    raise ResourceNotFound(f"Function not found: {self.arn(ref.name, version)}")
            else:
                s.delete(fn)
            for row in rows:
                s.delete(row)
        self._notify(ref.name)

    def tags_of(self, resource: str) -> dict[str, str]:
        with self.db.session() as s:
            return dict(self._tagged(s, resource).tags)

    def tag(self, resource: str, tags: dict[str, str]) -> None:
        with self.db.session() as s:
            fn = self._tagged(s, resource)
            fn.tags = {**fn.tags, **tags}

    def untag(self, resource: str, keys: list[str]) -> None:
        with self.db.session() as s:
            fn = self._tagged(s, resource)
            fn.tags = {k: v for k, v in fn.tags.items() if k not in keys}

    def _tagged(self, s: Session, resource: str) -> FunctionRow:
        if not resource.startswith("arn:"):
            raise InvalidParameterValue(f"Invalid ARN: {resource}")
        ref = self.ref(resource)
        if ref.qualifier:
            raise InvalidParameterValue("Tags are only supported on unqualified function ARNs.")
        fn = s.get(FunctionRow, ref.name)
        if fn is None:
            raise ResourceNotFound(f"Function not found: {self.arn(ref.name)}")
        return fn

    # -- the state machine ----------------------------------------------------------------

    def settle_unfinished(self) -> int:
        """Finish transitions a killed server left Pending/InProgress. Returns how many."""
        with self.db.session() as s:
            names = s.scalars(
                select(VersionRow.function_name).where(VersionRow.settled.is_(False))
            ).all()
        for name in names:
            self.settle(name)
        return len(names)

    def settle(self, name: str) -> None:
        """Move a Pending function to Active, an InProgress update to Successful."""
        with self.db.session() as s:
            row = s.get(VersionRow, (name, LATEST))
            if row is None or row.settled:
                return
            config = copy.deepcopy(row.config)
            failure = self._readiness_problem(row.code_sha256)
            if config.get("State") == "Pending":
                if failure:
                    config.update(
                        State="Failed", StateReason=failure, StateReasonCode="InternalError"
                    )
                else:
                    config.update(State="Active", LastUpdateStatus="Successful")
                    for key in ("StateReason", "StateReasonCode"):
                        config.pop(key, None)
            if config.get("LastUpdateStatus") == "InProgress":
                for key in ("LastUpdateStatusReason", "LastUpdateStatusReasonCode"):
                    config.pop(key, None)
                if failure:
                    config.update(
                        LastUpdateStatus="Failed",
                        LastUpdateStatusReason=failure,
                        LastUpdateStatusReasonCode="InternalError",
                    )
                else:
                    config["LastUpdateStatus"] = "Successful"
            row.config = config
            row.settled = True

    def _readiness_problem(self, digest: str) -> str | None:
        if not self.code_dir(digest).is_dir():
            try:
                self._unpack(self.blobs.read(digest), digest)
            except (OSError, ArchiveError) as exc:
                return f"The function code could not be prepared: {exc}"
        return None

    def _settle_later(self, name: str) -> None:
        self._schedule(self.settings.transition_delay_s, lambda: self.settle(name))

    def _notify(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    def _check_dead_letter(self, params: dict[str, Any]) -> None:
        target = (params.get("DeadLetterConfig") or {}).get("TargetArn")
        if target:
            self.check_target(target)

    # -- code -----------------------------------------------------------------------------

    def _attach_layers(
        self, config: dict[str, Any], arns: list[str] | None, digest: str
    ) -> list[str]:
        """Set config["Layers"] and return the layers' digests, checking the total size."""
        if not arns:
            config.pop("Layers", None)
            return []
        if self.layers is None:
            raise InvalidParameterValue("Layers are not available.")
        resolved = self.layers(list(arns))
        total = tree_size(self.code_dir(digest)) + sum(r[3] for r in resolved)
        if total > rules.UNZIPPED_MAX:
            raise InvalidParameterValue(
                "Function code combined with layers exceeds the maximum allowed size of "
                f"{rules.UNZIPPED_MAX} bytes. The actual size is {total} bytes."
            )
        config["Layers"] = [{"Arn": arn, "CodeSize": size} for arn, _, size, _ in resolved]
        return [d for _, d, _, _ in resolved]

    def _store_code(self, code: dict[str, Any]) -> tuple[str, int]:
        """Validate, unpack and durably store a zip. Returns (sha256 hex, size)."""
        if code.get("S3Bucket") or code.get("S3Key") or code.get("ImageUri"):
            raise InvalidParameterValue(
                "lambdahost accepts function code as ZipFile only; S3 and image code locations "
                "are not supported."
            )
        data = code.get("ZipFile")
        if not data:
            raise InvalidParameterValue("Please provide a source for function code: ZipFile.")
        rules.check_zip_size(len(data))
        digest = hashlib.sha256(data).hexdigest()
        self._unpack(data, digest)
        self.blobs.put(data, digest)
        return digest, len(data)

    def _unpack(self, data: bytes, digest: str) -> None:
        dest = self.code_dir(digest)
        with self._unpack_lock:
            if dest.is_dir():
                return
            try:
                unpack_zip(data, dest, max_unzipped_bytes=rules.UNZIPPED_MAX)
            except ArchiveError as exc:
                shutil.rmtree(dest, ignore_errors=True)
                raise InvalidParameterValue(str(exc)) from None

    def require(self, s: Session, name: str, qualifier: str | None = None) -> None:
        """404 unless the function exists, and so does the version or alias `qualifier` names
        (None, "" and $LATEST name the function itself)."""
        if s.get(FunctionRow, name) is None:
            raise ResourceNotFound(f"Function not found: {self.arn(name)}")
        if not qualifier or qualifier == LATEST:
            return
        row = VersionRow if qualifier.isdigit() else AliasRow
        if s.get(row, (name, qualifier)) is None:
            raise ResourceNotFound(f"Function not found: {self.arn(name, qualifier)}")

    def _latest_row(self, s: Session, name: str) -> VersionRow:
        row = s.get(VersionRow, (name, LATEST))
        if row is None:
            raise ResourceNotFound(f"Function not found: {self.arn(name)}")
        return row


def tree_size(root: Path) -> int:
    """Bytes of the regular files under `root` (symlinks not followed)."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def _thread_timer(delay: float, fn: Callable[[], None]) -> None:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _no_qualifier(ref: FunctionRef) -> None:
    if ref.qualifier:
        raise InvalidParameterValue(
            "Qualifiers are not allowed on this operation; use the function name."
        )


def check_revision(expected: str | None, current: str) -> None:
    """412 when the caller named a RevisionId (of a function, alias or policy) that is stale."""
    if expected and expected != current:
        raise PreconditionFailed(
            "The Revision Id provided does not match the latest Revision Id. Call the "
            "GetFunction/GetAlias API to retrieve the latest Revision Id"
        )


def _listing_order(row: VersionRow) -> tuple[str, int]:
    return _marker_order((row.function_name, row.version))


def _marker_order(position: tuple[str, str]) -> tuple[str, int]:
    name, version = position
    if not name:
        return ("", -2)
    return (name, -1 if version == LATEST else int(version))


def _encode_marker(name: str, version: str) -> str:
    return base64.urlsafe_b64encode(f"{name}\n{version}".encode()).decode()


def _decode_marker(marker: str | None) -> tuple[str, str]:
    if not marker:
        return ("", "")
    try:
        name, _, version = base64.urlsafe_b64decode(marker.encode()).decode().partition("\n")
    except ValueError:
        raise InvalidParameterValue(f"Invalid marker: {marker}") from None
    if version != LATEST and not version.isdigit():
        raise InvalidParameterValue(f"Invalid marker: {marker}")
    return name, version

"""Functions: create, read, update, delete and tags; the rules of each call.

Every write commits to the store before it returns. The code itself is `code`'s job, the
Pending/InProgress transitions `states`' job; a change is announced through `changes`."""

from __future__ import annotations

import base64
import copy
import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lambdahost.config import Settings
from lambdahost.control.clock import last_modified, now_ms
from lambdahost.control.lambda_ import rules
from lambdahost.control.lambda_.changes import FunctionChanges
from lambdahost.control.lambda_.code import CodeStore, b64
from lambdahost.control.lambda_.names import (
    LATEST,
    FunctionRef,
    check_name_length,
    function_arn,
    parse_function,
)
from lambdahost.control.lambda_.states import (
    FunctionStates,
    check_changeable,
    creating,
    updating,
)
from lambdahost.control.lambda_.targets import check_target
from lambdahost.control.lambda_.values import FunctionConfiguration, FunctionVersion
from lambdahost.errors import (
    InvalidParameterValue,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
    ValidationError,
)
from lambdahost.runtimes import policy
from lambdahost.store.db import Database
from lambdahost.store.tables import AliasRow, FunctionRow, LayerVersionRow, VersionRow

log = logging.getLogger("lambdahost.control")

# LATEST lives in `names`; the other services import it from here, with the service.
__all__ = [
    "LATEST",
    "STATE_FIELDS",
    "FunctionService",
    "FunctionVersion",
    "check_revision",
    "listed_configuration",
]

# What GetFunction shows and lists leave out: "ListFunctions returns a subset of the
# FunctionConfiguration fields. To get the additional fields (State, StateReasonCode,
# StateReason, LastUpdateStatus, LastUpdateStatusReason, LastUpdateStatusReasonCode) for a
# function or version, use GetFunction." (https://docs.aws.amazon.com/lambda/latest/api/
# API_ListFunctions.html). RuntimeVersionConfig is left out too (recorded AWS answers,
# localstack test_lambda_api.snapshot.json: test_list_functions, list_versions_result).
STATE_FIELDS = (
    "State",
    "StateReason",
    "StateReasonCode",
    "LastUpdateStatus",
    "LastUpdateStatusReason",
    "LastUpdateStatusReasonCode",
)
NOT_LISTED = (*STATE_FIELDS, "RuntimeVersionConfig")

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
DEFAULT_RECURSIVE_LOOP = "Terminate"
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


class FunctionService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        code: CodeStore,
        states: FunctionStates,
        changes: FunctionChanges,
    ) -> None:
        self.settings = settings
        self.db = db
        self.code = code
        self.states = states
        self.changes = changes

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
        check_name_length(ref.name)
        if ref.qualifier:
            raise InvalidParameterValue("Function name must not include a qualifier on create.")
        # As AWS: the package's size before the configuration, the runtime last of those.
        rules.check_zip_size(len((params.get("Code") or {}).get("ZipFile") or b""))
        rules.check_configuration(params)
        rules.check_tag_count(params.get("Tags") or {})
        self._check_dead_letter(params)
        if not params.get("Runtime") or not params.get("Handler"):
            raise InvalidParameterValue(
                "Runtime and Handler are mandatory parameters for functions created with "
                "deployment packages."
            )
        digest, size = self.code.store(params.get("Code") or {})
        now = now_ms()
        arn = self.arn(ref.name)
        config: dict[str, Any] = {
            "FunctionName": ref.name,
            "FunctionArn": arn,
            **copy.deepcopy(DEFAULTS),
            **{k: copy.deepcopy(params[k]) for k in SETTABLE if params.get(k) is not None},
            "CodeSize": size,
            "CodeSha256": b64(digest),
            "Version": LATEST,
            "LastModified": last_modified(now),
            "RevisionId": str(uuid.uuid4()),
            **creating(),
        }
        self._runtime_version(config)
        config["Architectures"] = list(params.get("Architectures") or ["x86_64"])
        config["LoggingConfig"] = logging_config(ref.name, params.get("LoggingConfig"))
        layer_digests = self.code.attach_layers(config, params.get("Layers"), digest)
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
        self.states.settle_later(ref.name)
        return config

    # -- read -----------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumps with every commit to this node's store: callers cache reads keyed by it."""
        return self.db.generation

    def get(self, identifier: str, qualifier: str | None = None) -> FunctionVersion:
        ref = self.ref(identifier)
        asked = ref.qualified(qualifier)
        version = asked or LATEST
        with self.db.session() as s:
            fn = s.get(FunctionRow, ref.name)
            row = s.get(VersionRow, (ref.name, version)) if fn else None
            if fn is None or row is None:
                # The ARN carries the qualifier asked for (in the name or as Qualifier).
                raise ResourceNotFound(f"Function not found: {self.arn(ref.name, asked)}")
            # Environments are keyed by the row's revision, which only code and configuration
            # changes renew: a settled transition or a tag renews RevisionId but not the code.
            configuration = dataclasses.replace(
                FunctionConfiguration.parse(row.config), revision_id=row.revision_id
            )
            return FunctionVersion(
                dict(row.config),
                configuration,
                row.code_sha256,
                self.code.directory(row.code_sha256),
                dict(fn.tags),
                tuple(self.code.directory(d) for d in row.layer_digests or ()),
            )

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
        listed = [listed_configuration(r.config, qualified=all_versions) for r in page]
        result: dict[str, Any] = {"Functions": listed}
        if len(rows) > limit:
            result["NextMarker"] = _encode_marker(page[-1].function_name, page[-1].version)
        return result

    def count_and_size(self) -> tuple[int, int]:
        """GetAccountSettings' AccountUsage: the functions, and the bytes of "deployment
        packages and layer archives" (https://docs.aws.amazon.com/lambda/latest/api/
        API_AccountUsage.html): every version's package, published ones too, and every
        layer version not deleted."""
        with self.db.session() as s:
            count = s.scalar(select(func.count()).select_from(FunctionRow)) or 0
            sizes = s.scalars(select(VersionRow.config)).all()
            layers = s.scalars(
                select(LayerVersionRow.info).where(LayerVersionRow.deleted.is_(False))
            ).all()
        packages = sum(int(c.get("CodeSize", 0)) for c in sizes)
        archives = sum(int((info.get("Content") or {}).get("CodeSize", 0)) for info in layers)
        return count, packages + archives

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

    # -- update ---------------------------------------------------------------------------

    def update_code(self, params: dict[str, Any]) -> dict[str, Any]:
        ref = self.ref(params["FunctionName"])
        _no_qualifier(ref)
        digest, size = self.code.store(params)
        if params.get("DryRun"):
            config = self.get(ref.name).config
            return {**config, "CodeSha256": b64(digest), "CodeSize": size}

        def change(config: dict[str, Any], row: VersionRow) -> None:
            config["CodeSha256"] = b64(digest)
            config["CodeSize"] = size
            if params.get("Architectures"):
                config["Architectures"] = list(params["Architectures"])
            row.code_sha256 = digest
            arns = [layer["Arn"] for layer in config.get("Layers", [])]
            if arns:
                row.layer_digests = self.code.attach_layers(config, arns, digest)

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
            environment = params.get("Environment")
            if environment is not None:
                # `Environment: {}` leaves the variables as they are; `{"Variables": {}}`
                # clears them, and the function shows `Environment: {Variables: {}}` from then
                # on, as one created with it does (recorded AWS answers, localstack
                # test_lambda_api.snapshot.json: functions created with empty variables).
                previous = (row.config.get("Environment") or {}).get("Variables")
                variables = environment.get("Variables", previous)
                if variables is None:
                    config.pop("Environment", None)
                else:
                    config["Environment"] = {"Variables": dict(variables)}
            if params.get("LoggingConfig") is not None:
                config["LoggingConfig"] = logging_config(ref.name, params["LoggingConfig"])
            if params.get("Layers") is not None:
                row.layer_digests = self.code.attach_layers(
                    config, params["Layers"], row.code_sha256
                )
            self._runtime_version(config)

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
            check_changeable(config)
            change(config, row)
            config["LastModified"] = last_modified()
            config["RevisionId"] = str(uuid.uuid4())
            updating(config)
            row.config = config
            row.revision_id = config["RevisionId"]
            row.settled = False
        self.changes.publish(name)
        self.states.settle_later(name)
        return config

    # -- delete and tags ------------------------------------------------------------------

    def delete(self, identifier: str, qualifier: str | None = None) -> None:
        """DeleteFunction: the whole function, or the published version `qualifier` names
        (refused while an alias routes to it). Aliases and $LATEST cannot be deleted here."""
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
            if version is None:
                s.delete(fn)
            else:
                if version.isdigit():
                    _check_no_alias_uses(s, ref.name, version)
                rows = [r for r in rows if r.version == version]
                if not rows and not version.isdigit():
                    raise ResourceNotFound(f"Function not found: {self.arn(ref.name, version)}")
                if not rows:  # a version not there (any more) is deleted already: 204, as AWS
                    return
            for row in rows:
                s.delete(row)
        self.changes.publish(ref.name)

    def tags_of(self, resource: str) -> dict[str, str]:
        with self.db.session() as s:
            return dict(self._tagged(s, resource).tags)

    def tag(self, resource: str, tags: dict[str, str]) -> None:
        if not tags:
            # Recorded AWS answer (localstack test_lambda_api.snapshot.json,
            # test_tag_exceptions: tag_empty_tags).
            raise InvalidParameterValue("An error occurred and the request cannot be processed.")
        with self.db.session() as s:
            fn = self._tagged(s, resource)
            merged = {**fn.tags, **tags}
            rules.check_tag_count(merged)
            fn.tags = merged
            self._new_revision(s, fn.name)

    def untag(self, resource: str, keys: Sequence[str]) -> None:
        if not keys:
            # An empty list leaves no `tagKeys` in the query string: AWS reads it as missing
            # (recorded: test_tag_exceptions, untag_empty_keys).
            raise ValidationError(
                "1 validation error detected: Value null at 'tagKeys' failed to satisfy "
                "constraint: Member must not be null"
            )
        with self.db.session() as s:
            fn = self._tagged(s, resource)
            fn.tags = {k: v for k, v in fn.tags.items() if k not in keys}
            self._new_revision(s, fn.name)

    # -- settings kept beside the configuration -----------------------------------------

    def recursion_config(self, identifier: str) -> dict[str, Any]:
        """GetFunctionRecursionConfig: Terminate unless set (https://docs.aws.amazon.com/
        lambda/latest/api/API_GetFunctionRecursionConfig.html)."""
        with self.db.session() as s:
            fn = self._function(s, identifier)
            return {"RecursiveLoop": fn.recursive_loop or DEFAULT_RECURSIVE_LOOP}

    def put_recursion_config(self, identifier: str, recursive_loop: str) -> dict[str, Any]:
        with self.db.session() as s:
            fn = self._function(s, identifier)
            fn.recursive_loop = recursive_loop
        return {"RecursiveLoop": recursive_loop}

    def code_signing_config(self, identifier: str) -> dict[str, Any]:
        """GetFunctionCodeSigningConfig. No function has one here yet: AWS answers an empty
        document for a function without one (recorded AWS answer, localstack
        test_lambda_api.snapshot.json, test_code_signing_not_found:
        get_function_csc_fnwithoutcsc)."""
        with self.db.session() as s:
            self._function(s, identifier)
        return {}

    def _function(self, s: Session, identifier: str) -> FunctionRow:
        name = self.ref(identifier).name
        fn = s.get(FunctionRow, name)
        if fn is None:
            raise ResourceNotFound(f"Function not found: {self.arn(name)}")
        return fn

    def _new_revision(self, s: Session, name: str) -> None:
        """TagResource and UntagResource give `$LATEST` a new RevisionId, as Lambda does."""
        row = s.get(VersionRow, (name, LATEST))
        if row is not None:
            row.config = {**row.config, "RevisionId": str(uuid.uuid4())}

    def _tagged(self, s: Session, resource: str) -> FunctionRow:
        if not resource.startswith("arn:"):
            raise InvalidParameterValue(f"Invalid ARN: {resource}")
        ref = self.ref(resource)
        if ref.qualifier:
            # Recorded AWS answer (localstack test_lambda_api.snapshot.json, test_tag_versions).
            raise InvalidParameterValue(
                "Tags on function aliases and versions are not supported. Please specify a "
                "function ARN."
            )
        fn = s.get(FunctionRow, ref.name)
        if fn is None:
            raise ResourceNotFound(f"Function not found: {self.arn(ref.name)}")
        return fn

    # -- helpers --------------------------------------------------------------------------

    def _check_dead_letter(self, params: dict[str, Any]) -> None:
        target = (params.get("DeadLetterConfig") or {}).get("TargetArn")
        if target:
            check_target(self.settings, target)

    def _runtime_version(self, config: dict[str, Any]) -> None:
        """`RuntimeVersionConfig`: the ARN the function's environments print on INIT_START."""
        runtime = config.get("Runtime")
        if runtime:
            arn = policy.version_arn(runtime, self.settings.region)
            config["RuntimeVersionConfig"] = {"RuntimeVersionArn": arn}
            if note := policy.decide(runtime).note:
                log.warning("%s: %s", config["FunctionName"], note)

    def _latest_row(self, s: Session, name: str) -> VersionRow:
        row = s.get(VersionRow, (name, LATEST))
        if row is None:
            raise ResourceNotFound(f"Function not found: {self.arn(name)}")
        return row


def _check_no_alias_uses(s: Session, name: str, version: str) -> None:
    """A version an alias points or routes to cannot be deleted."""
    aliases = s.scalars(select(AliasRow).where(AliasRow.function_name == name)).all()
    users = {a.name for a in aliases if a.function_version == version or version in a.routing}
    if users:
        raise ResourceConflict(
            f"Unable to delete version because the following aliases reference it: {sorted(users)}"
        )


def _no_qualifier(ref: FunctionRef) -> None:
    if ref.qualifier:
        raise InvalidParameterValue(
            "Qualifiers are not allowed on this operation; use the function name."
        )


def logging_config(name: str, asked: dict[str, Any] | None) -> dict[str, Any]:
    """LoggingConfig with AWS's defaults: Text to the function's own group; JSON logs at INFO
    unless a level is asked for (recorded AWS answers, localstack test_lambda_api.snapshot
    .json: TestLoggingConfig; https://docs.aws.amazon.com/lambda/latest/dg/
    monitoring-cloudwatchlogs-advanced.html)."""
    config = {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}", **(asked or {})}
    if config["LogFormat"] == "JSON":
        config.setdefault("ApplicationLogLevel", "INFO")
        config.setdefault("SystemLogLevel", "INFO")
    return config


def listed_configuration(config: dict[str, Any], *, qualified: bool) -> dict[str, Any]:
    """A version's configuration as ListFunctions and ListVersionsByFunction show it: without
    the state fields, and `$LATEST` with a qualified ARN where versions are listed with it
    (`qualified`: FunctionVersion=ALL, ListVersionsByFunction)."""
    listed = {k: v for k, v in config.items() if k not in NOT_LISTED}
    if qualified and config.get("Version") == LATEST:
        listed["FunctionArn"] = f"{config['FunctionArn']}:{LATEST}"
    return listed


def check_revision(expected: str | None, current: str, api: str = "GetFunction/GetAlias") -> None:
    """412 when the caller named a RevisionId (of a function, alias or policy) that is stale;
    `api` is the call the message tells the client to read the current one with."""
    if expected and expected != current:
        raise PreconditionFailed(
            "The Revision Id provided does not match the latest Revision Id. Call the "
            f"{api} API to retrieve the latest Revision Id"
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

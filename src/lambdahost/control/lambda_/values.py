"""Typed values the control plane hands upward, parsed once from the stored wire documents:
`invoke/` reads their attributes and `api/` never sees a database row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RETRIES = 2  # asynchronous invokes: 2 retries, events kept up to 6 hours
DEFAULT_MAX_AGE_S = 21_600
DEFAULT_EPHEMERAL_MB = 512


@dataclass(frozen=True)
class FunctionConfiguration:
    """What running a function version needs of its configuration."""

    name: str
    arn: str  # FunctionArn as the API shows it (qualified for a published version)
    version: str  # "$LATEST", "1", ...
    revision_id: str
    runtime: str
    handler: str
    memory_mb: int
    timeout_s: int
    ephemeral_mb: int
    environment: Mapping[str, str]  # the user's variables
    state: str  # Pending | Active | Inactive | Failed
    dead_letter_arn: str | None
    role: str = ""  # the execution role's ARN

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> FunctionConfiguration:
        return cls(
            name=config["FunctionName"],
            arn=config["FunctionArn"],
            version=config["Version"],
            revision_id=config["RevisionId"],
            runtime=config["Runtime"],
            handler=config["Handler"],
            memory_mb=int(config["MemorySize"]),
            timeout_s=int(config["Timeout"]),
            ephemeral_mb=int(
                (config.get("EphemeralStorage") or {}).get("Size", DEFAULT_EPHEMERAL_MB)
            ),
            environment=dict((config.get("Environment") or {}).get("Variables") or {}),
            state=config.get("State") or "Pending",
            dead_letter_arn=(config.get("DeadLetterConfig") or {}).get("TargetArn") or None,
            role=config.get("Role") or "",
        )


@dataclass(frozen=True)
class FunctionVersion:
    """A version as the rest of the platform sees it."""

    config: dict[str, Any]  # the wire document: what the API answers
    configuration: FunctionConfiguration  # the same, typed: what execution reads
    code_sha256: str  # hex
    code_dir: Path
    tags: dict[str, str]
    layer_dirs: tuple[Path, ...] = ()  # unpacked layers in the order they stack under /opt


@dataclass(frozen=True)
class AsyncPolicy:
    """How asynchronous invokes of one function version retry and where outcomes go."""

    maximum_retry_attempts: int = DEFAULT_RETRIES
    maximum_event_age_s: int = DEFAULT_MAX_AGE_S
    on_success: str | None = None  # destination ARNs
    on_failure: str | None = None

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> AsyncPolicy:
        destinations = config.get("DestinationConfig") or {}
        return cls(
            maximum_retry_attempts=int(config.get("MaximumRetryAttempts", DEFAULT_RETRIES)),
            maximum_event_age_s=int(config.get("MaximumEventAgeInSeconds", DEFAULT_MAX_AGE_S)),
            on_success=(destinations.get("OnSuccess") or {}).get("Destination") or None,
            on_failure=(destinations.get("OnFailure") or {}).get("Destination") or None,
        )


@dataclass(frozen=True)
class ResolvedLayer:
    """A layer version a function stacks, checked to exist and be usable here."""

    arn: str
    code_sha256: str  # hex: names the unpacked content
    code_size: int  # zipped bytes, as Layers[].CodeSize says
    unzipped_bytes: int


@dataclass(frozen=True)
class ProvisionedConfig:
    """A provisioned-concurrency request for one alias or version."""

    function_name: str
    qualifier: str
    requested: int
    last_modified: str

"""Lambda's documented limits and rules that botocore's model does not carry."""

from __future__ import annotations

import json
from typing import Any

from lambdahost.errors import InvalidParameterValue, LambdaError
from lambdahost.runtimes import RESERVED, SUPPORTED
from lambdahost.runtimes.policy import decide

SUPPORTED_RUNTIMES = SUPPORTED  # the runtime registry (`runtimes.RUNTIMES`) decides
MEMORY_MIN, MEMORY_MAX = 128, 10_240
TIMEOUT_MIN, TIMEOUT_MAX = 1, 900
EPHEMERAL_MIN, EPHEMERAL_MAX = 512, 10_240
ENV_MAX_BYTES = 4 * 1024
MAX_LAYERS = 5
MAX_TAGS = 50
ZIPPED_MAX = 50 * 1024 * 1024
UNZIPPED_MAX = 262_144_000
REQUEST_MAX = 70_167_211  # CreateFunction/UpdateFunctionCode body with a base64 zip

# The reserved variables are the runtime environment's; one list serves both sides.
RESERVED_ENV = RESERVED


class EntityTooLarge(LambdaError):
    status = 413
    code = "RequestEntityTooLargeException"


def check_configuration(params: dict[str, Any]) -> None:
    """Validate the configuration members present in a create or update request."""
    _range("MemorySize", params.get("MemorySize"), MEMORY_MIN, MEMORY_MAX, "MB")
    _range("Timeout", params.get("Timeout"), TIMEOUT_MIN, TIMEOUT_MAX, "seconds")
    storage = params.get("EphemeralStorage")
    if storage is not None:
        _range("EphemeralStorage.Size", storage.get("Size"), EPHEMERAL_MIN, EPHEMERAL_MAX, "MB")
    env = params.get("Environment")
    if env is not None:
        check_environment(env.get("Variables") or {})
    layers = params.get("Layers")
    if layers is not None and len(layers) > MAX_LAYERS:
        raise InvalidParameterValue(f"Cannot reference more than {MAX_LAYERS} layers.")
    if layers:
        check_layer_versions(layers)
    # AWS's own checks come first; the runtime last (`runtimes.policy` decides).
    check_runtime(params.get("Runtime"))
    if params.get("PackageType") == "Image":
        raise InvalidParameterValue(
            "PackageType Image is not supported by lambdahost yet; use PackageType Zip."
        )
    if params.get("VpcConfig", {}).get("SubnetIds"):
        raise InvalidParameterValue("VpcConfig is not supported by lambdahost yet.")
    if params.get("FileSystemConfigs"):
        raise InvalidParameterValue("FileSystemConfigs are not supported by lambdahost yet.")


def check_layer_versions(arns: list[str]) -> None:
    """One version of each layer: the first pair naming one layer twice is refused, even the
    same version twice (recorded AWS answers, localstack test_lambda_api.snapshot.json,
    test_layer_function_exceptions: two_/three_/two_identical_layer_versions...)."""
    seen: dict[str, str] = {}
    for arn in arns:
        layer = arn.rsplit(":", 1)[0]
        if layer in seen:
            raise InvalidParameterValue(
                "Two different versions of the same layer are not allowed to be referenced in "
                f"the same function. {seen[layer]} and {arn} are versions of the same layer."
            )
        seen[layer] = arn


def check_tag_count(tags: dict[str, str]) -> None:
    """50 tags a function, counting those it has (recorded AWS answers, localstack
    test_lambda_api.snapshot.json, test_tag_limits: 50 taken, a 51st refused)."""
    if len(tags) > MAX_TAGS:
        raise InvalidParameterValue("Number of tags exceeds resource tag limit.")


def check_runtime(runtime: str | None) -> None:
    """Refuse a runtime this server neither serves nor stands in for, with AWS's message for
    the runtimes AWS blocks on create and ours (naming what is served) for the rest."""
    if runtime is None:
        return
    decision = decide(runtime)
    if decision.refusal is not None:
        raise InvalidParameterValue(decision.refusal)


def check_environment(variables: dict[str, str]) -> None:
    reserved = sorted(k for k in variables if k in RESERVED_ENV)
    if reserved:
        raise InvalidParameterValue(
            "Lambda was unable to configure your environment variables because the environment "
            "variables you have provided contains reserved keys that are currently not supported "
            f"for modification. Reserved keys used in this request: {', '.join(reserved)}"
        )
    measured = json.dumps(variables, separators=(",", ":"))
    if len(measured.encode()) > ENV_MAX_BYTES:
        raise InvalidParameterValue(
            "Lambda was unable to configure your environment variables because the environment "
            "variables you have provided exceeded the 4KB limit. String measured: " + measured
        )


def check_zip_size(size: int) -> None:
    if size > ZIPPED_MAX:
        # Recorded AWS answer (localstack test_lambda_api.snapshot.json,
        # test_oversized_zipped_create_lambda).
        raise EntityTooLarge(f"Zipped size must be smaller than {ZIPPED_MAX} bytes")


def _range(name: str, value: int | None, low: int, high: int, unit: str) -> None:
    if value is not None and not low <= value <= high:
        raise InvalidParameterValue(
            f"{name} value must be between {low} and {high} {unit}; got {value}."
        )

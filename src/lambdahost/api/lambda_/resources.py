"""Which account's resource a Lambda call is on, and the IAM action it needs.

A call names its resource by name (the caller's own account) or by ARN, which may name another
account. The front door then runs the call in the owner's account, once
`control/iam.authorize` allowed it (for another account: the function's or layer version's
resource-based policy must grant the caller the action)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# An ARN or partial ARN naming an account: arn:aws:lambda:<region>:<account>:..., or
# <account>:function:<name> (the partial form functions accept).
_ACCOUNT = re.compile(r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:)?(?P<account>\d{12}):")
_FUNCTION = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:)?(?:\d{12}:)?(?:function:)?"
    r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?$"
)
_LAYER = re.compile(r":layer:(?P<name>[a-zA-Z0-9_-]+)(?::(?P<version>\d+))?$")

# IAM actions whose names differ from their operation's.
_ACTIONS = {
    "Invoke": "lambda:InvokeFunction",
    "InvokeWithResponseStream": "lambda:InvokeFunction",
    "GetLayerVersionByArn": "lambda:GetLayerVersion",
}


@dataclass(frozen=True)
class LambdaResource:
    """The resource a call acts on, in another account than the caller's."""

    account_id: str
    action: str
    kind: str  # "function" or "layer"
    name: str
    qualifier: str = ""  # function: the version or alias ("" unqualified)
    version: int = 0  # layer: the version


def action_of(operation: str) -> str:
    return _ACTIONS.get(operation, f"lambda:{operation}")


def foreign_resource(
    operation: str, params: dict[str, Any], account_id: str
) -> LambdaResource | None:
    """The resource of another account than `account_id` the call names, or None."""
    identifier = params.get("FunctionName") or params.get("Resource")
    if isinstance(identifier, str) and (m := _ACCOUNT.match(identifier)):
        if m["account"] == account_id:
            return None
        fn = _FUNCTION.match(identifier)
        name = fn["name"] if fn else identifier
        qualifier = params.get("Qualifier") or (fn["qualifier"] if fn else None) or ""
        if qualifier == "$LATEST":
            qualifier = ""
        return LambdaResource(m["account"], action_of(operation), "function", name, qualifier)
    layer = params.get("LayerName") or params.get("Arn")
    if isinstance(layer, str) and (m := _ACCOUNT.match(layer)):
        if m["account"] == account_id:
            return None
        lm = _LAYER.search(layer)
        name = lm["name"] if lm else layer
        raw = params.get("VersionNumber") or (lm["version"] if lm else None) or 0
        return LambdaResource(m["account"], action_of(operation), "layer", name, version=int(raw))
    return None

"""Who calls, and whether they may: the one place authorization is decided.

The front door turns a verified access key into a `Caller` and asks `authorize` before any
handler runs. Today every key is its account's root, so a call on the caller's own account is
always allowed; a call on another account's resource is allowed only when that resource's
policy grants the caller's account (AWS's rule for cross-account access: the resource-based
policy must allow it, and the caller's identity policy too, which for a root is implied).

IAM policies plug in here: users and roles with identity policies become more kinds of
`Caller` (their ARN in `arn`), and `authorize` evaluates their policies before the resource's.
Nothing else needs to change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lambdahost.errors import LambdaError


@dataclass(frozen=True)
class Caller:
    """A verified identity: its account, its principal ARN and the access key it signed with."""

    account_id: str
    arn: str
    access_key_id: str = ""

    @classmethod
    def root(cls, account_id: str, access_key_id: str = "") -> Caller:
        return cls(account_id, f"arn:aws:iam::{account_id}:root", access_key_id)


class AccessDenied(LambdaError):
    status = 403
    code = "AccessDeniedException"


# Given the caller, whether the resource's policy allows the action (None: it has no policy
# that could, e.g. the resource is not shared across accounts).
ResourcePolicy = Callable[[Caller, str], bool]


def authorize(
    caller: Caller,
    action: str,
    resource_arn: str,
    owner: str,
    resource_policy: ResourcePolicy | None = None,
) -> None:
    """Allow `caller` to do `action` (`lambda:InvokeFunction`) on `resource_arn`, owned by
    account `owner`, or raise AccessDeniedException with AWS's wording."""
    if owner == caller.account_id:
        return  # identity policies of non-root callers will be evaluated here
    if resource_policy is not None and resource_policy(caller, action):
        return
    raise AccessDenied(
        f"User: {caller.arn} is not authorized to perform: {action} on resource: "
        f"{resource_arn} because no resource-based policy allows the {action} action"
    )


def principal_matches(principal: object, caller: Caller) -> bool:
    """Whether a policy statement's Principal names `caller`: `*`, `{"AWS": "*"}`, the caller's
    account id, its root ARN or its own ARN (as a string or in a list)."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    named = principal.get("AWS")
    names = named if isinstance(named, list) else [named]
    accepted = {"*", caller.account_id, f"arn:aws:iam::{caller.account_id}:root", caller.arn}
    return any(isinstance(n, str) and n in accepted for n in names)

"""Who calls, and whether they may: the one place authorization is decided.

The front door turns a verified access key into a `Caller` and asks `authorize` before any
handler runs. Two kinds of caller exist:

- an account's root (`Caller.root`): the access keys of the credentials file;
- a role session (`AssumedRoleCaller`): temporary credentials from STS AssumeRole, or the
  execution role's credentials in a function's environment. Its ARN is the assumed-role ARN
  (`arn:aws:sts::<account>:assumed-role/<role>/<session>`).

There is no IAM policy evaluation yet: a role session may do everything its account's root
may. A call on the caller's own account is allowed; a call on another account's resource only
when that resource's policy grants the caller (AWS's rule for cross-account access: the
resource-based policy must allow it, and the caller's identity policy too, which is implied
today). The one identity policy that exists is a deny: revoking a role's active sessions
(`lambdahost credentials revoke-sessions`, AWS's AWSRevokeOlderSessions) refuses every
action to that role's sessions issued before a moment, passed in as `identity_denies`.

IAM policies plug in here: roles and users with identity policies evaluate them in
`authorize`, before the resource's (`identity_denies` grows into that evaluation). Nothing
else needs to change."""

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

    @property
    def user_id(self) -> str:
        """AWS's `aws:userid` (GetCallerIdentity's UserId): the account id for a root."""
        return self.account_id

    def names(self) -> set[str]:
        """The ARNs a policy's Principal may name this caller by."""
        return {self.arn}


@dataclass(frozen=True, kw_only=True)
class AssumedRoleCaller(Caller):
    """A session of a role: `arn` is the assumed-role ARN, `role_arn` the role's own."""

    role_arn: str
    session_name: str
    role_session_id: str  # `<role id>:<session name>`
    issued_ms: int  # aws:TokenIssueTime, what revoking older sessions compares

    @property
    def user_id(self) -> str:
        return self.role_session_id

    def names(self) -> set[str]:
        # A resource policy naming the role grants its sessions too, as in AWS.
        return {self.arn, self.role_arn}


class AccessDenied(LambdaError):
    status = 403
    code = "AccessDeniedException"


# Given the caller, whether the resource's policy allows the action (None: it has no policy
# that could, e.g. the resource is not shared across accounts).
ResourcePolicy = Callable[[Caller, str], bool]
# Given the caller and the action, whether an identity-based policy explicitly denies it.
IdentityDenies = Callable[[Caller, str], bool]
# "No permissions are required to perform this operation. If an administrator attaches a
# policy to your identity that explicitly denies access to the sts:GetCallerIdentity action,
# you can still perform this operation." (STS API reference, GetCallerIdentity)
ALWAYS_ALLOWED = frozenset({"sts:GetCallerIdentity"})


def authorize(
    caller: Caller,
    action: str,
    resource_arn: str,
    owner: str,
    resource_policy: ResourcePolicy | None = None,
    identity_denies: IdentityDenies | None = None,
) -> None:
    """Allow `caller` to do `action` (`lambda:InvokeFunction`) on `resource_arn`, owned by
    account `owner`, or raise AccessDeniedException with AWS's wording."""
    if action in ALWAYS_ALLOWED:
        return
    if identity_denies is not None and identity_denies(caller, action):
        raise AccessDenied(
            f"User: {caller.arn} is not authorized to perform: {action} on resource: "
            f"{resource_arn} with an explicit deny in an identity-based policy"
        )
    if owner == caller.account_id:
        return  # identity policies of roles and users will be evaluated here
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
    accepted = {"*", caller.account_id, f"arn:aws:iam::{caller.account_id}:root", *caller.names()}
    return any(isinstance(n, str) and n in accepted for n in names)

"""Role sessions: STS AssumeRole, the execution-role credentials of function environments,
and who signed a request (`Principals`: root keys and session tokens alike).

There is no IAM: every role ARN of an account names a role that exists, trusts its account's
callers and Lambda, and may last up to 12 hours (`MAX_SESSION_DURATION_S`). A role of another
account cannot be assumed (no trust policy could allow it). Issuing a session writes nothing
(`tokens`), so it costs microseconds on a cold start."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lambdahost.config import Keyring
from lambdahost.control.clock import now_ms
from lambdahost.control.iam import AccessDenied, AssumedRoleCaller, Caller
from lambdahost.control.sts.tokens import Session, TokenKey, role_parts
from lambdahost.errors import LambdaError, NotImplementedOperation

log = logging.getLogger("lambdahost.sts")

DEFAULT_DURATION_S = 3600  # AssumeRole's default DurationSeconds
# A role's MaxSessionDuration. Without IAM every role has the largest AWS allows (its default
# is one hour): botocore's model already bounds DurationSeconds to 900..43200.
MAX_SESSION_DURATION_S = 43_200
CHAINED_MAX_DURATION_S = 3600  # a session assuming a role: "role chaining"
# How long a function environment's credentials last (`Settings.credentials_lifetime_s`).
DEFAULT_FUNCTION_LIFETIME_S = 3600.0
# An environment stops taking requests this long before its credentials would expire under
# a request (at most a minute; a tenth of very short lifetimes, for tests).
MAX_RENEWAL_MARGIN_S = 60.0

EXPIRED_MESSAGE = "The security token included in the request is expired"


class ExpiredToken(LambdaError):
    """Query services (STS) spell it `ExpiredToken` (`api/protocols/query.py`)."""

    status = 403
    code = "ExpiredTokenException"


class StsValidationError(LambdaError):
    code = "ValidationError"  # STS's name for constraint failures


@dataclass(frozen=True)
class FunctionCredentials:
    """An environment's execution-role credentials, as the variables its runtime gets."""

    variables: Mapping[str, str]  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
    arn: str  # the assumed-role ARN the function calls as
    expires_at: float  # epoch seconds
    renew_by: float  # epoch seconds: no request may still run after this

    def outlive(self, now: float, seconds: float) -> bool:
        """Whether a request started `now` and running `seconds` ends before `renew_by`."""
        return now + seconds <= self.renew_by


class Sessions:
    """Issues role sessions and proves them. Platform-wide (one key for every account);
    sessions carry their role ARN, and with it their account."""

    def __init__(
        self, key: TokenKey, function_lifetime_s: float = DEFAULT_FUNCTION_LIFETIME_S
    ) -> None:
        if function_lifetime_s <= 0:
            raise ValueError("credentials must last a while")
        self.key = key
        self.function_lifetime_s = function_lifetime_s
        self.renewal_margin_s = min(MAX_RENEWAL_MARGIN_S, function_lifetime_s / 10)
        self._warned: set[tuple[str, str]] = set()  # (account, role) said once each

    # -- issuing --------------------------------------------------------------------------

    def assume_role(self, caller: Caller, params: Mapping[str, Any]) -> dict[str, Any]:
        """STS AssumeRole's output for `caller`, members validated against the model already."""
        role_arn: str = params["RoleArn"]
        session_name: str = params["RoleSessionName"]
        try:
            _, account, _ = role_parts(role_arn)
        except ValueError:
            account = None
        if account is None and not role_arn.startswith("arn:"):
            raise StsValidationError("Request ARN is invalid")
        if account != caller.account_id:
            # Not a role, or another account's: no trust policy here could let the caller in.
            raise AccessDenied(
                f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on "
                f"resource: {role_arn}"
            )
        duration = params.get("DurationSeconds", DEFAULT_DURATION_S)
        if duration > MAX_SESSION_DURATION_S:
            raise StsValidationError(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
            )
        if isinstance(caller, AssumedRoleCaller) and duration > CHAINED_MAX_DURATION_S:
            raise StsValidationError(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles "
                "assumed by role chaining."
            )
        if params.get("Policy") is not None or params.get("PolicyArns"):
            # A session policy only ever narrows; ignoring it would grant more than asked.
            raise NotImplementedOperation(
                "lambdahost does not evaluate IAM policies yet, so it refuses AssumeRole with "
                "a session policy (Policy or PolicyArns) rather than ignore it."
            )
        issued = now_ms()
        creds = self.key.seal(role_arn, session_name, issued, issued + duration * 1000)
        session = creds.session
        output: dict[str, Any] = {
            "Credentials": {
                "AccessKeyId": session.access_key_id,
                "SecretAccessKey": creds.secret_access_key,
                "SessionToken": creds.session_token,
                "Expiration": session.expires_ms // 1000,
            },
            "AssumedRoleUser": {"AssumedRoleId": session.user_id, "Arn": session.arn},
        }
        if params.get("SourceIdentity"):
            output["SourceIdentity"] = params["SourceIdentity"]
        return output

    def for_function(
        self, account_id: str, role_arn: str, function_name: str
    ) -> FunctionCredentials | None:
        """Fresh credentials of a function's execution role for one new environment, the
        function's name as the session name (as Lambda names them); None when the role is
        not one of the function's own account (no credentials rather than another
        account's)."""
        try:
            _, account, _ = role_parts(role_arn)
        except ValueError:
            account = None
        if account != account_id:
            if (account_id, role_arn) not in self._warned:
                self._warned.add((account_id, role_arn))
                log.warning(
                    "function %s of account %s: its role %s is not a role of its account, so "
                    "its environments get no credentials",
                    function_name,
                    account_id,
                    role_arn,
                )
            return None
        issued = now_ms()
        expires = issued + int(self.function_lifetime_s * 1000)
        creds = self.key.seal(role_arn, function_name, issued, expires)
        expires_at = expires / 1000
        return FunctionCredentials(
            {
                "AWS_ACCESS_KEY_ID": creds.session.access_key_id,
                "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
                "AWS_SESSION_TOKEN": creds.session_token,
            },
            creds.session.arn,
            expires_at,
            expires_at - self.renewal_margin_s,
        )

    # -- proving --------------------------------------------------------------------------

    def open(self, access_key_id: str, token: str, at_ms: int | None = None) -> Session | None:
        """The live session a request's key and token name; None when they are not one of
        ours; ExpiredToken when it was and has expired."""
        session = self.key.open(access_key_id, token)
        if session is None:
            return None
        if session.expires_ms <= (now_ms() if at_ms is None else at_ms):
            raise ExpiredToken(EXPIRED_MESSAGE)
        return session


@dataclass(frozen=True)
class Identity:
    """Who an access key (and session token) belongs to, and the secret its signature uses."""

    secret: str
    caller: Caller


class Principals:
    """Every key the server accepts: the accounts' root keys (`Keyring`) and the temporary
    keys of role sessions (`Sessions`)."""

    def __init__(self, keyring: Keyring, sessions: Sessions) -> None:
        self.keyring = keyring
        self.sessions = sessions

    def identify(self, access_key_id: str, token: str | None) -> Identity | None:
        """The identity behind a request's access key and `X-Amz-Security-Token`; None when
        there is none (an unknown key, a forged token, a token sent with a root key, a
        temporary key without its token: AWS answers them all alike). Raises ExpiredToken."""
        if token:
            session = self.sessions.open(access_key_id, token)
            if session is None:
                return None
            caller = AssumedRoleCaller(
                session.account_id,
                session.arn,
                access_key_id,
                role_arn=session.role_arn,
                session_name=session.session_name,
                role_session_id=session.user_id,
                issued_ms=session.issued_ms,
            )
            return Identity(self.sessions.key.secret_for(access_key_id), caller)
        found = self.keyring.lookup(access_key_id)
        if found is None:
            return None
        return Identity(found.secret_access_key, Caller.root(found.account_id, access_key_id))

    def signer(self, token: str | None) -> Signer:
        """A `secret_for(access_key_id)` for `sigv4.begin`, for a request carrying `token`."""
        return Signer(self, token)


class Signer:
    """Finds the secret of a request's access key (with its session token) for SigV4, and
    remembers whose it is (`found`)."""

    def __init__(self, principals: Principals, token: str | None) -> None:
        self.principals = principals
        self.token = token
        self.found: Identity | None = None

    def secret_for(self, access_key_id: str) -> str | None:
        self.found = self.principals.identify(access_key_id, self.token)  # may raise expired
        return self.found.secret if self.found is not None else None

"""Resource-based policies on functions (AddPermission, GetPolicy, RemovePermission).

Each qualifier has its own policy, as in Lambda: the unqualified function's ("" here) and
one per version or alias. Statements are kept in the IAM shape GetPolicy returns, so
evaluation reads the same document the client sees.

They are evaluated for the anonymous (public) caller of a function URL, and for callers of
another account (`control/iam.authorize`); a caller of the function's own account is its
root, always allowed."""

from __future__ import annotations

import json
import re
import uuid
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lambdahost.control.iam import Caller, principal_matches
from lambdahost.control.lambda_.changes import FunctionChanges
from lambdahost.control.lambda_.functions import LATEST, FunctionService, check_revision
from lambdahost.errors import InvalidParameterValue, LambdaError, ResourceConflict, ResourceNotFound
from lambdahost.store.tables import AliasRow, FunctionPolicyRow, FunctionRow, VersionRow

POLICY_MAX = 20 * 1024  # bytes of policy document, as Lambda's limit
INVOKE_FUNCTION = "lambda:InvokeFunction"
INVOKE_FUNCTION_URL = "lambda:InvokeFunctionUrl"
_ACCOUNT = re.compile(r"^\d{12}$")
_IAM_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:(iam|sts)::\d{12}:\S+$")
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9.-]*\.(amazonaws\.com(\.cn)?|amazon\.com)$")


class PolicyLengthExceeded(LambdaError):
    code = "PolicyLengthExceededException"


class PermissionService:
    def __init__(self, functions: FunctionService, changes: FunctionChanges) -> None:
        self.functions = functions
        self.db = functions.db
        changes.subscribe(self.forget_removed)

    # -- the API --------------------------------------------------------------------------

    def add(self, params: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self._target(params["FunctionName"], params.get("Qualifier"))
        if qualifier == LATEST:
            raise InvalidParameterValue("We currently do not support adding policies for $LATEST.")
        statement = self._statement(params, name, qualifier)
        with self.db.session() as s:
            self._check_exists(s, name, qualifier)
            row = s.get(FunctionPolicyRow, (name, qualifier))
            if row is None:
                row = FunctionPolicyRow(
                    function_name=name, qualifier=qualifier, statements=[], revision_id=""
                )
                s.add(row)
            # An alias's policy is guarded by the alias's own RevisionId (GetAlias tells it);
            # the message names GetPolicy either way (recorded AWS answers, localstack
            # test_lambda_api.snapshot.json: add_permission_alias_revision_exception).
            alias = (
                s.get(AliasRow, (name, qualifier))
                if qualifier and not qualifier.isdigit()
                else None
            )
            guard = alias.revision_id if alias is not None else row.revision_id
            check_revision(params.get("RevisionId"), guard, "GetPolicy")
            if any(st["Sid"] == statement["Sid"] for st in row.statements):
                raise ResourceConflict(
                    f"The statement id ({statement['Sid']}) provided already exists. Please "
                    "provide a new statement id, or remove the existing statement."
                )
            statements = [*row.statements, statement]
            size = len(json.dumps(_document(statements)))
            if size > POLICY_MAX:
                raise PolicyLengthExceeded(
                    f"The final policy size ({size}) is bigger than the limit ({POLICY_MAX})."
                )
            row.statements = statements
            row.revision_id = str(uuid.uuid4())
            return {"Statement": json.dumps(statement)}

    def get(self, function: str, qualifier: str | None) -> dict[str, Any]:
        name, qualifier = self._target(function, qualifier)
        with self.db.session() as s:
            self._check_exists(s, name, qualifier)
            row = s.get(FunctionPolicyRow, (name, qualifier))
            if row is None or not row.statements:
                raise ResourceNotFound("The resource you requested does not exist.")
            return {"Policy": json.dumps(_document(row.statements)), "RevisionId": row.revision_id}

    def remove(
        self, function: str, statement_id: str, qualifier: str | None, revision_id: str | None
    ) -> None:
        name, qualifier = self._target(function, qualifier)
        with self.db.session() as s:
            self._check_exists(s, name, qualifier)
            row = s.get(FunctionPolicyRow, (name, qualifier))
            if row is None or not any(st["Sid"] == statement_id for st in row.statements):
                raise ResourceNotFound(f"Statement {statement_id} is not found in resource policy.")
            check_revision(revision_id, row.revision_id, "GetPolicy")
            remaining = [st for st in row.statements if st["Sid"] != statement_id]
            if remaining:
                row.statements = remaining
                row.revision_id = str(uuid.uuid4())
            else:
                s.delete(row)

    # -- evaluation -----------------------------------------------------------------------

    def allows_public(
        self, function_name: str, qualifier: str, action: str, context: dict[str, str]
    ) -> bool:
        """Whether the policy of `function_name:qualifier` lets an anonymous caller do
        `action`, given the request's condition keys (`context`). Deny wins over Allow."""
        with self.db.session() as s:
            row = s.get(FunctionPolicyRow, (function_name, qualifier))
            statements = list(row.statements) if row is not None else []
        allowed = False
        for st in statements:
            if not (_public(st) and _action_matches(st, action) and _conditions_hold(st, context)):
                continue
            if st.get("Effect") == "Deny":
                return False
            allowed = True
        return allowed

    def allows(self, caller: Caller, function_name: str, qualifier: str, action: str) -> bool:
        """Whether the policy of `function_name:qualifier` ("" unqualified) lets `caller`, of
        another account, do `action`. Deny wins over Allow; a statement with conditions a
        direct call cannot carry (SourceArn, SourceAccount, ...) grants nothing."""
        with self.db.session() as s:
            row = s.get(FunctionPolicyRow, (function_name, qualifier))
            statements = list(row.statements) if row is not None else []
        allowed = False
        for st in statements:
            if not (
                principal_matches(st.get("Principal"), caller)
                and _action_matches(st, action)
                and _conditions_hold(st, {})
            ):
                continue
            if st.get("Effect") == "Deny":
                return False
            allowed = True
        return allowed

    def forget_removed(self, function_name: str) -> None:
        """Drop the policies of a deleted function or of its deleted versions."""
        with self.db.session() as s:
            exists = s.get(FunctionRow, function_name) is not None
            rows = s.scalars(
                select(FunctionPolicyRow).where(FunctionPolicyRow.function_name == function_name)
            ).all()
            for row in rows:
                gone = not exists or (
                    row.qualifier.isdigit()
                    and s.get(VersionRow, (function_name, row.qualifier)) is None
                )
                if gone:
                    s.delete(row)

    # -- helpers --------------------------------------------------------------------------

    def _target(self, function: str, qualifier: str | None) -> tuple[str, str]:
        """(function name, qualifier) with "" for the unqualified function."""
        ref = self.functions.ref(function)
        return ref.name, ref.qualified(qualifier) or ""

    def _check_exists(self, s: Session, name: str, qualifier: str) -> None:
        self.functions.require(s, name, qualifier)

    def _statement(self, params: dict[str, Any], name: str, qualifier: str) -> dict[str, Any]:
        action = params["Action"]
        if action != "*" and not re.fullmatch(r"lambda:(\*|[A-Za-z]+)", action):
            raise InvalidParameterValue(f"The action {action} is not a Lambda action.")
        conditions: dict[str, dict[str, str]] = {}

        def condition(operator: str, key: str, value: str) -> None:
            conditions.setdefault(operator, {})[key] = value

        if params.get("SourceArn"):
            condition("ArnLike", "AWS:SourceArn", params["SourceArn"])
        if params.get("SourceAccount"):
            condition("StringEquals", "AWS:SourceAccount", params["SourceAccount"])
        if params.get("PrincipalOrgID"):
            condition("StringEquals", "aws:PrincipalOrgID", params["PrincipalOrgID"])
        if params.get("EventSourceToken"):
            condition("StringEquals", "lambda:EventSourceToken", params["EventSourceToken"])
        if params.get("FunctionUrlAuthType"):
            if action != INVOKE_FUNCTION_URL:
                raise InvalidParameterValue(
                    "The FunctionUrlAuthType parameter is only supported for the "
                    f"{INVOKE_FUNCTION_URL} action."
                )
            condition("StringEquals", "lambda:FunctionUrlAuthType", params["FunctionUrlAuthType"])
        if params.get("InvokedViaFunctionUrl"):
            if action != INVOKE_FUNCTION:
                raise InvalidParameterValue(
                    "The InvokedViaFunctionUrl parameter is only supported for the "
                    f"{INVOKE_FUNCTION} action."
                )
            condition("Bool", "lambda:InvokedViaFunctionUrl", "true")
        statement: dict[str, Any] = {
            "Sid": params["StatementId"],
            "Effect": "Allow",
            "Principal": _principal(params["Principal"]),
            "Action": action,
            "Resource": self.functions.arn(name, qualifier or None),
        }
        if conditions:
            statement["Condition"] = conditions
        return statement


def _document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Id": "default", "Statement": statements}


def _principal(principal: str) -> str | dict[str, str]:
    """The statement's Principal for AddPermission's: `*`, an account id, an IAM ARN, or a
    service (`<name>.amazonaws.com`, or Alexa's `<name>.amazon.com`)."""
    if principal == "*":
        return "*"
    if _ACCOUNT.match(principal):
        return {"AWS": f"arn:aws:iam::{principal}:root"}
    if _IAM_ARN.match(principal):
        return {"AWS": principal}
    if _SERVICE.match(principal):
        return {"Service": principal}
    # Recorded AWS answer (localstack test_lambda_api.snapshot.json,
    # test_permission_exceptions: add_permission_principal_invalid, "invalid.nonaws.com").
    raise InvalidParameterValue(
        "The provided principal was invalid. Please check the principal and try again."
    )


def _public(statement: dict[str, Any]) -> bool:
    principal = statement.get("Principal")
    return principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*")


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    actions = statement.get("Action")
    listed = actions if isinstance(actions, list) else [actions]
    return any(isinstance(a, str) and fnmatchcase(action.lower(), a.lower()) for a in listed)


def _conditions_hold(statement: dict[str, Any], context: dict[str, str]) -> bool:
    """Every condition must hold; a key the request does not carry fails (as in IAM)."""
    for operator, pairs in (statement.get("Condition") or {}).items():
        for key, expected in pairs.items():
            actual = _lookup(context, key)
            if actual is None:
                return False
            wanted = expected if isinstance(expected, list) else [expected]
            if not any(_compare(operator, actual, str(w)) for w in wanted):
                return False
    return True


def _lookup(context: dict[str, str], key: str) -> str | None:
    # IAM condition keys are case-insensitive.
    lowered = key.lower()
    return next((v for k, v in context.items() if k.lower() == lowered), None)


def _compare(operator: str, actual: str, expected: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual == expected
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() == expected.lower()
    if operator in ("StringLike", "ArnLike"):
        return fnmatchcase(actual, expected)
    if operator == "Bool":
        return actual.lower() == expected.lower()
    return False  # an operator we do not evaluate never grants

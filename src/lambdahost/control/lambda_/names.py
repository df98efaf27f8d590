"""Function identifiers as clients send them: a name, `name:qualifier`, or (partial) ARNs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lambdahost.errors import InvalidParameterValue, ResourceNotFound, ValidationError

_IDENTIFIER = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):)?"
    r"(?:(?P<account>\d{12}):)?(?:function:)?"
    r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?$"
)
NAME_MAX = 64
LATEST = "$LATEST"  # the unpublished version every function has


@dataclass(frozen=True)
class FunctionRef:
    name: str
    qualifier: str | None = None

    def qualified(self, qualifier: str | None) -> str | None:
        """The qualifier a call means: the one given separately (e.g. `Qualifier=`) or the one
        in the name; they must agree when both are there."""
        if self.qualifier and qualifier and self.qualifier != qualifier:
            raise InvalidParameterValue(
                "The derived qualifier from the function name does not match the specified "
                "qualifier."
            )
        return qualifier or self.qualifier


def parse_function(identifier: str, *, region: str, account_id: str) -> FunctionRef:
    """Accept every form AWS accepts; an ARN of another region is not reachable here."""
    m = _IDENTIFIER.match(identifier)
    if not m:
        raise ValidationError(
            f"1 validation error detected: Value '{identifier}' at 'functionName' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\\d{1}:)?(\\d{12}:)?"
            "(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
        )
    if m["account"] and m["account"] != account_id:
        # The front door refuses another account's ARN first (403, `control.iam`).
        raise ResourceNotFound(f"Function not found: {identifier}")
    if m["region"] and m["region"] != region:
        # https://docs.aws.amazon.com/lambda/latest/api/API_GetFunction.html#API_GetFunction_Errors
        # (ResourceNotFoundException), worded as AWS answers a cross-region ARN.
        raise ResourceNotFound(
            f"Functions from '{m['region']}' are not reachable in this region ('{region}')"
        )
    # A name longer than NAME_MAX is refused by CreateFunction (`check_name_length`); every
    # other operation simply does not find it, as in Lambda.
    return FunctionRef(m["name"], m["qualifier"])


def check_name_length(name: str) -> None:
    """CreateFunction's answer to a name over 64 characters: the validation wording, under
    InvalidParameterValueException (recorded AWS answer, localstack
    test_lambda_api.snapshot.json: function_name_too_long-create_function)."""
    if len(name) > NAME_MAX:
        raise InvalidParameterValue(
            f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy "
            f"constraint: Member must have length less than or equal to {NAME_MAX}"
        )


def function_arn(name: str, *, region: str, account_id: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn

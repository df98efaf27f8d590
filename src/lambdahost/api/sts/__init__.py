"""STS (query protocol: form body in, XML out): GetCallerIdentity.

Every caller signs with the root credentials, so every caller is the account's root."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from lambdahost.api.model import WireResponse
from lambdahost.platform import Platform

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
CONTENT_TYPE = "text/xml"


async def handle(platform: Platform, body: bytes) -> WireResponse:
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    action = form.get("Action", [""])[0]
    if action != "GetCallerIdentity":
        if not action:
            return query_error("MissingAction", "Missing Action")
        return query_error(
            "InvalidAction",
            f"Could not find operation {action} for version "
            f"{form.get('Version', ['2011-06-15'])[0]} (lambdahost implements GetCallerIdentity)",
        )
    account = platform.settings.account_id
    result = (
        f"<Arn>arn:aws:iam::{escape(account)}:root</Arn>"
        f"<UserId>{escape(account)}</UserId>"
        f"<Account>{escape(account)}</Account>"
    )
    xml = (
        f'<GetCallerIdentityResponse xmlns="{NAMESPACE}">'
        f"<GetCallerIdentityResult>{result}</GetCallerIdentityResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        "</GetCallerIdentityResponse>"
    )
    return WireResponse(200, {}, xml.encode(), CONTENT_TYPE)


def query_error(code: str, message: str, status: int = 400) -> WireResponse:
    xml = (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return WireResponse(status, {}, xml.encode(), CONTENT_TYPE)

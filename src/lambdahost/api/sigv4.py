"""AWS Signature Version 4 verification, server side.

`verify()` checks one request signed either with an `Authorization: AWS4-HMAC-SHA256 …` header
or as a presigned URL (`X-Amz-Signature` & co. in the query), and returns the access key id.
Temporary credentials add a session token (`X-Amz-Security-Token`, `session_token()`): the
caller's `secret_for` reads it to find the key's secret, and may refuse it (expired) by raising.
It is framework-free: the ASGI layer builds a `SignedRequest` from the raw wire data
(`scope["raw_path"]`, `scope["query_string"]`, the header list, the body) and maps `AuthError`
to the AWS error envelope.

A server checks in two steps so that nothing is read for a request that cannot be genuine:
`begin()` judges the head alone (structure, access key, clock window, credential scope, that
`host` is signed) and `PendingSignature.finish()` takes the body's SHA-256 once it is read.

The canonical request is rebuilt exactly as botocore builds it, so for non-S3 services the
canonical URI is the URI-encoding of the path *as sent* (already percent-encoded, so `%3A`
becomes `%253A`), after removing dot segments and duplicate slashes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

__all__ = ["AuthError", "PendingSignature", "SignedRequest", "begin", "session_token", "verify"]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_PRESIGN_EXPIRES = 604_800  # 7 days, as in AWS
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_PRESIGN_PARAMS = frozenset((b"X-Amz-Algorithm", b"X-Amz-Credential", b"X-Amz-Signature"))

MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(frozen=True)
class SignedRequest:
    """One HTTP request as it arrived on the wire."""

    method: str
    path: str  # raw path as sent (percent-encoded), without the query
    query: str  # raw query string, without the "?"
    headers: list[tuple[str, str]]  # as received: names in any case, repeats allowed
    body: bytes = b""  # unused by `begin`, which runs before the body is read


class AuthError(Exception):
    """A request that failed authentication; `code` is the AWS error code (HTTP 403)."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class _Credential:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class _Claim:
    """What the client claims: who signed, when, over which headers, and the signature."""

    credential: _Credential
    amz_date: str
    signed_headers: list[str]
    signature: str
    expires: int | None  # presigned only
    canonical_query: str


def verify(
    request: SignedRequest,
    secret_for: Callable[[str], str | None],
    *,
    region: str | None = None,
    service: str | None = None,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=15),
) -> str:
    """Verify the request's SigV4 signature and return its access key id, or raise AuthError.

    `secret_for(access_key_id)` returns the secret access key, or None when the key is unknown.
    `region` and `service`, when given, are what the credential scope must name.
    """
    pending = begin(request, secret_for, region=region, service=service, now=now, max_skew=max_skew)
    digest = hashlib.sha256(request.body).hexdigest() if pending.needs_body_hash else ""
    return pending.finish(digest)


def session_token(request: SignedRequest) -> str | None:
    """The request's session token (temporary credentials): the `X-Amz-Security-Token`
    header, or the query parameter of a presigned URL; None when it has none."""
    for name, value in request.headers:
        if name.lower() == "x-amz-security-token":
            return value.strip() or None
    if "X-Amz-Security-Token=" in request.query:
        for raw_name, raw_value in _parse_query(request.query):
            if raw_name == b"X-Amz-Security-Token":
                return raw_value.decode("utf-8", "replace") or None
    return None


_SCOPE_SERVICE = re.compile(r"Credential=[^/,\s]*/[^/]*/[^/]*/([^/,\s]+)/")


def scoped_service(headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
    """The service a request's credential scope names, unverified: which service a request
    to `/` is for (`begin` then proves it). None when the request is not signed."""
    found = _SCOPE_SERVICE.search(headers.get("authorization", ""))
    if found is not None:
        return found.group(1)
    parts = query.get("X-Amz-Credential", [""])[0].split("/")
    return parts[3] if len(parts) == 5 else None


def begin(
    request: SignedRequest,
    secret_for: Callable[[str], str | None],
    *,
    region: str | None = None,
    service: str | None = None,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=15),
) -> PendingSignature:
    """Check everything a request's head can prove, before its body is read: the header's
    structure, the access key, the clock window, the credential scope and the signed headers.

    `request.body` is ignored; hand the body's SHA-256 to `PendingSignature.finish`. When the
    client sent `x-amz-content-sha256` the signature covers that header, so it is checked here
    already and `finish` only compares the body with it."""
    headers = _header_map(request.headers)
    params = _parse_query(request.query)
    authorization = headers.get("authorization")
    if authorization is not None:
        claim = _claim_from_header(authorization[0], headers, params)
    elif any(name in _PRESIGN_PARAMS for name, _ in params):
        claim = _claim_from_query(params)
    else:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")

    signed_at = _parse_amz_date(claim.amz_date)
    credential = claim.credential
    if credential.date != claim.amz_date[:8]:
        raise AuthError(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{credential.date}' != '{claim.amz_date[:8]}', "
            f"from '{claim.amz_date}'.",
        )
    # A signature made for another region or service must not be replayable here.
    if region is not None and credential.region != region:
        raise AuthError(
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region, not '{credential.region}'.",
        )
    if service is not None and credential.service != service:
        raise AuthError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    secret = secret_for(credential.access_key)
    if secret is None:
        raise AuthError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    _check_time(claim, signed_at, now or datetime.now(UTC), max_skew)

    canonical_head = "\n".join(
        (
            request.method.upper(),
            _canonical_uri(request.path),
            claim.canonical_query,
            _canonical_headers(claim.signed_headers, headers),
            ";".join(claim.signed_headers),
        )
    )
    key = _signing_key(secret, credential.date, credential.region, credential.service)
    pending = PendingSignature(
        credential.access_key, claim, canonical_head, key, _claimed_payload_hash(headers)
    )
    if pending.claimed_hash is not None:
        pending.check_signature(pending.claimed_hash)
    return pending


@dataclass(frozen=True)
class PendingSignature:
    """A request whose head checked out; what remains depends on the body."""

    access_key: str
    claim: _Claim
    canonical_head: str  # the canonical request up to (without) the payload hash
    key: bytes
    claimed_hash: str | None  # x-amz-content-sha256 (hex or UNSIGNED-PAYLOAD), if sent

    @property
    def needs_body_hash(self) -> bool:
        return self.claimed_hash != UNSIGNED_PAYLOAD

    def finish(self, body_sha256: str) -> str:
        """Check the body's SHA-256 (hex) against the signature; return the access key id."""
        if self.claimed_hash is None:
            self.check_signature(body_sha256)
        elif self.claimed_hash != UNSIGNED_PAYLOAD and not hmac.compare_digest(
            self.claimed_hash, body_sha256
        ):
            raise AuthError("InvalidSignatureException", MISMATCH_MESSAGE)
        return self.access_key

    def check_signature(self, payload_hash: str) -> None:
        canonical_request = f"{self.canonical_head}\n{payload_hash}"
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                self.claim.amz_date,
                self.claim.credential.scope,
                hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest(),
            )
        )
        expected = hmac.new(self.key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        provided = self.claim.signature.lower().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(expected.encode(), provided):
            raise AuthError("InvalidSignatureException", MISMATCH_MESSAGE)


# --- parsing the claim ---------------------------------------------------------------------


def _claim_from_header(
    authorization: str, headers: dict[str, list[str]], params: list[tuple[bytes, bytes]]
) -> _Claim:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AuthError(
            "IncompleteSignatureException",
            f"Unsupported Authorization Type: expected '{ALGORITHM}'.",
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields[name.strip()] = value.strip()
    problems = [
        f"Authorization header requires '{name}' parameter."
        for name in ("Credential", "Signature", "SignedHeaders")
        if not fields.get(name)
    ]
    amz_date = _header_date(headers)
    if amz_date is None:
        problems.append(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if problems or amz_date is None:
        raise AuthError("IncompleteSignatureException", " ".join(problems))
    return _Claim(
        credential=_parse_credential(fields["Credential"]),
        amz_date=amz_date,
        signed_headers=_parse_signed_headers(fields["SignedHeaders"]),
        signature=fields["Signature"],
        expires=None,
        canonical_query=_canonical_query(params, exclude_signature=False),
    )


def _claim_from_query(params: list[tuple[bytes, bytes]]) -> _Claim:
    values: dict[str, str] = {}
    for raw_name, raw_value in params:
        name = raw_name.decode("utf-8", "replace")
        if name.startswith("X-Amz-") and name not in values:
            values[name] = raw_value.decode("utf-8", "replace")
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date")
    if any(not values.get(name) for name in (*required, "X-Amz-SignedHeaders")):
        raise AuthError(
            "IncompleteSignatureException",
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', "
            "'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders'. "
            "Re-examine the query-string parameters.",
        )
    if values["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthError(
            "IncompleteSignatureException",
            f"X-Amz-Algorithm only supports '{ALGORITHM}'.",
        )
    expires = None
    if "X-Amz-Expires" in values:
        raw = values["X-Amz-Expires"]
        if not raw.isdigit() or not 0 < int(raw) <= MAX_PRESIGN_EXPIRES:
            raise AuthError(
                "IncompleteSignatureException",
                f"X-Amz-Expires must be a number of seconds between 1 and {MAX_PRESIGN_EXPIRES}.",
            )
        expires = int(raw)
    return _Claim(
        credential=_parse_credential(values["X-Amz-Credential"]),
        amz_date=values["X-Amz-Date"],
        signed_headers=_parse_signed_headers(values["X-Amz-SignedHeaders"]),
        signature=values["X-Amz-Signature"],
        expires=expires,
        canonical_query=_canonical_query(params, exclude_signature=True),
    )


def _parse_credential(raw: str) -> _Credential:
    parts = raw.split("/")
    if len(parts) != 5 or not all(parts):
        raise AuthError(
            "IncompleteSignatureException",
            f"Credential should be scoped by 'ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request', "
            f"got '{'/'.join(parts[1:])}'.",
        )
    access_key, date, region, service, terminator = parts
    if terminator != "aws4_request":
        raise AuthError(
            "InvalidSignatureException",
            f"Credential should be scoped with a valid terminator: 'aws4_request', "
            f"not '{terminator}'.",
        )
    return _Credential(access_key, date, region, service)


def _parse_signed_headers(raw: str) -> list[str]:
    names = raw.split(";")
    if any(not name or name != name.strip().lower() for name in names):
        raise AuthError(
            "IncompleteSignatureException",
            "SignedHeaders must be a ';'-separated list of lower-case header names.",
        )
    # Without the host, a signature could be replayed against another endpoint.
    if "host" not in names:
        raise AuthError(
            "IncompleteSignatureException",
            "'Host' must be a 'SignedHeader' in the AWS Authorization.",
        )
    return names


def _header_date(headers: dict[str, list[str]]) -> str | None:
    if "x-amz-date" in headers:
        return headers["x-amz-date"][0].strip()
    if "date" in headers:
        try:
            parsed = parsedate_to_datetime(headers["date"][0])
        except (TypeError, ValueError):
            return headers["date"][0].strip()  # rejected by _parse_amz_date with AWS's message
        if parsed.tzinfo is None:  # "-0000" means UTC with unknown local zone
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC).strftime(_AMZ_DATE_FORMAT)
    return None


def _parse_amz_date(amz_date: str) -> datetime:
    try:
        return datetime.strptime(amz_date, _AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise AuthError(
            "IncompleteSignatureException",
            f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. "
            "See http://en.wikipedia.org/wiki/ISO_8601",
        ) from None


def _check_time(claim: _Claim, signed_at: datetime, now: datetime, max_skew: timedelta) -> None:
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    minutes = int(max_skew.total_seconds() // 60)
    if signed_at > now + max_skew:
        raise AuthError(
            "InvalidSignatureException",
            f"Signature not yet current: {claim.amz_date} is still later than "
            f"{_fmt(now + max_skew)} ({_fmt(now)} + {minutes} min.)",
        )
    if claim.expires is not None:
        expires_at = signed_at + timedelta(seconds=claim.expires)
        if now > expires_at:
            raise AuthError(
                "InvalidSignatureException",
                f"Signature expired: {_fmt(expires_at)} is now earlier than {_fmt(now)} "
                f"({claim.amz_date} + {claim.expires} sec.)",
            )
    elif signed_at < now - max_skew:
        raise AuthError(
            "InvalidSignatureException",
            f"Signature expired: {claim.amz_date} is now earlier than "
            f"{_fmt(now - max_skew)} ({_fmt(now)} - {minutes} min.)",
        )


def _fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_AMZ_DATE_FORMAT)


# --- the canonical request -----------------------------------------------------------------


def _header_map(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    mapped: dict[str, list[str]] = {}
    for name, value in headers:
        mapped.setdefault(name.lower(), []).append(value)
    return mapped


def _parse_query(query: str) -> list[tuple[bytes, bytes]]:
    """Decoded (name, value) pairs. '+' means a space, as for the app's own query parsing
    (Starlette), so the signature covers the values the handler will actually read."""
    pairs = []
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            pairs.append((_unquote_plus(name), _unquote_plus(value)))
    return pairs


def _unquote_plus(text: str) -> bytes:
    return unquote_to_bytes(text.replace("+", " "))


def _canonical_query(params: list[tuple[bytes, bytes]], *, exclude_signature: bool) -> str:
    encoded = sorted(
        (quote(name, safe="-_.~"), quote(value, safe="-_.~"))
        for name, value in params
        if not (exclude_signature and name == b"X-Amz-Signature")
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _canonical_uri(raw_path: str) -> str:
    return quote(_remove_dot_segments(raw_path), safe="/~", errors="surrogateescape")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 plus collapsing repeated slashes, as botocore does before signing."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    leading = "/" if path.startswith("/") else ""
    trailing = "/" if path.endswith("/") and segments else ""
    return leading + "/".join(segments) + trailing


def _canonical_headers(signed_headers: list[str], headers: dict[str, list[str]]) -> str:
    # Trailing "\n" included: the canonical request has a blank line after the headers.
    lines = [
        f"{name}:{','.join(' '.join(value.split()) for value in headers.get(name, ()))}\n"
        for name in signed_headers
    ]
    return "".join(lines)


def _claimed_payload_hash(headers: dict[str, list[str]]) -> str | None:
    claimed = headers.get("x-amz-content-sha256")
    if claimed is None:
        return None
    value = claimed[0].strip()
    if value == UNSIGNED_PAYLOAD or _HEX_SHA256.fullmatch(value):
        return value
    # A streaming/chunked mode we do not implement, or garbage: never a valid signature.
    raise AuthError("InvalidSignatureException", MISMATCH_MESSAGE)


@lru_cache(maxsize=1024)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """HMAC chain AWS4+secret → date → region → service → aws4_request; valid for a whole day."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key

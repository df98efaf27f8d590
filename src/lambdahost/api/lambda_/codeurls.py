"""Presigned, expiring download URLs for function code (GetFunction's Code.Location)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

PREFIX = "/_lambdahost/code/"
LIFETIME_S = 600  # AWS's presigned S3 URLs for code last 10 minutes


class CodeUrls:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def url_for(self, base_url: str, digest: str) -> str:
        expires = int(time.time()) + LIFETIME_S
        return (
            f"{base_url}{PREFIX}{digest}?expires={expires}&signature={self._sign(digest, expires)}"
        )

    def valid(self, digest: str, expires: str, signature: str) -> bool:
        try:
            moment = int(expires)
        except ValueError:
            return False
        if moment < time.time():
            return False
        return hmac.compare_digest(self._sign(digest, moment), signature)

    def _sign(self, digest: str, expires: int) -> str:
        return hmac.new(self._key, f"{digest}:{expires}".encode(), hashlib.sha256).hexdigest()

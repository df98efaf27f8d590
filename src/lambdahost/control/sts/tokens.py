"""Session tokens: temporary credentials that need no database to issue or to verify.

A session is sealed into its own token, HMAC-SHA256 over everything it claims, so the server
proves a token by recomputing one MAC (about a microsecond) instead of looking it up, and
issuing one writes nothing:

    token   = base64( 0x01 | payload | HMAC(token key, 0x01 | payload) )
    payload = access key id, role ARN, session name, issued and expiry (epoch ms), by newlines

The secret access key is not in the token at all: it is HMAC(secret key, access key id), so
only the server can derive it, and a token is useless without the signature its secret
makes. Both keys derive from one 32-byte key kept in `<data dir>/sts.key` (0600), the only
secret at rest here; deleting it invalidates every session at once. It is shared state:
every node of a cluster must hold the same file.

The payload is authenticated, not encrypted: it names nothing secret (the access key id
travels in every request's `Credential` anyway), as AWS's own tokens leak nothing that the
credentials' `GetCallerIdentity` would not tell."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

KEY_FILE = "sts.key"
KEY_BYTES = 32
VERSION = b"\x01"
MAC_BYTES = 32
# Far above any token we issue (a 2,048-character role ARN makes ~2.8 kB): refuse larger input
# before decoding it.
MAX_TOKEN_CHARS = 8192
ACCESS_KEY_PREFIX = "ASIA"  # AWS's prefix of temporary access keys
ROLE_ID_PREFIX = "AROA"  # AWS's prefix of role ids

# arn:<partition>:iam::<account>:role/<path/><name>: IAM's role names and paths.
ROLE_ARN = re.compile(
    r"arn:(?P<partition>aws[a-zA-Z-]*):iam::(?P<account>\d{12}):role/"
    r"(?P<path>(?:[\w+=,.@-]+/)*)(?P<name>[\w+=,.@-]{1,64})"
)


@dataclass(frozen=True)
class Session:
    """What a session token claims, proven."""

    access_key_id: str
    role_arn: str
    session_name: str
    issued_ms: int
    expires_ms: int

    @property
    def account_id(self) -> str:
        return role_parts(self.role_arn)[1]

    @property
    def arn(self) -> str:
        """arn:aws:sts::<account>:assumed-role/<role name>/<session name> (no role path)."""
        return assumed_role_arn(self.role_arn, self.session_name)

    @property
    def user_id(self) -> str:
        """AWS's `aws:userid` of a role session: `<role id>:<session name>`."""
        return f"{role_id(self.role_arn)}:{self.session_name}"


@dataclass(frozen=True)
class SessionCredentials:
    session: Session
    secret_access_key: str
    session_token: str


@lru_cache(maxsize=4096)  # every request of a session asks again
def role_parts(role_arn: str) -> tuple[str, str, str]:
    """(partition, account id, role name) of a role ARN; ValueError when it is not one."""
    found = ROLE_ARN.fullmatch(role_arn)
    if found is None:
        raise ValueError(f"{role_arn!r} is not a role ARN")
    return found["partition"], found["account"], found["name"]


def assumed_role_arn(role_arn: str, session_name: str) -> str:
    partition, account, name = role_parts(role_arn)
    return f"arn:{partition}:sts::{account}:assumed-role/{name}/{session_name}"


@lru_cache(maxsize=4096)
def role_id(role_arn: str) -> str:
    """A stable unique id in AWS's form (`AROA` + 17 characters) for a role. There is no IAM
    to assign one when the role is made, so it is derived from the ARN."""
    digest = hashlib.sha256(role_arn.encode()).digest()
    return ROLE_ID_PREFIX + base64.b32encode(digest).decode()[:17]


class TokenKey:
    """Seals sessions into tokens and opens them again (see the module's docstring)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a session key has {KEY_BYTES} bytes")
        self._mac_key = hmac.new(key, b"lambdahost session token", hashlib.sha256).digest()
        self._secret_key = hmac.new(key, b"lambdahost session secret", hashlib.sha256).digest()

    @classmethod
    def in_dir(cls, data_dir: Path) -> TokenKey:
        """The data dir's key, made (0600) the first time."""
        return cls(load_or_create_key(data_dir / KEY_FILE))

    def seal(
        self, role_arn: str, session_name: str, issued_ms: int, expires_ms: int
    ) -> SessionCredentials:
        access_key_id = ACCESS_KEY_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode()
        session = Session(access_key_id, role_arn, session_name, issued_ms, expires_ms)
        fields = (access_key_id, role_arn, session_name, str(issued_ms), str(expires_ms))
        sealed = VERSION + "\n".join(fields).encode()
        mac = hmac.digest(self._mac_key, sealed, "sha256")
        token = base64.b64encode(sealed + mac).decode()
        return SessionCredentials(session, self.secret_for(access_key_id), token)

    def open(self, access_key_id: str, token: str) -> Session | None:
        """The session `token` seals, if it is genuine and was issued with `access_key_id`;
        None otherwise. Whether it has expired is the caller's question."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return None
        sealed, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not sealed.startswith(VERSION):
            return None
        expected = hmac.digest(self._mac_key, sealed, "sha256")
        if not hmac.compare_digest(expected, mac):
            return None
        # Sealed by us, so well formed; the key id must be the one the request was signed with.
        key, role_arn, session_name, issued, expires = sealed[1:].decode().split("\n")
        if not hmac.compare_digest(key.encode(), access_key_id.encode()):
            return None
        return Session(key, role_arn, session_name, int(issued), int(expires))

    def secret_for(self, access_key_id: str) -> str:
        """The secret access key of a temporary access key id (40 characters, as AWS's)."""
        digest = hmac.digest(self._secret_key, access_key_id.encode(), "sha256")
        return base64.b64encode(digest).decode()[:40]


def load_or_create_key(path: Path) -> bytes:
    """32 random bytes kept in `path` (0600): read, or made once. Written aside and linked
    into place, so two processes making it at once agree on the one that got there first and
    nobody ever reads a half-written key."""
    if not path.exists():
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(aside, path)
            except FileExistsError:
                pass  # another process won: use its key
        finally:
            aside.unlink()
    if stat.S_IMODE(path.lstat().st_mode) != 0o600:
        os.chmod(path, 0o600)  # an older version or a careless copy left it open
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path} is not a session key ({len(key)} bytes)")
    return key

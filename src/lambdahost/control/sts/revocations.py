"""Revoking a role's active sessions, as AWS's IAM console does it: every session of the role
issued before a moment is denied every action (AWS attaches the AWSRevokeOlderSessions policy,
a Deny on `aws:TokenIssueTime` before that moment; sessions issued afterwards work).

The moment is kept per role in the account's store (`role_session_revocations`), written by
`lambdahost credentials revoke-sessions` straight into the store, even while the server runs.
Tokens carry their issue time, so a session's check is a dict lookup against the cutoffs
cached here; the cache reads the store again when it is older than `REFRESH_S`, so a
revocation takes effect within that (AWS: "can take a few seconds")."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from lambdahost.control.clock import now_ms
from lambdahost.control.iam import AssumedRoleCaller, Caller
from lambdahost.store.db import Database
from lambdahost.store.tables import RoleRevocationRow

REFRESH_S = 1.0


class SessionRevocations:
    """One account's revoked roles: role ARN → sessions issued before this (epoch ms) are
    denied."""

    def __init__(self, db: Database, refresh_s: float = REFRESH_S) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self._cutoffs: dict[str, int] = {}
        self._read_at = float("-inf")  # monotonic time of the last read
        self._lock = threading.Lock()

    def revoke(self, role_arn: str, at_ms: int | None = None) -> int:
        """Deny the role's sessions issued before `at_ms` (default: now); returns the cutoff.
        A later revocation moves the cutoff forward, never back."""
        cutoff = now_ms() if at_ms is None else at_ms
        with self.db.session() as session:
            row = session.get(RoleRevocationRow, role_arn)
            if row is None:
                session.add(RoleRevocationRow(role_arn=role_arn, not_before_ms=cutoff))
            else:
                row.not_before_ms = cutoff = max(row.not_before_ms, cutoff)
        with self._lock:
            self._cutoffs[role_arn] = cutoff
        return cutoff

    @property
    def stale(self) -> bool:
        """Whether `refresh()` is due before `denies` can be trusted (cheap: for the loop)."""
        return time.monotonic() - self._read_at >= self.refresh_s

    def refresh(self) -> None:
        """Read the cutoffs from the store again (blocking: off the event loop). Requests
        that found the cache stale together read it once."""
        with self._lock:
            if not self.stale:
                return
            self._read_at = time.monotonic()  # the others waiting here return at once
        with self.db.session() as session:
            rows = session.execute(select(RoleRevocationRow)).scalars().all()
            cutoffs = {row.role_arn: row.not_before_ms for row in rows}
        with self._lock:
            self._cutoffs.update(cutoffs)  # revocations are never undone

    def denies(self, caller: Caller, action: str) -> bool:
        """The identity policy revocation attaches: whether it denies `caller` (any action)."""
        if not isinstance(caller, AssumedRoleCaller):
            return False
        cutoff = self._cutoffs.get(caller.role_arn)
        return cutoff is not None and caller.issued_ms < cutoff

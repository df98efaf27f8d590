"""The function state machine, as Lambda shows it to clients and waiters.

Create:  State Pending → Active (or Failed when the code cannot be prepared).
Update:  LastUpdateStatus InProgress → Successful (or Failed).

A change is written in its first state and settled `delay_s` later by the scheduler (SDK
waiters expect to see the intermediate state). Rows not settled yet carry `settled=False`, so
transitions a killed server left half-way are finished at the next start (`settle_unfinished`)."""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from lambdahost.control.lambda_.code import CodeStore
from lambdahost.errors import ResourceConflict
from lambdahost.store.db import Database
from lambdahost.store.tables import VersionRow

Scheduler = Callable[[float, Callable[[], None]], None]  # (delay s, what to run then)


def creating() -> dict[str, str]:
    """The state members of a function that was just created."""
    return {
        "State": "Pending",
        "StateReason": "The function is being created.",
        "StateReasonCode": "Creating",
    }


def check_changeable(config: dict[str, Any]) -> None:
    """409 while an earlier create or update has not settled."""
    if config.get("State") == "Pending":
        raise ResourceConflict(
            "The operation cannot be performed at this time. The function is currently "
            "in the following state: Pending"
        )
    if config.get("LastUpdateStatus") == "InProgress":
        raise ResourceConflict(
            "The operation cannot be performed at this time. An update is in progress "
            f"for resource: {config['FunctionArn']}"
        )


def updating(config: dict[str, Any]) -> None:
    """Mark `config` as being updated."""
    config["LastUpdateStatus"] = "InProgress"
    config["LastUpdateStatusReason"] = "The function is being created."
    config["LastUpdateStatusReasonCode"] = "Creating"


def settled(config: dict[str, Any], failure: str | None) -> dict[str, Any]:
    """`config` after its transition finished (`failure`: why the code is not usable).

    The transition is a change of its own: Lambda gives it a new RevisionId, so a client
    holding the Pending/InProgress one gets 412 (PreconditionFailed) after it settled."""
    config = copy.deepcopy(config)
    if config.get("State") == "Pending" or config.get("LastUpdateStatus") == "InProgress":
        config["RevisionId"] = str(uuid.uuid4())
    if config.get("State") == "Pending":
        if failure:
            config.update(State="Failed", StateReason=failure, StateReasonCode="InternalError")
        else:
            config.update(State="Active", LastUpdateStatus="Successful")
            for key in ("StateReason", "StateReasonCode"):
                config.pop(key, None)
    if config.get("LastUpdateStatus") == "InProgress":
        for key in ("LastUpdateStatusReason", "LastUpdateStatusReasonCode"):
            config.pop(key, None)
        if failure:
            config.update(
                LastUpdateStatus="Failed",
                LastUpdateStatusReason=failure,
                LastUpdateStatusReasonCode="InternalError",
            )
        else:
            config["LastUpdateStatus"] = "Successful"
    return config


class FunctionStates:
    """Settles `$LATEST` after a create or update (and a version published with it), now or
    after `delay_s`."""

    def __init__(self, db: Database, code: CodeStore, delay_s: float, schedule: Scheduler) -> None:
        self.db = db
        self.code = code
        self.delay_s = delay_s
        self.schedule = schedule

    def settle_later(self, name: str) -> None:
        self.schedule(self.delay_s, lambda: self.settle(name))

    def settle(self, name: str) -> None:
        """Move a Pending function to Active, an InProgress update to Successful, and a
        version published with the change (Publish=True) from Pending to Active."""
        with self.db.session() as s:
            rows = s.scalars(
                select(VersionRow).where(
                    VersionRow.function_name == name, VersionRow.settled.is_(False)
                )
            ).all()
            for row in rows:
                row.config = settled(row.config, self.code.prepare(row.code_sha256))
                row.settled = True

    def settle_unfinished(self) -> int:
        """Finish transitions a killed server left Pending/InProgress. Returns how many."""
        with self.db.session() as s:
            names = sorted(
                set(
                    s.scalars(select(VersionRow.function_name).where(VersionRow.settled.is_(False)))
                )
            )
        for name in names:
            self.settle(name)
        return len(names)


def thread_timer(delay: float, fn: Callable[[], None]) -> None:
    """A scheduler for when no event loop runs (e.g. before the server started)."""
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()

"""The Lambda control services on a temporary SQLite database and blob store, wired as
`lambdahost.platform` wires them, without the HTTP server or any sandbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lambdahost.config import Settings
from lambdahost.control.lambda_.aliases import AliasService
from lambdahost.control.lambda_.changes import FunctionChanges
from lambdahost.control.lambda_.code import CodeStore
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.layers import LayerService
from lambdahost.control.lambda_.states import FunctionStates
from lambdahost.control.lambda_.versions import VersionService
from lambdahost.store.blobs import BlobStore
from lambdahost.store.db import Database


@dataclass
class Lambda:
    """The services, and the Pending/InProgress transitions they scheduled, run on demand."""

    db: Database
    functions: FunctionService
    versions: VersionService
    aliases: AliasService
    layers: LayerService
    scheduled: list[Callable[[], None]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def settle(self) -> None:
        """What the scheduler would do after `transition_delay_s`: finish every transition."""
        while self.scheduled:
            self.scheduled.pop(0)()


def open_services(data_dir: Path) -> Lambda:
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=data_dir, transition_delay_s=0.0)
    db = Database.in_dir(data_dir)
    db.migrate()
    blobs = BlobStore(data_dir / "blobs")
    scheduled: list[Callable[[], None]] = []
    changes = FunctionChanges()
    changed: list[str] = []
    changes.subscribe(changed.append)
    layers = LayerService(settings, db, blobs)
    functions = wire_functions(settings, db, blobs, layers, scheduled.append, changes)
    return Lambda(
        db,
        functions,
        VersionService(functions),
        AliasService(functions),
        layers,
        scheduled,
        changed,
    )


def wire_functions(
    settings: Settings,
    db: Database,
    blobs: BlobStore,
    layers: LayerService,
    schedule: Callable[[Callable[[], None]], None],
    changes: FunctionChanges | None = None,
) -> FunctionService:
    """FunctionService with its collaborators, as platform.py builds it; transitions are
    handed to `schedule` instead of a timer."""
    code = CodeStore(blobs, layers.resolve_for_function)
    states = FunctionStates(db, code, settings.transition_delay_s, lambda _d, fn: schedule(fn))
    return FunctionService(settings, db, code, states, changes or FunctionChanges())

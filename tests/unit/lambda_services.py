"""The Lambda control services on a temporary SQLite database and blob store, wired as
`lambdahost.platform` wires them, without the HTTP server or any sandbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lambdahost.config import Settings
from lambdahost.control.lambda_.aliases import AliasService
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.layers import LayerService
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
    functions = FunctionService(settings, db, blobs)
    layers = LayerService(settings, db, blobs)
    functions.layers = layers.resolve_for_function
    services = Lambda(db, functions, VersionService(functions), AliasService(functions), layers)
    functions.use_scheduler(lambda delay, fn: services.scheduled.append(fn))
    functions.on_change(services.changed.append)
    return services

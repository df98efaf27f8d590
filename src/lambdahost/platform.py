"""The platform: one object that owns the store, the services and the environment pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from lambdahost.config import Settings, prepare_data_dir
from lambdahost.control.lambda_.aliases import AliasService
from lambdahost.control.lambda_.changes import FunctionChanges
from lambdahost.control.lambda_.code import CodeStore
from lambdahost.control.lambda_.concurrency import ConcurrencyService
from lambdahost.control.lambda_.event_configs import EventConfigService
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.layers import LayerService
from lambdahost.control.lambda_.permissions import PermissionService
from lambdahost.control.lambda_.states import FunctionStates, thread_timer
from lambdahost.control.lambda_.urls import UrlService
from lambdahost.control.lambda_.versions import VersionService
from lambdahost.invoke.capacity import (
    HostCapacity,
    StartGate,
    default_cold_starts,
    default_pids_budget,
    limit_backend_parent,
)
from lambdahost.invoke.concurrency import ConcurrencyLimiter
from lambdahost.invoke.destinations import Destinations
from lambdahost.invoke.dispatcher import Dispatcher
from lambdahost.invoke.environment import provisions
from lambdahost.invoke.logbook import FunctionLogs
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.invoke.provisioned import ProvisionedConcurrency
from lambdahost.invoke.queue import Doorbell, EventQueue
from lambdahost.invoke.service import Invoker
from lambdahost.sandbox import open_backend
from lambdahost.store.blobs import BlobStore
from lambdahost.store.db import Database
from lambdahost.store.logs import LogStore

log = logging.getLogger("lambdahost")


class Platform:
    """The composition root: builds every part in dependency order, handing each its
    collaborators through its constructor. Nothing is wired after construction."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data_dir = settings.data_dir
        prepare_data_dir(data_dir)  # 0700: environments, code and credentials live here
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        # Shared state: the store and the blob store.
        self.db = Database.in_dir(data_dir)
        self.db.migrate()
        self.blobs = BlobStore(data_dir / "blobs")
        self.logs = LogStore(self.db)
        # Control: resources and their rules.
        self.layers = LayerService(settings, self.db, self.blobs)
        self.code = CodeStore(self.blobs, self.layers.resolve_for_function)
        self.states = FunctionStates(
            self.db, self.code, settings.transition_delay_s, self._call_later
        )
        self.changes = FunctionChanges()
        self.functions = FunctionService(settings, self.db, self.code, self.states, self.changes)
        self.versions = VersionService(self.functions)
        self.aliases = AliasService(self.functions)
        self.urls = UrlService(self.functions, self.changes)
        self.permissions = PermissionService(self.functions, self.changes)
        self.event_configs = EventConfigService(settings, self.functions)
        self.concurrency = ConcurrencyService(
            self.functions, settings.account_concurrency, self._refresh_reserved
        )
        # Invoke. Node-local: what this host holds and how many environments it starts at once.
        self.function_logs = FunctionLogs(self.logs)
        self.capacity = HostCapacity.from_settings(
            settings.memory_budget, settings.disk_budget, data_dir, _state_dir(data_dir)
        )
        starts = StartGate(
            settings.cold_starts or default_cold_starts(),
            settings.cold_start_queue,
            settings.cold_start_wait_s,
        )
        self.pool = EnvironmentPool(
            open_backend(_state_dir(data_dir), settings.sandbox, provisions=provisions()),
            keepalive_s=settings.keepalive_s,
            capacity=self.capacity,
            starts=starts,
            logs=self.function_logs.outside_invoke,
        )
        self.limiter = ConcurrencyLimiter(settings.account_concurrency)
        self.doorbell = Doorbell()
        self.queue = EventQueue(self.db, self.doorbell)
        self.invoker = Invoker(
            settings,
            self.functions,
            self.aliases,
            self.pool,
            self.function_logs,
            self.limiter,
            self.queue,
        )
        self.dispatcher = Dispatcher(
            settings,
            self.queue,
            self.doorbell,
            self.invoker,
            self.functions,
            self.event_configs,
            Destinations(settings, self.queue.enqueue),
            self.function_logs,
        )
        self.provisioned = ProvisionedConcurrency(
            self.concurrency,
            self.functions,
            self.aliases,
            self.invoker,
            self.pool,
            self.function_logs,
        )
        # A changed or deleted function: its environments go (once the loop runs).
        self.changes.subscribe(self._retire)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._refresh_reserved()
        settled = await asyncio.to_thread(self.states.settle_unfinished)
        if settled:
            log.info("finished %d function transitions left by an earlier run", settled)
        self.logs.start()
        await self.pool.start()  # removes stale sandboxes (and an empty cgroup parent) first
        await asyncio.to_thread(
            limit_backend_parent,
            self.pool.backend,
            self.capacity.memory_mb,
            self.settings.pids_budget or default_pids_budget(),
        )
        log.info(
            "host budget: %d MB memory, %d MB disk, %d cold starts at once",
            self.capacity.memory_mb,
            self.capacity.disk_mb,
            self.pool.starts.limit,
        )
        await self.dispatcher.start()
        await self.provisioned.start()

    async def stop(self) -> None:
        await self.provisioned.close()
        await self.dispatcher.close()
        await self.pool.close()
        self.logs.stop()
        self.db.close()

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:  # not started (yet): no loop to time it
            thread_timer(delay, fn)
            return
        # Settling touches the database: keep it off the event loop.
        loop.call_soon_threadsafe(loop.call_later, delay, lambda: loop.run_in_executor(None, fn))

    def _refresh_reserved(self) -> None:
        reserved = self.concurrency.reserved_by_function()
        loop = self._loop
        if loop is None:
            self.limiter.update_reserved(reserved)
        else:
            loop.call_soon_threadsafe(self.limiter.update_reserved, reserved)

    def _retire(self, name: str) -> None:
        loop = self._loop
        if loop is None:
            return
        arn = self.functions.arn(name)
        self._refresh_reserved()  # a deleted function gives its reservation back
        loop.call_soon_threadsafe(lambda: loop.create_task(self.pool.retire(arn)))


def _state_dir(data_dir: Path) -> Path:
    path = data_dir / "sandboxes"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # node-local sandbox state: root's alone, as the whole data dir
    return path

"""The platform: one object that owns the store, the services and the environment pool."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from lambdahost.config import ACCOUNT_ID, Keyring, Settings, prepare_data_dir
from lambdahost.control.lambda_.aliases import AliasService
from lambdahost.control.lambda_.changes import FunctionChanges
from lambdahost.control.lambda_.code import CodeStore
from lambdahost.control.lambda_.concurrency import ConcurrencyService
from lambdahost.control.lambda_.event_configs import EventConfigService
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.layers import (
    LayerService,
    SharedLayer,
    layer_access_denied,
)
from lambdahost.control.lambda_.mappings import EventSourceMappings
from lambdahost.control.lambda_.permissions import PermissionService
from lambdahost.control.lambda_.states import FunctionStates, thread_timer
from lambdahost.control.lambda_.urls import UrlService
from lambdahost.control.lambda_.values import ResolvedLayer
from lambdahost.control.lambda_.versions import VersionService
from lambdahost.control.sts.revocations import SessionRevocations
from lambdahost.control.sts.sessions import Principals, Sessions
from lambdahost.control.sts.tokens import TokenKey
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
from lambdahost.invoke.model import FunctionSpec, LogLine
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.invoke.provisioned import ProvisionedConcurrency
from lambdahost.invoke.queue import Doorbell, EventQueue
from lambdahost.invoke.sdks import find_sdks
from lambdahost.invoke.service import Invoker
from lambdahost.sandbox import NetworkSettings, open_backend
from lambdahost.store.blobs import BlobStore
from lambdahost.store.db import Database
from lambdahost.store.logs import LogStore

log = logging.getLogger("lambdahost")


class AccountPlane:
    """One account's resources and the paths that run them: its store (a database of its own),
    its control services, its concurrency pool (AWS counts concurrency per account), its async
    queue and dispatcher, its provisioned environments and its logs. ARNs carry its account
    because its `settings` do. The environment pool, the blob store and the host's budgets
    are the platform's and shared."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        pool: EnvironmentPool,
        call_later: Callable[[float, Callable[[], None]], None],
        loop: Callable[[], asyncio.AbstractEventLoop | None],
        sessions: Sessions,
        shared_layer: SharedLayer | None = None,
    ) -> None:
        self.settings = settings
        self.account_id = settings.account_id
        self._loop = loop
        self.db = db
        self.db.migrate()
        self.blobs = blobs
        self.pool = pool
        self.logs = LogStore(self.db)
        # Control: resources and their rules.
        self.layers = LayerService(settings, self.db, self.blobs, shared_layer)
        self.code = CodeStore(self.blobs, self.layers.resolve_for_function)
        self.states = FunctionStates(self.db, self.code, settings.transition_delay_s, call_later)
        self.changes = FunctionChanges()
        self.functions = FunctionService(settings, self.db, self.code, self.states, self.changes)
        self.versions = VersionService(self.functions)
        self.aliases = AliasService(self.functions)
        self.urls = UrlService(self.functions, self.changes)
        self.permissions = PermissionService(self.functions, self.changes)
        self.event_configs = EventConfigService(settings, self.functions)
        self.mappings = EventSourceMappings()
        # STS: sessions are the platform's (one key); revoked roles are this account's.
        self.sessions = sessions
        self.revocations = SessionRevocations(self.db)
        self.revocations.refresh()  # known before the first request of a session
        self.concurrency = ConcurrencyService(
            self.functions, settings.account_concurrency, self._refresh_reserved
        )
        # Invoke.
        self.function_logs = FunctionLogs(self.logs)
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
        self._refresh_reserved()
        settled = await asyncio.to_thread(self.states.settle_unfinished)
        if settled:
            log.info(
                "finished %d function transitions of account %s left by an earlier run",
                settled,
                self.account_id,
            )
        self.logs.start()
        await self.dispatcher.start()
        await self.provisioned.start()

    async def stop(self) -> None:
        await self.provisioned.close()
        await self.dispatcher.close()
        self.logs.stop()
        self.db.close()

    def _refresh_reserved(self) -> None:
        reserved = self.concurrency.reserved_by_function()
        loop = self._loop()
        if loop is None:
            self.limiter.update_reserved(reserved)
        else:
            loop.call_soon_threadsafe(self.limiter.update_reserved, reserved)

    def _retire(self, name: str) -> None:
        loop = self._loop()
        if loop is None:
            return
        arn = self.functions.arn(name)
        self._refresh_reserved()  # a deleted function gives its reservation back
        loop.call_soon_threadsafe(lambda: loop.create_task(self.pool.retire(arn)))


class Platform:
    """The composition root: builds every part in dependency order, handing each its
    collaborators through its constructor. Nothing is wired after construction.

    Resources belong to accounts: each account has its own `AccountPlane` and its own store
    (the default account's is the data dir's `lambdahost.db`, as before accounts existed;
    another's is `accounts/<id>/lambdahost.db`). An account's plane opens at start when its
    store exists, else at its first call. `default` is the default account's plane."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        data_dir = settings.data_dir
        prepare_data_dir(data_dir)  # 0700: environments, code and credentials live here
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self.keyring = Keyring(data_dir, settings.credentials, settings.account_id)
        # Role sessions (AssumeRole, environments' execution roles): sealed with a key kept
        # in the data dir, so issuing and proving one touches no database.
        self.sessions = Sessions(TokenKey.in_dir(data_dir), settings.credentials_lifetime_s)
        self.principals = Principals(self.keyring, self.sessions)
        # Shared state: the blob store (content-addressed, so accounts share it safely).
        self.blobs = BlobStore(data_dir / "blobs")
        # Node-local: what this host holds and how many environments it starts at once.
        self.capacity = HostCapacity.from_settings(
            settings.memory_budget, settings.disk_budget, data_dir, _state_dir(data_dir)
        )
        starts = StartGate(
            settings.cold_starts or default_cold_starts(),
            settings.cold_start_queue,
            settings.cold_start_wait_s,
        )
        backend = open_backend(
            _state_dir(data_dir),
            settings.sandbox,
            provisions=provisions(),
            network=network_settings(settings),
        )
        self.pool = EnvironmentPool(
            backend,
            keepalive_s=settings.keepalive_s,
            capacity=self.capacity,
            starts=starts,
            logs=self._outside_invoke,
            api_port=settings.port,
            credentials=self.sessions,
            sdks=find_sdks(),  # node-local: installed on this host by `make install`
        )
        self._accounts: dict[str, AccountPlane] = {}
        self._opening = threading.Lock()
        self.default = self._open(settings.account_id)
        for account in sorted(_accounts_on_disk(data_dir)):
            self._open(account)

    # -- accounts -------------------------------------------------------------------------

    def known(self, account_id: str) -> bool:
        """Whether the account exists: the default, one with an access key, or with a store."""
        return (
            account_id in self._accounts
            or account_id in self.keyring.accounts()
            or _account_dir(self.settings.data_dir, account_id).is_dir()
        )

    def opened(self, account_id: str) -> AccountPlane | None:
        """The account's plane if it is open (cheap: for the event loop)."""
        return self._accounts.get(account_id)

    def accounts(self) -> list[AccountPlane]:
        return list(self._accounts.values())

    def account(self, account_id: str) -> AccountPlane:
        """The account's plane, opened (its store made and migrated, then started on the
        running loop) if it was not; blocking, so not on the event loop."""
        plane = self._accounts.get(account_id)
        if plane is not None:
            return plane
        with self._opening:  # one caller opens and starts it; the others wait for that
            plane = self._accounts.get(account_id)
            if plane is None:
                plane = self._build(account_id)
                loop = self._loop
                if loop is not None:
                    asyncio.run_coroutine_threadsafe(plane.start(), loop).result()
                self._accounts[account_id] = plane  # seen by others only once started
            return plane

    def _open(self, account_id: str) -> AccountPlane:
        """Open an account's plane before the platform starts (start() starts it)."""
        plane = self._build(account_id)
        self._accounts[account_id] = plane
        return plane

    def _build(self, account_id: str) -> AccountPlane:
        db = account_store(self.settings.data_dir, account_id, self.settings.account_id)
        return AccountPlane(
            dataclasses.replace(self.settings, account_id=account_id),
            db,
            self.blobs,
            self.pool,
            self._call_later,
            lambda: self._loop,
            self.sessions,
            self._shared_layer,
        )

    def _shared_layer(self, arn: str, owner: str, user: str) -> ResolvedLayer:
        """Another account's layer version for a function of account `user`: allowed when
        the owner's layer policy grants `user` lambda:GetLayerVersion."""
        if not self.known(owner):
            raise layer_access_denied(user, arn)
        return self.account(owner).layers.resolve_shared(arn, user)

    def _outside_invoke(self, spec: FunctionSpec, stream: str, lines: list[LogLine]) -> None:
        """An environment's lines outside any invoke, into its account's logs."""
        plane = self._accounts.get(spec.account_id, self.default)
        plane.function_logs.outside_invoke(spec.log_group, stream, lines)

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        for plane in self.accounts():
            plane._refresh_reserved()
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
        for plane in self.accounts():
            await plane.start()

    async def stop(self) -> None:
        for plane in self.accounts():
            await plane.provisioned.close()
            await plane.dispatcher.close()
        await self.pool.close()
        for plane in self.accounts():
            plane.logs.stop()
            plane.db.close()

    def _call_later(self, delay: float, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:  # not started (yet): no loop to time it
            thread_timer(delay, fn)
            return
        # Settling touches the database: keep it off the event loop.
        loop.call_soon_threadsafe(loop.call_later, delay, lambda: loop.run_in_executor(None, fn))


def network_settings(settings: Settings) -> NetworkSettings:
    """The sandbox layer's network settings from the server's (ValueError if invalid)."""
    defaults = NetworkSettings()
    return NetworkSettings(
        mode=settings.function_network,
        range=settings.function_network_range or defaults.range,
        deny=defaults.deny if settings.egress_deny is None else settings.egress_deny,
        api_port=settings.port,
        dns=settings.function_dns,
    )


def account_store(data_dir: Path, account_id: str, default_account: str) -> Database:
    """An account's store: the data dir's database for the default account, else its own
    under `accounts/<id>/` (made when absent)."""
    if account_id == default_account:
        return Database.in_dir(data_dir)
    directory = _account_dir(data_dir, account_id)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Database.in_dir(directory)


def _account_dir(data_dir: Path, account_id: str) -> Path:
    return data_dir / "accounts" / account_id


def _accounts_on_disk(data_dir: Path) -> set[str]:
    root = data_dir / "accounts"
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if ACCOUNT_ID.match(p.name) and p.is_dir()}


def _state_dir(data_dir: Path) -> Path:
    path = data_dir / "sandboxes"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # node-local sandbox state: root's alone, as the whole data dir
    return path

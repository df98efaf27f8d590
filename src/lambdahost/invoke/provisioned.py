"""Provisioned concurrency: keep N initialised environments per version or alias, always.

A reconcile loop compares each config with the live provisioned environments in the pool and
starts (or stops) environments until they match, so an environment that dies is replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from lambdahost.control.lambda_.aliases import AliasService
from lambdahost.control.lambda_.concurrency import ConcurrencyService
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.errors import LambdaError, TooManyRequests
from lambdahost.invoke.logbook import FunctionLogs
from lambdahost.invoke.model import FunctionSpec
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.invoke.service import Invoker
from lambdahost.sandbox.api import SandboxBusyError

log = logging.getLogger("lambdahost.provisioned")
RECONCILE_S = 1.0
PARALLEL_STARTS = 4


@dataclass
class Allocation:
    requested: int
    allocated: int = 0
    failure: str | None = None
    last_modified: str = ""


class ProvisionedConcurrency:
    def __init__(
        self,
        concurrency: ConcurrencyService,
        functions: FunctionService,
        aliases: AliasService,
        invoker: Invoker,
        pool: EnvironmentPool,
        logs: FunctionLogs,
    ) -> None:
        self.concurrency = concurrency
        self.functions = functions
        self.aliases = aliases
        self.invoker = invoker  # what a version runs as (`spec_for`)
        self.pool = pool
        self.logs = logs
        self._state: dict[tuple[str, str], Allocation] = {}
        self._specs: dict[tuple[str, str], FunctionSpec] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starts = asyncio.Semaphore(PARALLEL_STARTS)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def changed(self, name: str, qualifier: str) -> None:
        """A config was put or deleted: forget an earlier failure and reconcile now."""
        self._state.pop((name, qualifier), None)
        self._wake.set()

    def describe(
        self, name: str, qualifier: str, requested: int, last_modified: str
    ) -> dict[str, Any]:
        state = self._state.get((name, qualifier)) or Allocation(requested)
        if state.failure:
            status, reason = "FAILED", state.failure
        elif state.allocated >= requested:
            status, reason = "READY", None
        else:
            status, reason = "IN_PROGRESS", None
        described: dict[str, Any] = {
            "RequestedProvisionedConcurrentExecutions": requested,
            "AvailableProvisionedConcurrentExecutions": min(state.allocated, requested),
            "AllocatedProvisionedConcurrentExecutions": min(state.allocated, requested),
            "Status": status,
            "LastModified": last_modified,
        }
        if reason:
            described["StatusReason"] = reason
        return described

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._reconcile()
            except Exception:
                log.exception("provisioned concurrency reconcile failed")
            try:
                await asyncio.wait_for(self._wake.wait(), RECONCILE_S)
            except TimeoutError:
                pass

    async def _reconcile(self) -> None:
        configs = await asyncio.to_thread(self.concurrency.list_provisioned)
        wanted: set[tuple[str, str]] = set()
        for config in configs:
            key = (config.function_name, config.qualifier)
            wanted.add(key)
            state = self._state.setdefault(key, Allocation(config.requested))
            state.requested = config.requested
            try:
                spec = await asyncio.to_thread(self._spec, *key)
            except LambdaError as exc:
                state.failure = exc.message
                continue
            old = self._specs.get(key)
            if old is not None and old.revision_id != spec.revision_id:
                await self.pool.unprovision(old)
            self._specs[key] = spec
            live = self.pool.provisioned(spec)
            if live > config.requested:
                await self.pool.unprovision(spec, live - config.requested)
            elif live < config.requested and not state.failure:
                await asyncio.gather(
                    *(self._prewarm(spec, state) for _ in range(config.requested - live))
                )
            state.allocated = self.pool.provisioned(spec)
        for key in set(self._specs) - wanted:
            await self.pool.unprovision(self._specs.pop(key))
            self._state.pop(key, None)

    async def _prewarm(self, spec: FunctionSpec, state: Allocation) -> None:
        async with self._starts:
            try:
                failure, stream, lines = await self.pool.prewarm(spec)
            except (TooManyRequests, SandboxBusyError) as exc:
                # The host is full or busy for now (capacity.py): not the function's failure,
                # so the next reconcile tries again.
                log.info("provisioned environment of %s waits for room: %s", spec.name, exc)
                return
            except Exception as exc:
                failure, stream, lines = f"The environment could not be created: {exc}", "", []
        if lines:
            self.logs.outside_invoke(spec.log_group, stream, lines)
        if failure:
            state.failure = failure

    def _spec(self, name: str, qualifier: str) -> FunctionSpec:
        version = qualifier if qualifier.isdigit() else self.aliases.version_for(name, qualifier)
        function_version = self.functions.get(name, version)
        spec = self.invoker.spec_for(function_version)
        return dataclasses.replace(spec, initialization_type="provisioned-concurrency")

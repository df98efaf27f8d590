"""Runs queued asynchronous invokes: concurrency rules, retries, event age, destinations.

Throttled events (concurrency limits, host capacity) and platform failures wait and try
again without using an attempt (as in AWS). Function errors are retried
`MaximumRetryAttempts` times, after 1 then 2 minutes (scaled by `Settings.async_time_scale`).
Final outcomes go to OnSuccess/OnFailure and the DLQ."""

from __future__ import annotations

import asyncio
import logging

from lambdahost.config import Settings
from lambdahost.control.lambda_.event_configs import EventConfigService
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.values import AsyncPolicy
from lambdahost.errors import ResourceConflict, ResourceNotFound, ServiceError, TooManyRequests
from lambdahost.invoke.destinations import Destinations, record
from lambdahost.invoke.logbook import FunctionLogs
from lambdahost.invoke.model import InvokeRequest, InvokeResult
from lambdahost.invoke.queue import Doorbell, EventQueue, QueuedEvent, now_ms
from lambdahost.invoke.service import Invoker, trace_id

log = logging.getLogger("lambdahost.async")

RETRY_DELAYS_S = (60.0, 120.0)
THROTTLE_DELAY_S = 1.0
MAX_PARALLEL = 64
POLL_S = 0.5


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        queue: EventQueue,
        doorbell: Doorbell,
        invoker: Invoker,
        functions: FunctionService,
        configs: EventConfigService,
        destinations: Destinations,
        logs: FunctionLogs,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.doorbell = doorbell  # rung by the queue on enqueue, and by us when a slot frees
        self.invoker = invoker
        self.functions = functions
        self.configs = configs
        self.destinations = destinations
        self.logs = logs
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self.doorbell.listen()
        released = await asyncio.to_thread(self.queue.release_all_leases)
        if released:
            log.info("re-queued %d asynchronous events an earlier run had started", released)
        self._loop_task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        self._closed = True
        self.doorbell.ring()
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def _loop(self) -> None:
        lease_ms = 20 * 60 * 1000  # longer than any function's timeout plus init
        while not self._closed:
            self.doorbell.clear()
            free = MAX_PARALLEL - len(self._running)
            events = await asyncio.to_thread(self.queue.claim, free, lease_ms) if free > 0 else []
            for event in events:
                task = asyncio.create_task(self._process(event))
                self._running.add(task)
                task.add_done_callback(self._finished)
            if events and len(events) == free:
                continue
            await self.doorbell.wait(await self._idle_wait())

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.doorbell.ring()

    async def _idle_wait(self) -> float:
        due = await asyncio.to_thread(self.queue.next_due_ms)
        if due is None:
            return POLL_S * 4
        return min(max((due - now_ms()) / 1000, 0.01), POLL_S)

    def _scaled(self, seconds: float) -> int:
        return max(int(seconds * self.settings.async_time_scale * 1000), 10)

    async def _process(self, event: QueuedEvent) -> None:
        try:
            await self._attempt(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("asynchronous event %s failed inside the platform", event.request_id)
            await asyncio.to_thread(
                self.queue.retry_later, event, self._scaled(RETRY_DELAYS_S[0]), count_attempt=False
            )

    async def _attempt(self, event: QueuedEvent) -> None:
        policy = await asyncio.to_thread(
            self.configs.effective, event.function_name, event.qualifier
        )
        max_age_ms = self._scaled(policy.maximum_event_age_s)
        if now_ms() - event.enqueued_ms > max_age_ms:
            await self._final(event, policy, "EventAgeExceeded", None, None, event.attempts)
            return
        try:
            version, invoked_arn = await asyncio.to_thread(
                self.invoker.resolve, event.function_name, event.qualifier
            )
            spec = self.invoker.spec_for(version)
            request = InvokeRequest(
                request_id=event.request_id,
                payload=event.payload,
                invoked_arn=invoked_arn,
                trace_id=trace_id(),
            )
            if version.configuration.state != "Active":
                raise ResourceConflict("not active yet")
            result = await self.invoker.run(spec, request)
        except (TooManyRequests, ResourceConflict):
            # Throttled (the function's concurrency, or this host's capacity): AWS keeps the
            # event and tries again, for up to its maximum age, without using an attempt.
            await asyncio.to_thread(
                self.queue.retry_later, event, self._scaled(THROTTLE_DELAY_S), count_attempt=False
            )
            return
        except ServiceError:
            # The platform failed (logged where it did): a system error, retried the same way.
            await asyncio.to_thread(
                self.queue.retry_later, event, self._scaled(RETRY_DELAYS_S[0]), count_attempt=False
            )
            return
        except ResourceNotFound:
            log.warning(
                "dropping event %s: %s no longer exists", event.request_id, event.function_name
            )
            await asyncio.to_thread(self.queue.done, event)
            return
        attempts = event.attempts + 1
        if result.function_error is None:
            await self._final(event, policy, "Success", result, spec.version, attempts)
        elif attempts > policy.maximum_retry_attempts:
            await self._final(event, policy, "RetriesExhausted", result, spec.version, attempts)
        else:
            delay = RETRY_DELAYS_S[min(attempts - 1, len(RETRY_DELAYS_S) - 1)]
            await asyncio.to_thread(
                self.queue.retry_later, event, self._scaled(delay), count_attempt=True
            )

    async def _final(
        self,
        event: QueuedEvent,
        policy: AsyncPolicy,
        condition: str,
        result: InvokeResult | None,
        executed_version: str | None,
        attempts: int,
    ) -> None:
        target = policy.on_success if condition == "Success" else policy.on_failure
        function_arn = self.functions.arn(
            event.function_name, executed_version or event.qualifier or "$LATEST"
        )
        outcome = record(
            request_id=event.request_id,
            function_arn=function_arn,
            condition=condition,
            attempts=attempts,
            request_payload=event.payload,
            result=result,
            executed_version=executed_version,
        )
        if target:
            await asyncio.to_thread(self.destinations.deliver, target, outcome)
        if condition != "Success":
            await self._dead_letter(event, result)
        # The event's logs are committed before the event is: a kill in between re-runs it.
        await asyncio.to_thread(self.logs.flush)
        await asyncio.to_thread(self.queue.done, event)
        self.doorbell.ring()
        log.debug("event %s finished: %s after %d attempts", event.request_id, condition, attempts)

    async def _dead_letter(self, event: QueuedEvent, result: InvokeResult | None) -> None:
        try:
            version = await asyncio.to_thread(self.functions.get, event.function_name)
        except ResourceNotFound:
            return
        target = version.configuration.dead_letter_arn
        if target:
            attributes = {"RequestID": event.request_id, "ErrorCode": "200"}
            if result is not None:
                attributes["ErrorMessage"] = result.payload.decode("utf-8", "replace")[:1000]
            await asyncio.to_thread(self.destinations.deliver, target, event.payload, attributes)

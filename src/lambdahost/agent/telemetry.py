"""The Telemetry API (`PUT /2022-07-01/telemetry`) and the older Logs API (`PUT /2020-08-15/logs`).

Imported on the first subscription only. Each subscriber gets a small daemon thread that
batches its events (`buffering`: maxItems, maxBytes, timeoutMs) and POSTs them as a JSON array
of `{time, type, record}` to the extension's own listener, so a slow listener never blocks the
agent's loop. `sandbox.localdomain` is this environment's loopback.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

from .shared import TYPE_CHECKING

if TYPE_CHECKING:
    from .shared import JSONObject

TELEMETRY_SCHEMAS = ("2022-07-01", "2022-12-13", "2025-01-29")
TYPES = ("platform", "function", "extension")
# (minimum, default, maximum) as Lambda documents them
BUFFERING = {
    "maxItems": (1000, 1000, 10000),
    "maxBytes": (262144, 262144, 1048576),
    "timeoutMs": (25, 1000, 30000),
}
LOGS_API_BUFFERING = {**BUFFERING, "maxItems": (1000, 10000, 10000)}
LOOPBACK_NAMES = ("sandbox.localdomain", "sandbox", "localhost")


def iso_time(stamp_ms: int) -> str:
    seconds, millis = divmod(int(stamp_ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class Subscriber(threading.Thread):
    def __init__(
        self, name: str, types: set[str], buffering: dict[str, int], uri: str, logs_api: bool
    ) -> None:
        super().__init__(name=f"telemetry-{name}", daemon=True)
        self.extension = name
        self.types = types
        self.max_items = buffering["maxItems"]
        self.max_bytes = buffering["maxBytes"]
        self.timeout_s = buffering["timeoutMs"] / 1000
        self.logs_api = logs_api
        parts = urlsplit(uri)
        host = parts.hostname or "127.0.0.1"
        self.host = "127.0.0.1" if host in LOOPBACK_NAMES else host
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.connection: http.client.HTTPConnection | None = None
        self.buffer: list[bytes] = []
        self.size = 0
        self.first_at = 0.0
        self.closing = False
        self.flushing = False
        self.in_flight = False
        self.condition = threading.Condition()

    def publish(self, stamp: int, kind: str, record: object) -> None:
        category = kind.split(".", 1)[0]
        if category not in self.types:
            return
        if self.logs_api:
            translated = logs_api_records(kind, record)
            if not translated:
                return
        else:
            translated = [(kind, record)]
        when = iso_time(stamp)
        with self.condition:
            for event_type, event_record in translated:
                item = json.dumps({"time": when, "type": event_type, "record": event_record})
                if not self.buffer:
                    self.first_at = time.monotonic()
                self.buffer.append(item.encode())
                self.size += len(item)
            if len(self.buffer) >= self.max_items or self.size >= self.max_bytes:
                self.condition.notify()
            elif len(self.buffer) == len(translated):
                self.condition.notify()  # start the timeout clock

    def run(self) -> None:
        while True:
            with self.condition:
                while True:
                    if self.buffer and (
                        self.closing
                        or self.flushing
                        or len(self.buffer) >= self.max_items
                        or self.size >= self.max_bytes
                        or time.monotonic() - self.first_at >= self.timeout_s
                    ):
                        break
                    if self.closing:
                        return
                    wait = None
                    if self.buffer:
                        wait = self.timeout_s - (time.monotonic() - self.first_at)
                    self.condition.wait(wait)
                batch, self.buffer, self.size = self.buffer, [], 0
                self.in_flight = True
            self.post(b"[" + b",".join(batch) + b"]")
            with self.condition:
                self.in_flight = False
                self.condition.notify_all()

    def post(self, body: bytes) -> None:
        for _attempt in range(2):  # one retry on a fresh connection (keep-alive may be stale)
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
                headers = {"Content-Type": "application/json"}
                self.connection.request("POST", self.path, body, headers)
                self.connection.getresponse().read()
                return
            except (OSError, http.client.HTTPException):
                if self.connection is not None:
                    self.connection.close()
                self.connection = None
                time.sleep(0.01)

    def drain(self, timeout_s: float) -> None:
        """Send everything buffered now and wait (up to timeout_s) until it went out."""
        deadline = time.monotonic() + timeout_s
        with self.condition:
            self.flushing = True
            self.condition.notify_all()
            while (self.buffer or self.in_flight) and time.monotonic() < deadline:
                self.condition.wait(max(0.0, deadline - time.monotonic()))
            self.flushing = False

    def close(self) -> None:
        with self.condition:
            self.closing = True
            self.condition.notify_all()


class Telemetry:
    """All subscriptions of one environment (at most one per extension and API)."""

    def __init__(self) -> None:
        self.subscribers: dict[tuple[str, bool], Subscriber] = {}

    def subscribe(
        self,
        name: str,
        logs_api: bool,
        subscription: tuple[set[str], dict[str, int], str],
        history: list[tuple[int, str, object]],
    ) -> None:
        """(Re)subscribe extension `name`; it first gets the events since init started."""
        old = self.subscribers.pop((name, logs_api), None)
        if old is not None:
            old.close()
        types, buffering, uri = subscription
        subscriber = Subscriber(name, types, buffering, uri, logs_api)
        for stamp, kind, record in history:
            subscriber.publish(stamp, kind, record)
        subscriber.start()
        self.subscribers[(name, logs_api)] = subscriber

    def publish(self, stamp: int, kind: str, record: object) -> None:
        for subscriber in self.subscribers.values():
            subscriber.publish(stamp, kind, record)

    def flush(self, timeout_s: float = 0.3) -> None:
        deadline = time.monotonic() + timeout_s
        for subscriber in self.subscribers.values():
            subscriber.drain(max(0.0, deadline - time.monotonic()))

    def close(self, timeout_s: float) -> None:
        self.flush(timeout_s)
        for subscriber in self.subscribers.values():
            subscriber.close()


def logs_api_records(kind: str, record: object) -> list[tuple[str, object]]:
    """Telemetry events as the Logs API (2020-08-15) shapes them; init events have none."""
    if kind in ("function", "extension"):
        return [(kind, record)]
    if not isinstance(record, dict):
        return []
    if kind == "platform.start":
        return [(kind, {"requestId": record["requestId"], "version": record.get("version")})]
    if kind == "platform.runtimeDone":
        return [
            (
                "platform.runtimeDone",
                {"requestId": record["requestId"], "status": record["status"]},
            ),
            ("platform.end", {"requestId": record["requestId"]}),
        ]
    if kind == "platform.report":
        return [(kind, {"requestId": record["requestId"], "metrics": record.get("metrics", {})})]
    if kind == "platform.extension":
        return [(kind, record)]
    if kind == "platform.telemetrySubscription":
        return [("platform.logsSubscription", record)]
    return []


def parse(body: JSONObject, logs_api: bool) -> tuple[set[str], dict[str, int], str]:
    if not logs_api and body.get("schemaVersion") not in TELEMETRY_SCHEMAS:
        raise ValueError(f"schemaVersion must be one of {', '.join(TELEMETRY_SCHEMAS)}")
    types = body["types"]
    if not isinstance(types, list) or not types or any(t not in TYPES for t in types):
        raise ValueError(f"types must be a non-empty subset of {list(TYPES)}")
    destination = body["destination"]
    if destination.get("protocol") != "HTTP":
        raise ValueError("destination.protocol must be HTTP")
    uri = destination["URI"]
    if not isinstance(uri, str) or not uri.startswith("http://"):
        raise ValueError("destination.URI must be an http:// URI")
    limits = LOGS_API_BUFFERING if logs_api else BUFFERING
    given = body.get("buffering") or {}
    buffering = {}
    for name, (low, default, high) in limits.items():
        value = given.get(name, default)
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"buffering.{name} must be an integer in [{low}, {high}]")
        buffering[name] = value
    return set(types), buffering, uri

"""Function logs on their way to the log store: the one writer of an invoke's lines.

The pool returns an invoke's lines with its result (and, when the response went out before the
extensions were done, the END/REPORT that follow later); the invoker hands both here. Lines an
environment prints outside any invoke (a provisioned environment's init, the SHUTDOWN phase)
come here too, so nothing else appends function logs."""

from __future__ import annotations

import asyncio

from lambdahost.invoke.model import FunctionSpec, InvokeResult, LogLine
from lambdahost.store.logs import LogStore


class FunctionLogs:
    def __init__(self, store: LogStore) -> None:
        self.store = store

    def invoked(self, spec: FunctionSpec, result: InvokeResult) -> None:
        """An invoke's lines: those known now, and its tail once it comes."""
        self.store.append(spec.log_group, result.log_stream, result.log_lines)
        tail = result.log_tail
        if tail is not None:
            group, stream = spec.log_group, result.log_stream

            def write_tail(done: asyncio.Future[list[LogLine]]) -> None:
                if done.cancelled() or done.exception() is not None:
                    return  # the pool closed meanwhile: nothing more to say
                self.store.append(group, stream, done.result())

            tail.add_done_callback(write_tail)

    def outside_invoke(self, group: str, stream: str, lines: list[LogLine]) -> None:
        """Lines of an environment that belong to no invoke."""
        self.store.append(group, stream, lines)

    def flush(self) -> None:
        """Wait until everything written so far is committed."""
        self.store.flush()

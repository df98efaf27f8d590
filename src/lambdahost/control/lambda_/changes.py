"""Who hears that a function changed or went away.

Created before the services that publish (functions) and subscribe (URLs, permissions, the
platform's environment pool), so neither side needs the other to exist first."""

from __future__ import annotations

from collections.abc import Callable

ChangeListener = Callable[[str], None]  # called with the function name after a change


class FunctionChanges:
    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def publish(self, name: str) -> None:
        """After a change to `name` is committed (its code, configuration, or a deletion)."""
        for listener in self._listeners:
            listener(name)

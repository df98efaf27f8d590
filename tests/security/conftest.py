"""Fixtures of the security tier (the session's `server` is in the root conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Server, start_server


@pytest.fixture(scope="module", params=["zygote", "bwrap"])
def server_per_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server on each sandbox backend in turn, shared by one module's tests: what must hold
    for every backend (isolation, limits) is tested on both."""
    srv = start_server(tmp_path_factory.mktemp(request.param) / "data", "--sandbox", request.param)
    yield srv
    srv.kill()

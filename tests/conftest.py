"""Fixtures shared by the tiers: the real server (used by the e2e and security tiers; nothing
starts it unless a test asks for it). Helpers to import are in helpers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Server, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("lambdahost") / "data")
    yield srv
    srv.kill()


@pytest.fixture(scope="module", params=["zygote", "bwrap"])
def server_per_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server on each sandbox backend in turn, shared by one module's tests: what must hold
    for every backend (isolation, limits) is tested on both."""
    srv = start_server(tmp_path_factory.mktemp(request.param) / "data", "--sandbox", request.param)
    yield srv
    srv.kill()


@pytest.fixture(scope="session")
def lam(server: Server):  # noqa: ANN201 - a botocore client
    return server.client("lambda")


@pytest.fixture(scope="session")
def raw_lam(server: Server):  # noqa: ANN201 - a client that skips botocore's own checks
    return server.client("lambda", parameter_validation=False)

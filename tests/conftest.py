"""What every tier shares: the tier markers, and the one real server of a session (asked for by
e2e and security tests only; nothing starts it otherwise). Helpers to import: helpers.py.

The tiers are the folders below: unit/ (no root, no sandboxes, no server), sandbox/ (root: the
backends' contract), e2e/ (the real server through boto3), security/ (isolation probes). Each
test gets its folder's marker, so `pytest -m unit` selects the same tests as `pytest tests/unit`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Server, start_server

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "sandbox", "e2e", "security")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.resolve()
        if TESTS in path.parents and (tier := path.relative_to(TESTS).parts[0]) in TIERS:
            item.add_marker(tier)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("lambdahost") / "data")
    yield srv
    srv.kill()


@pytest.fixture(scope="session")
def lam(server: Server):  # noqa: ANN201 - a botocore client
    return server.client("lambda")


@pytest.fixture(scope="session")
def raw_lam(server: Server):  # noqa: ANN201 - a client that skips botocore's own checks
    return server.client("lambda", parameter_validation=False)

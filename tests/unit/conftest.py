"""Fixtures of the unit tier (no root, no sandboxes, no server): the Lambda control services
on a temporary SQLite (lambda_services.py) and a fake sandbox backend (fake_backend.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_backend import FakeBackend
from lambda_services import Lambda, open_services


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Lambda]:
    services = open_services(tmp_path / "data")
    yield services
    services.db.close()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()

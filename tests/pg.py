"""A throwaway PostgreSQL server for tests: `postgresql_fixture()` makes a pytest fixture.

The server is Debian's `postgresql` package (installed by `make install`), started by the
tests themselves, never the system's `main` cluster: `initdb` into a fresh directory under
/tmp, then `postgres` on a Unix socket in that directory (no TCP port, so parallel runs
never collide), with durability switched off (fsync, full-page writes) because the data is
thrown away. PostgreSQL refuses to run as root, so as root the server runs as the
package's `postgres` user. Teardown stops it with a fast shutdown (SIGINT, then SIGKILL)
and removes the directory; the postmaster also gets SIGINT if the test process dies.

The cluster's default collation is ICU's `en-US`, as a production database's often is
(linguistic: `a < B < b`), so tests see whether the schema sorts names the same way on
every dialect instead of by the database's default.

When PostgreSQL or psycopg is missing, tests that use the fixture are skipped with the
reason; with `$CI` set they fail instead, so CI can't pass by skipping them.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SUPERUSER = "postgres"
# Throwaway data: durability off, small memory, no TCP.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
}
# Tried in order: ICU (a linguistic default collation), then plain locales.
LOCALE_CHOICES = (
    ("--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en-US"),
    ("--locale=C.UTF-8",),
    ("--no-locale",),
)


@dataclass
class PostgresServer:
    """A running throwaway server; `create_database` hands out fresh, empty databases."""

    directory: Path  # holds data/, the socket and postgres.log
    process: subprocess.Popen[bytes]
    bindir: Path
    startup_s: float  # initdb + start until it accepts connections
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) over the Unix socket."""
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.directory}"

    def connect(self, database: str = "postgres"):  # noqa: ANN201 - a psycopg connection
        import psycopg

        return psycopg.connect(
            host=str(self.directory), user=SUPERUSER, dbname=database, autocommit=True
        )

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.directory / "postgres.log").read_text().splitlines()[-lines:])
        return ""


def postgresql_fixture(scope: str = "session") -> Callable[..., Iterator[PostgresServer]]:
    """A fixture that starts one server for its scope and stops it afterwards, even when
    tests fail. Request it lazily (`request.getfixturevalue`) so runs that select no
    PostgreSQL case never start a server."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def postgresql() -> Iterator[PostgresServer]:
        server = start_server()
        try:
            yield server
        finally:
            stop_server(server)

    return postgresql


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def find_bindir() -> Path | None:
    """`$LAMBDAHOST_TEST_PG_BINDIR`, else Debian's newest /usr/lib/postgresql/N/bin, else
    the directory of `initdb` on PATH."""
    if env := os.environ.get("LAMBDAHOST_TEST_PG_BINDIR"):
        return Path(env)

    def major(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        return int(match.group(1)) if match else -1

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True):
        if all(os.access(Path(candidate, tool), os.X_OK) for tool in ("initdb", "postgres")):
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def start_server() -> PostgresServer:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    bindir = find_bindir()
    if bindir is None:
        unavailable("no initdb/postgres found (Debian: apt-get install postgresql)")
    run_as: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam(SUPERUSER)
        except KeyError:
            unavailable(f"running as root and there is no `{SUPERUSER}` user to run it as")
    began = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="lambdahost-pg-"))
    try:
        if run_as is not None:
            os.chown(directory, run_as.pw_uid, run_as.pw_gid)
        _initdb(bindir, directory, run_as)
        process = _spawn(bindir, directory, run_as)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    server = PostgresServer(directory, process, bindir, startup_s=0.0)
    try:
        _wait_ready(server)
    except BaseException:
        stop_server(server)
        raise
    server.startup_s = time.monotonic() - began
    return server


def stop_server(server: PostgresServer) -> None:
    process = server.process
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: disconnects clients
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(server.directory, ignore_errors=True)


def _as_user(run_as: pwd.struct_passwd | None) -> dict[str, object]:
    if run_as is None:
        return {}
    return {
        "user": run_as.pw_uid,
        "group": run_as.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "HOME": str(run_as.pw_dir), "USER": run_as.pw_name},
    }


def _initdb(bindir: Path, directory: Path, run_as: pwd.struct_passwd | None) -> None:
    log = directory / "initdb.log"
    for locale in LOCALE_CHOICES:
        shutil.rmtree(directory / "data", ignore_errors=True)
        with log.open("ab") as out:
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "--pgdata",
                    str(directory / "data"),
                    "--username",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    *locale,
                    "--no-sync",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=directory,
                timeout=120,
                **_as_user(run_as),  # type: ignore[arg-type]
            )
        if result.returncode == 0:
            return
    raise RuntimeError(f"initdb failed:\n{log.read_text()[-3000:]}")


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child after setuid (which would clear it): if the test process is killed,
    # the postmaster gets a fast shutdown instead of outliving it.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


def _spawn(
    bindir: Path, directory: Path, run_as: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    settings = [arg for key, value in SERVER_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
    with (directory / "postgres.log").open("ab") as out:
        return subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(directory / "data"),
                "-k",
                str(directory),
                *settings,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,  # a Ctrl-C reaches pytest, which then stops us in order
            preexec_fn=_die_with_parent,
            **_as_user(run_as),  # type: ignore[arg-type]
        )


def _wait_ready(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited at start:\n{server.log_tail()}")
        try:
            with server.connect() as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres not ready after {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
                ) from None
            time.sleep(0.02)

"""Server settings: command-line flags over environment variables over defaults."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


@dataclass
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9000
    region: str = "us-east-1"
    account_id: str = "000000000000"
    auth: bool = True
    # Idle environments are reclaimed after this many seconds.
    keepalive_s: float = 300.0
    # Sandbox backend: "zygote" (fast cold starts), "bwrap", or "auto" (the zygote when it
    # works on this host, else bwrap).
    sandbox: str = "auto"
    # How long a function stays Pending / InProgress before it settles. AWS takes seconds;
    # a small delay keeps the state machine observable and SDK waiters honest.
    transition_delay_s: float = 0.2
    account_concurrency: int = 1000
    # Scales async retry delays (AWS: 1 min, then 2 min) and maximum event age; tests use ~0.01.
    async_time_scale: float = 1.0
    # Host capacity (invoke/capacity.py), each "<MB>" or "<percent>%": the MemorySize of all
    # live environments within this share of MemTotal, their EphemeralStorage within this share
    # of the free space on the data dir's file system. Past them: evict idle ones, then 429.
    memory_budget: str = "80%"
    disk_budget: str = "80%"
    # Processes in all sandboxes together (their parent cgroup's pids.max); 0: half of pid_max.
    pids_budget: int = 0
    # Cold starts running at once (0: two per CPU); more wait in FIFO order, at most
    # `cold_start_queue` of them, each at most `cold_start_wait_s`, else 429.
    cold_starts: int = 0
    cold_start_queue: int = 256
    cold_start_wait_s: float = 10.0
    # SQS-/SNS-/EventBridge-compatible endpoints for destinations and dead-letter queues.
    destination_endpoints: dict[str, str] = field(default_factory=dict)
    credentials: Credentials = field(default_factory=lambda: Credentials("", ""))

    def endpoint_for(self, service: str) -> str | None:
        return self.destination_endpoints.get(service) or os.environ.get(
            f"LAMBDAHOST_{service.upper()}_ENDPOINT"
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def check_budget(text: str) -> str:
    """A budget is a positive number of MB, or a percentage in (0, 100]."""
    value = text.strip()
    try:
        number = float(value[:-1]) if value.endswith("%") else int(value)
    except ValueError:
        raise ValueError(f"{text!r} is neither a number of MB nor a percentage") from None
    if number <= 0 or (value.endswith("%") and number > 100):
        raise ValueError(f"{text!r} is out of range")
    return value


def default_data_dir() -> Path:
    return Path(os.environ.get("LAMBDAHOST_DATA_DIR", ".lambdahost"))


DATA_DIR_MODE = 0o700  # it holds every function's environment, code and the root credentials
SECRET_FILE_MODE = 0o600


def prepare_data_dir(data_dir: Path) -> Path:
    """Create the data dir (0700), or tighten an existing one (and its credentials file) that
    an older version or a permissive umask left open; returns it."""
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    _tighten(data_dir, DATA_DIR_MODE)
    credentials = data_dir / "credentials"
    if credentials.is_file() and not credentials.is_symlink():
        _tighten(credentials, SECRET_FILE_MODE)
    return data_dir


def _tighten(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)


def load_credentials(data_dir: Path) -> tuple[Credentials, bool]:
    """Root credentials from the environment, else from (or newly into) the data dir.

    Returns the credentials and whether they were generated just now."""
    key = os.environ.get("LAMBDAHOST_ACCESS_KEY_ID")
    secret = os.environ.get("LAMBDAHOST_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret), False
    prepare_data_dir(data_dir)
    path = data_dir / "credentials"
    if path.exists():
        stored = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return Credentials(stored["aws_access_key_id"], stored["aws_secret_access_key"]), False
    creds = Credentials("AKLH" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)[:40])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SECRET_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(
            f"aws_access_key_id={creds.access_key_id}\n"
            f"aws_secret_access_key={creds.secret_access_key}\n"
        )
    return creds, True

"""Server settings: command-line flags over environment variables over defaults."""

from __future__ import annotations

import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ACCOUNT = "000000000000"
ACCOUNT_ID = re.compile(r"^\d{12}$")


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    # "" means the server's default account (`Settings.account_id`).
    account_id: str = ""


@dataclass
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9000
    region: str = "us-east-1"
    account_id: str = DEFAULT_ACCOUNT
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
    # Function networking (sandbox/network.py): "nat" (the default: outbound IPv4 through the
    # host, DNS, the API port) or "isolated" (only `lo`). None below: the sandbox's defaults.
    function_network: str = "nat"
    function_network_range: str | None = None  # CIDR of the sandboxes' addresses
    egress_deny: tuple[str, ...] | None = None  # CIDRs functions may not reach
    function_dns: tuple[str, ...] = ()  # resolvers the forwarder asks (none: the host's)
    # Seconds the execution-role credentials of an environment last. An environment takes a
    # request only while its credentials outlive the request's timeout (plus a margin), so
    # environments are replaced before their credentials expire.
    credentials_lifetime_s: float = 3600.0
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
    """Root credentials of the default account from the environment, else the first key of
    (or a new key in) the data dir's credentials file.

    Returns the credentials and whether they were generated just now."""
    key = os.environ.get("LAMBDAHOST_ACCESS_KEY_ID")
    secret = os.environ.get("LAMBDAHOST_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret), False
    prepare_data_dir(data_dir)
    path = data_dir / "credentials"
    if path.exists():
        return read_credentials_file(path)[0], False
    creds = new_credentials()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SECRET_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(_render([creds]))
    return creds, True


# The credentials file: blocks of `key=value` lines separated by blank lines, one block per
# access key. A block without `account_id` (the file the first start writes) belongs to the
# default account, so the single-key file of older versions is read unchanged.


def new_credentials(account_id: str = "") -> Credentials:
    return Credentials(
        "AKLH" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)[:40], account_id
    )


def read_credentials_file(path: Path) -> list[Credentials]:
    found: list[Credentials] = []
    for block in re.split(r"\n\s*\n", path.read_text()):
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition("=") for line in block.splitlines() if "=" in line)
        )
        if fields.get("aws_access_key_id") and fields.get("aws_secret_access_key"):
            found.append(
                Credentials(
                    fields["aws_access_key_id"],
                    fields["aws_secret_access_key"],
                    fields.get("account_id", ""),
                )
            )
    return found


def _render(keys: list[Credentials]) -> str:
    blocks = []
    for creds in keys:
        block = (
            f"aws_access_key_id={creds.access_key_id}\n"
            f"aws_secret_access_key={creds.secret_access_key}\n"
        )
        if creds.account_id:
            block += f"account_id={creds.account_id}\n"
        blocks.append(block)
    return "\n".join(blocks)


def add_credentials(data_dir: Path, account_id: str) -> Credentials:
    """A new access key for `account_id`, appended to the data dir's credentials file (made,
    0600, when absent). A running server picks it up at its first use."""
    if not ACCOUNT_ID.match(account_id):
        raise ValueError(f"{account_id!r} is not a 12-digit account id")
    prepare_data_dir(data_dir)
    path = data_dir / "credentials"
    creds = new_credentials(account_id)
    existing = read_credentials_file(path) if path.exists() else []
    # Written aside and renamed over: a server reading the file sees the old or the new one.
    temporary = path.with_name(f".credentials.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, SECRET_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(_render([*existing, creds]))
    os.replace(temporary, path)
    return creds


class Keyring:
    """Every access key the server accepts, with its account: the root key of the default
    account (`Settings.credentials`) and the keys of the data dir's credentials file.

    A key not known yet makes it look at the file again, when the file changed since it last
    read it (one stat), so keys added while the server runs work at once."""

    def __init__(self, data_dir: Path, root: Credentials, default_account: str) -> None:
        self.path = data_dir / "credentials"
        self.root = root
        self.default_account = default_account
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, Credentials] = {}
        self._reload()

    def lookup(self, access_key_id: str) -> Credentials | None:
        """The key's credentials, with `account_id` always filled in; None when unknown."""
        found = self._keys.get(access_key_id)
        if found is None and self._reload():
            found = self._keys.get(access_key_id)
        return found

    def secret_for(self, access_key_id: str) -> str | None:
        found = self.lookup(access_key_id)
        return found.secret_access_key if found else None

    def accounts(self) -> set[str]:
        self._reload()
        return {c.account_id for c in self._keys.values()}

    def _reload(self) -> bool:
        """Read the file again if it changed; whether it did."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp == self._stamp and self._keys:
                return False
            stored = read_credentials_file(self.path) if stamp is not None else []
            keys = {
                c.access_key_id: Credentials(
                    c.access_key_id, c.secret_access_key, c.account_id or self.default_account
                )
                for c in stored
            }
            if self.root.access_key_id:
                keys[self.root.access_key_id] = Credentials(
                    self.root.access_key_id, self.root.secret_access_key, self.default_account
                )
            self._keys, self._stamp = keys, stamp
            return True

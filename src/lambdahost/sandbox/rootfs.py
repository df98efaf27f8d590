"""The sandbox's file system view, expressed as a bubblewrap command line.

The root is an empty tmpfs made read-only at the end, holding: the host's `/usr` (read-only)
with the usual `/bin`, `/sbin`, `/lib`, `/lib64` symlinks, a generated minimal `/etc`, a fresh
`/proc` and minimal `/dev`, a private size-limited `/tmp`, an empty `/opt` and the spec's
read-only mounts. Nothing else of the host is visible: no `/root`, `/home`, `/work`, `/var`,
data dir or other functions' code.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path, PurePosixPath

from lambdahost.sandbox.api import Link, Mount, SandboxError

HOST_ETC = Path("/etc")
SANDBOX_USER = "sbx_user1051"  # the name Lambda gives uid 993
# Read-only host trees every runtime needs; the top-level symlinks mirror merged-/usr Debian.
BASE_SYMLINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}
FIXED_TARGETS = ("/", "/usr", "/etc", "/proc", "/dev", "/tmp", *BASE_SYMLINKS)

# Copied from the host's /etc when present: libc, TLS trust, timezone data paths and the
# Debian alternatives symlinks that /usr/bin entries point through, plus what the runtimes'
# interpreters read (`Provisions.etc`). Never anything secret.
_COPIED_ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "protocols",
    "services",
    "mime.types",
    "os-release",
)
# Bound read-only instead of copied: hundreds of symlinks, slow to copy, public anyway.
BOUND_ETC = ("ssl/certs", "alternatives")
_NSSWITCH = """\
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
"""
_HOSTS = """\
127.0.0.1	localhost sandbox.localdomain
::1	localhost ip6-localhost ip6-loopback
"""


class EtcDirs:
    """The generated /etc of each sandbox uid, built on first use under `root`; `extra`: host
    /etc entries copied too (`Provisions.etc`); `resolv_conf`: the resolver configuration
    sandboxes get (the function network's, else the host's)."""

    def __init__(
        self, root: Path, extra: tuple[str, ...] = (), resolv_conf: str | None = None
    ) -> None:
        self.root = root
        self.extra = extra
        self.resolv_conf = resolv_conf
        self._dirs: dict[int, Path] = {}

    def for_uid(self, uid: int) -> Path:
        if uid not in self._dirs:
            self._dirs[uid] = build_etc(self.root / f"etc-{uid}", uid, self.extra, self.resolv_conf)
        return self._dirs[uid]

    async def prepare(self, uid: int) -> None:
        """Build the uid's /etc off the event loop (~3 ms of copying), the first time only."""
        if uid not in self._dirs:
            await asyncio.to_thread(self.for_uid, uid)


def build_etc(
    target: Path, uid: int, extra: tuple[str, ...] = (), resolv_conf: str | None = None
) -> Path:
    """Write a minimal /etc for sandboxes running as `uid` into `target` (replaced whole).
    `resolv_conf` None: the host's (harmless in a sandbox that has only `lo`)."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    copied = _COPIED_ETC if resolv_conf is not None else (*_COPIED_ETC, "resolv.conf")
    for relative in dict.fromkeys((*copied, *extra)):
        if PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts:
            raise SandboxError(f"/etc entry must be a relative path: {relative}")
        source = HOST_ETC / relative
        dest = staging / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), dest)
        elif source.is_dir():
            shutil.copytree(source, dest, symlinks=True)
        elif source.is_file():
            shutil.copy2(source, dest)
    for relative in BOUND_ETC:
        (staging / relative).mkdir(parents=True, exist_ok=True)  # mount points
    user = SANDBOX_USER if uid == 993 else f"sbx_user{uid}"
    files = {
        "passwd": (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{user}:x:{uid}:{uid}::/tmp:/usr/sbin/nologin\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"root:x:0:\n{user}:x:{uid}:\nnogroup:x:65534:\n",
        "hosts": _HOSTS,
        "nsswitch.conf": _NSSWITCH,
        "hostname": "localhost\n",
        "timezone": "Etc/UTC\n",
    }
    if resolv_conf is not None:
        files["resolv.conf"] = resolv_conf
    elif not (staging / "resolv.conf").exists() and not (staging / "resolv.conf").is_symlink():
        files["resolv.conf"] = "nameserver 127.0.0.1\n"
    for name, text in files.items():
        (staging / name).write_text(text)
    os.symlink("/usr/share/zoneinfo/Etc/UTC", staging / "localtime")  # Lambda runs in UTC
    for path in [staging, *staging.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def check_mounts(mounts: list[Mount]) -> list[Mount]:
    """Validate the spec's mounts; returns them parents-first so nested targets work."""
    seen: set[str] = set()
    for mount in mounts:
        target = PurePosixPath(mount.target)
        if not target.is_absolute() or ".." in target.parts or str(target) != mount.target:
            raise SandboxError(f"mount target must be a normalised absolute path: {mount.target}")
        if any(str(target) == f or str(target).startswith(f + "/") for f in FIXED_TARGETS[1:]):
            raise SandboxError(f"mount target {mount.target} hides a base directory")
        if mount.target == "/" or mount.target in seen:
            raise SandboxError(f"bad or duplicate mount target: {mount.target}")
        seen.add(mount.target)
        if not Path(mount.source).exists():
            raise SandboxError(f"mount source does not exist: {mount.source}")
    return sorted(mounts, key=lambda m: len(PurePosixPath(m.target).parts))


def check_links(links: tuple[Link, ...], mounts: list[Mount]) -> tuple[Link, ...]:
    """Validate the spec's links: each in the root's own tmpfs (a read-only mount or a base
    directory cannot take a new entry), none where a mount or another link is."""
    seen: set[str] = set()
    covered = [*FIXED_TARGETS[1:], *(m.target for m in mounts)]
    for link in links:
        path = PurePosixPath(link.path)
        if not path.is_absolute() or ".." in path.parts or str(path) != link.path:
            raise SandboxError(f"link path must be a normalised absolute path: {link.path}")
        if link.path == "/" or link.path in seen or not link.points_to:
            raise SandboxError(f"bad or duplicate link: {link.path}")
        if any(link.path == c or link.path.startswith(c + "/") for c in covered):
            raise SandboxError(f"link {link.path} is inside a mount or base directory")
        if any(c.startswith(link.path + "/") for c in covered):
            raise SandboxError(f"link {link.path} would hide a mount below it")
        seen.add(link.path)
    return links


def bwrap_mount_args(
    etc_dir: Path,
    mounts: list[Mount],
    tmp_bytes: int,
    cwd: str,
    proc_files: dict[str, Path] | None = None,
    links: tuple[Link, ...] = (),
) -> list[str]:
    """bwrap options assembling the sandbox's root file system. `proc_files`: host files bound
    over /proc/<name> (the environment's own meminfo and friends, see `procviews`); `links`:
    symbolic links made in the root (checked by `check_links`)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for link, points_to in BASE_SYMLINKS.items():
        args += ["--symlink", points_to, link]
    args += ["--ro-bind", str(etc_dir), "/etc"]
    for relative in BOUND_ETC:
        args += ["--ro-bind-try", str(HOST_ETC / relative), f"/etc/{relative}"]
    args += ["--proc", "/proc"]
    for name, source in (proc_files or {}).items():
        args += ["--ro-bind-try", str(source), f"/proc/{name}"]
    args += ["--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    # bwrap would create missing parents with the source's modes (often 0700): make them
    # explicitly world-readable so the unprivileged uid can walk to its mounts.
    created: set[str] = {"/"}

    def ensure_dir(path: PurePosixPath) -> None:
        for directory in [*reversed(path.parents), path]:
            if str(directory) not in created:
                created.add(str(directory))
                args.extend(["--perms", "0755", "--dir", str(directory)])

    ensure_dir(PurePosixPath("/opt"))
    for mount in mounts:
        target = PurePosixPath(mount.target)
        ensure_dir(target.parent)
        args += ["--ro-bind", str(Path(mount.source).resolve()), mount.target]
        created.add(mount.target)
    for extra in links:
        ensure_dir(PurePosixPath(extra.path).parent)
        args += ["--symlink", extra.points_to, extra.path]
    cwd_path = PurePosixPath(cwd)
    covering = [PurePosixPath(m.target) for m in mounts]
    covering += [PurePosixPath(f) for f in FIXED_TARGETS if f != "/"]
    if cwd_path != PurePosixPath("/") and not any(
        root == cwd_path or root in cwd_path.parents for root in covering
    ):
        ensure_dir(cwd_path)  # e.g. the code's directory without code mounted: empty
    args += ["--remount-ro", "/"]
    return args


_TMPFS_ARGS = 6  # "--perms", "1777", "--size", N, "--tmpfs", "/tmp"


def with_tmp_device(args: list[str], device: str) -> list[str]:
    """`args` with the ext4 file system on `device` mounted at /tmp instead of the tmpfs; only
    the zygote's launcher understands `--ext4` (bwrap cannot mount block devices)."""
    end = args.index("/tmp", args.index("--tmpfs")) + 1
    return [*args[: end - _TMPFS_ARGS], "--ext4", device, "/tmp", *args[end:]]


def with_tmp_volume(args: list[str], volume: Path) -> list[str]:
    """`args` (from `bwrap_mount_args`) with the host directory `volume` bound read-write at
    /tmp instead of the tmpfs (a disk-backed volume, see `tmpvol`)."""
    end = args.index("/tmp", args.index("--tmpfs")) + 1
    return [*args[: end - _TMPFS_ARGS], "--bind", str(volume), "/tmp", *args[end:]]

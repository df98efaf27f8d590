"""Disk-backed `/tmp` volumes: an ext4 file system per sandbox, on a loop device over a sparse
image file, with exactly `tmp_mb` usable by the sandbox's unprivileged uid.

Why not tmpfs: tmpfs pages are charged to the writer's memory cgroup and cannot be reclaimed,
so a 128 MB function writing 200 MB to `/tmp` is OOM-killed. On AWS `/tmp` is disk, separate
from memory. Written ext4 pages are page cache: reclaimable, so they never OOM a function.

Cold starts must not pay for `mkfs`, so a background thread keeps a few *ready* volumes per
size: image made, formatted, attached to a loop device (held by our open descriptor, with
autoclear: the device detaches itself once nothing uses it; loopdev.py finds or adds one).
`acquire()` takes one and mounts it under our state dir (one mount(2) call); the backend
binds that at `/tmp`. `release()`
shuts the file system down (its dirty pages are dropped, never written back), detaches the
mount and deletes the image; a used volume is never handed out again. The loop device uses
direct I/O, so the image's own page cache does not double what the function wrote.

Bursts: an acquire that finds none ready makes its own (~1.5 ms, serialised with the others
by the loop devices: 100 at once wait ~0.1 s at the median), and tells the pool to keep one
more of that size ready, up to MAX_SPARES, until no burst came for `decay_s`.

Exact size: ext4 keeps some blocks for itself. Once per size we measure what a fresh file
system of a slightly larger image offers and mark the excess as root-reserved blocks; the
sandbox never runs as root, so it gets ENOSPC at exactly `tmp_mb`.

Everything lives in `<state_dir>/<instance>/`, one instance per `TmpVolumes` object;
`cleanup_stale()` removes what other (dead) instances left: mounts, loop devices, images.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lambdahost.sandbox.api import SandboxError
from lambdahost.sandbox.loopdev import BLOCK, LOOP_CONTROL, attach, detach

log = logging.getLogger("lambdahost.sandbox")

MKFS = "/usr/sbin/mkfs.ext4"
TUNE2FS = "/usr/sbin/tune2fs"
SPARES = 2  # ready volumes kept per size
MAX_SPARES = 32  # after a burst found none ready (each holds a loop device and ~130 KB)
SPARES_DECAY_S = 60.0  # a size without such a miss for this long goes back to SPARES
MAX_SIZES = 8  # sizes kept ready at once (least recently used ones are dropped)

_EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
_EXT4_GOING_FLAGS_NOLOGFLUSH = 2
_MS_NOSUID, _MS_NODEV, _MS_NOATIME = 0x2, 0x4, 0x400
_MNT_DETACH = 0x2
_HELPER_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class VolumeError(OSError):
    """A volume could not be made or mounted."""


@dataclass
class Volume:
    """One ext4 volume: `image` attached to `device` (held open by `loop_fd`); `path` is where
    it is mounted on the host once acquired."""

    size_bytes: int
    image: Path
    device: str
    loop_fd: int
    path: Path | None = None


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    result = _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                         flags, data.encode() or None)  # fmt: skip
    if result < 0:
        code = ctypes.get_errno()
        raise VolumeError(code, f"mount {source} on {target}: {os.strerror(code)}")


def _umount(target: str) -> None:
    if _libc.umount2(target.encode(), _MNT_DETACH) < 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise VolumeError(code, f"umount {target}: {os.strerror(code)}")


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, env=_HELPER_ENV, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        raise VolumeError(errno.EIO, f"{argv[0]} failed: {detail}")


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy only `source`'s data extents (a fresh ext4 image is ~100 KB of a sparse file)."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            end = os.fstat(src).st_size
            os.ftruncate(dst, end)
            offset = 0
            while offset < end:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as error:
                    if error.errno == errno.ENXIO:  # no data after offset
                        break
                    raise
                stop = os.lseek(src, start, os.SEEK_HOLE)
                os.lseek(src, start, os.SEEK_SET)
                os.lseek(dst, start, os.SEEK_SET)
                remaining = stop - start
                while remaining:
                    chunk = os.read(src, min(remaining, 1 << 20))
                    os.write(dst, chunk)
                    remaining -= len(chunk)
                offset = stop
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _format(image: Path, image_bytes: int, reserved_blocks: int) -> None:
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, image_bytes)  # sparse: costs no disk until written
    finally:
        os.close(fd)
    # No journal (nothing to recover: volumes never outlive their sandbox), lazy inode tables.
    _run(MKFS, "-q", "-F", "-b", str(BLOCK), "-m", "0", "-O", "^has_journal,^resize_inode",
         "-E", "lazy_itable_init=1,nodiscard", str(image))  # fmt: skip
    if reserved_blocks:
        _run(TUNE2FS, "-r", str(reserved_blocks), str(image))


class TmpVolumes:
    """A pool of ready ext4 volumes per size, refilled by a background thread."""

    def __init__(self, state_dir: Path, spares: int = SPARES) -> None:
        self.root = state_dir
        self.dir = state_dir / f"v-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.spares = spares
        self.decay_s = SPARES_DECAY_S
        self._ready: dict[int, collections.deque[Volume]] = {}
        self._wanted: dict[int, int] = {}  # size → volumes to keep ready, when above `spares`
        self._missed_at: dict[int, float] = {}  # size → when an acquire last found none
        self._layouts: dict[int, tuple[int, int]] = {}  # size → (image bytes, reserved blocks)
        self._template_lock = threading.Lock()
        self._lock = threading.Condition()
        self._closed = False
        self._used: list[Volume] = []  # released, image still to delete
        self._ids = 0
        self._thread: threading.Thread | None = None
        self.reason = _unavailable_reason()
        if self.reason is None:
            try:
                state_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
                self.dir.mkdir(mode=0o700)
            except OSError as error:
                self.reason = f"cannot create {self.dir}: {error}"
        if self.reason is None:
            atexit.register(self.close)  # also for backends nobody closes
        else:
            log.warning("sandboxes get a tmpfs /tmp, charged to their memory: %s", self.reason)

    @property
    def available(self) -> bool:
        return self.reason is None

    # -- the pool --------------------------------------------------------------------------
    def prepare(self, size_bytes: int) -> None:
        """Keep volumes of this size ready from now on (refilled in the background)."""
        if not self.available:
            return
        with self._lock:
            if self._closed:
                return
            ready = self._ready.pop(size_bytes, None)
            self._ready[size_bytes] = ready if ready is not None else collections.deque()
            while len(self._ready) > MAX_SIZES:  # forget the least recently used size
                oldest = next(iter(self._ready))
                for volume in self._ready.pop(oldest):
                    self._discard(volume)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._refill, name="lambdahost-tmpvol", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def acquire(self, size_bytes: int, mount: bool = True) -> Volume:
        """A fresh volume of `size_bytes` usable bytes, mounted on the host (`volume.path`).
        Fast when one is ready; otherwise makes one now (tens of ms). Blocking: call it from a
        thread when the pool is empty (`ready()` says)."""
        if not self.available:
            raise VolumeError(errno.ENODEV, self.reason or "unavailable")
        self.prepare(size_bytes)
        with self._lock:
            ready = self._ready.get(size_bytes)
            volume = ready.popleft() if ready else None
            if volume is None:
                self._missed(size_bytes)
            self._lock.notify_all()
        if volume is None:
            volume = self._make(size_bytes)
        if not mount:  # the sandbox mounts `volume.device` itself, in its own namespace
            return volume
        try:
            self._mount(volume)
        except BaseException:
            self._discard(volume)
            raise
        return volume

    def ready(self, size_bytes: int) -> bool:
        return self.ready_count(size_bytes) > 0

    def ready_count(self, size_bytes: int) -> int:
        with self._lock:
            return len(self._ready.get(size_bytes) or ())

    def release(self, volume: Volume) -> None:
        """Unmount `volume` now (what was written is dropped, not flushed); its image is
        deleted in the background (freeing a big file's extents takes tens of ms)."""
        self._unmount(volume)
        with self._lock:
            if self._thread is not None and not self._closed:
                self._used.append(volume)
                self._lock.notify_all()
                return
        self._discard(volume)

    def close(self) -> None:
        """Stop refilling and delete every ready volume (acquired ones are the sandboxes')."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(30)
        with self._lock:
            volumes = [v for ready in self._ready.values() for v in ready] + self._used
            self._ready.clear()
            self._used = []
        for volume in volumes:
            self._discard(volume)
        for template in self.dir.glob("template-*.img"):
            template.unlink(missing_ok=True)
        if self.available:
            with contextlib.suppress(OSError):
                self.dir.rmdir()

    def cleanup_stale(self) -> int:
        """Remove the volumes other instances left in the state dir (after a crash)."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for entry in self.root.iterdir():
            if entry != self.dir and entry.is_dir():
                removed += remove_instance(entry)
        return removed

    # -- making and discarding -------------------------------------------------------------
    def _refill(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    size = self._short_size()
                    if size is not None or self._used:
                        break
                    self._lock.wait(self._relax())
                if self._closed:
                    return
                used = self._used.pop() if self._used else None
            if used is not None:  # one per turn, between makes: cleaning never starves refills
                self._discard(used)
            if size is None:
                continue
            try:
                volume = self._make(size)
            except OSError as error:
                log.warning("cannot make a /tmp volume of %d MB: %s", size >> 20, error)
                with self._lock:
                    self._lock.wait(5)  # don't spin on a persistent failure
                continue
            with self._lock:
                ready = self._ready.get(size)
                if ready is None or self._closed:
                    self._discard(volume)
                else:
                    ready.append(volume)

    def _short_size(self) -> int | None:
        for size, ready in reversed(self._ready.items()):  # the most recently used first
            if len(ready) < self._wanted.get(size, self.spares):
                return size
        return None

    def _missed(self, size_bytes: int) -> None:
        """An acquire found no volume ready (and makes one itself, ~1.5 ms, serialised with
        the others by the loop devices): bursts come again, so keep one more ready, for a
        while. Called with the lock held."""
        if self.spares:
            wanted = self._wanted.get(size_bytes, self.spares)
            self._wanted[size_bytes] = min(MAX_SPARES, wanted + 1)
            self._missed_at[size_bytes] = time.monotonic()

    def _relax(self) -> float | None:
        """Sizes without a miss for `decay_s` go back to `spares` (their extra ready
        volumes are discarded); returns when the next one is due. Called with the lock held."""
        now, due = time.monotonic(), None
        for size in list(self._wanted):
            left = self._missed_at[size] + self.decay_s - now
            if left > 0:
                due = left if due is None else min(due, left)
                continue
            del self._wanted[size], self._missed_at[size]
            ready = self._ready.get(size)
            while ready and len(ready) > self.spares:
                self._used.append(ready.pop())
        return due

    def _make(self, size_bytes: int) -> Volume:
        """A new volume: a sparse copy of the size's template (formatted and shaped once),
        attached to a loop device. About 1 ms, against ~10 ms for mkfs per volume."""
        template = self._template(size_bytes)
        with self._lock:
            self._ids += 1
            image = self.dir / f"{self._ids}-{size_bytes >> 20}.img"
        try:
            _copy_sparse(template, image)
            device, fd = attach(image)
        except BaseException:
            image.unlink(missing_ok=True)
            raise
        return Volume(size_bytes, image, device, fd)

    def _template(self, size_bytes: int) -> Path:
        """The size's formatted image, with /tmp's shape: no lost+found, mode 1777."""
        template = self.dir / f"template-{size_bytes >> 20}.img"
        with self._template_lock:
            if not template.exists():
                self._make_template(template, size_bytes)
        return template

    def _make_template(self, template: Path, size_bytes: int) -> None:
        image_bytes, reserved = self._layout(size_bytes)
        staging = self.dir / f"template-{size_bytes >> 20}-new.img"
        try:
            _format(staging, image_bytes, reserved)
            device, fd = attach(staging)
            volume = Volume(size_bytes, staging, device, fd)
            try:
                self._mount(volume)
                assert volume.path is not None
                os.rmdir(volume.path / "lost+found")
                os.chmod(volume.path, 0o1777)
                self._unmount(volume, drop_writes=False)
            finally:
                if volume.loop_fd >= 0:
                    os.close(volume.loop_fd)  # autoclear detaches it
            os.rename(staging, template)
        finally:
            staging.unlink(missing_ok=True)

    def _layout(self, size_bytes: int) -> tuple[int, int]:
        """(image size, reserved blocks) giving exactly `size_bytes` to unprivileged users,
        measured once per size on a throwaway volume."""
        layout = self._layouts.get(size_bytes)
        if layout is not None:
            return layout
        # ext4's own blocks; the fixed part is capped for small sizes, whose reserve could
        # otherwise exceed the half of all blocks tune2fs accepts.
        image_bytes = size_bytes + size_bytes // 16 + min(16 << 20, max(1 << 20, size_bytes // 2))
        image_bytes -= image_bytes % BLOCK
        with self._lock:
            self._ids += 1
            image = self.dir / f"{self._ids}-measure.img"
        try:
            _format(image, image_bytes, 0)
            device, fd = attach(image)
            volume = Volume(size_bytes, image, device, fd)
            try:
                self._mount(volume)
                assert volume.path is not None
                os.rmdir(volume.path / "lost+found")  # as every handed-out volume has it
                stat = os.statvfs(volume.path)
                available = stat.f_bavail * stat.f_frsize
            finally:
                self._discard(volume)
        finally:
            image.unlink(missing_ok=True)
        if available < size_bytes:
            raise VolumeError(errno.ENOSPC, f"ext4 overhead above estimate for {size_bytes}")
        layout = (image_bytes, (available - size_bytes) // BLOCK)
        self._layouts[size_bytes] = layout
        return layout

    def _mount(self, volume: Volume) -> None:
        path = volume.image.with_suffix("")
        path.mkdir(mode=0o755)
        try:
            _mount(volume.device, str(path), "ext4", _MS_NOSUID | _MS_NODEV | _MS_NOATIME)
        except BaseException:
            path.rmdir()
            raise
        volume.path = path

    def _discard(self, volume: Volume) -> None:
        self._unmount(volume)
        if volume.loop_fd >= 0:
            os.close(volume.loop_fd)  # autoclear: the device detaches once the fs is gone
            volume.loop_fd = -1
        volume.image.unlink(missing_ok=True)

    def _unmount(self, volume: Volume, drop_writes: bool = True) -> None:
        if volume.path is not None:
            if drop_writes:
                with contextlib.suppress(OSError):
                    fd = os.open(volume.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:  # drop dirty pages instead of writing them back to an image we delete
                        flags = struct.pack("I", _EXT4_GOING_FLAGS_NOLOGFLUSH)
                        fcntl.ioctl(fd, _EXT4_IOC_SHUTDOWN, flags)
                    finally:
                        os.close(fd)
            _umount(str(volume.path))
            with contextlib.suppress(OSError):
                volume.path.rmdir()
            volume.path = None


def remove_instance(directory: Path) -> int:
    """Unmount, detach and delete every volume under `directory`; returns how many images."""
    prefix = str(directory) + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split(" ", 5)[4].replace("\\040", " ")
        if mount_point.startswith(prefix):
            with contextlib.suppress(OSError):
                _umount(mount_point)
    images = list(directory.glob("*.img"))
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().strip().startswith(prefix):
                detach(f"/dev/{backing.parent.parent.name}")
    shutil.rmtree(directory, ignore_errors=True)
    return len(images)


def _unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    for tool in (MKFS, TUNE2FS):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (apt-get install e2fsprogs)"
    if not os.path.exists(LOOP_CONTROL):
        return f"{LOOP_CONTROL} is missing (no loop devices)"
    return None


class TmpLease:
    """A sandbox's hold on its volume: `release()` (idempotent) gives it back."""

    def __init__(self, pool: TmpVolumes, volume: Volume) -> None:
        self.pool = pool
        self.volume = volume
        self.path: Path = volume.path or Path()
        self.device = volume.device
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.pool.release(self.volume)


async def lease(pool: TmpVolumes, size_bytes: int, mount: bool = True) -> TmpLease | None:
    """A volume for one sandbox, mounted on the host (or, with `mount=False`, only attached:
    the sandbox mounts `device` in its own mount namespace, so the mount dies with it).

    None only when this host cannot make volumes at all (`pool.available` is false: not root,
    no e2fsprogs, no loop devices): the caller then gives every sandbox a tmpfs /tmp, which
    was logged once, when the pool was made. A host that can but fails now raises
    SandboxError: a function never silently gets a memory-backed /tmp instead of its disk."""
    if not pool.available:
        return None
    try:
        if pool.ready(size_bytes):
            volume = pool.acquire(size_bytes, mount)  # at most a mount(2): cheaper than a hop
        else:
            volume = await asyncio.to_thread(pool.acquire, size_bytes, mount)
    except OSError as error:
        raise SandboxError(f"cannot make its /tmp ({size_bytes >> 20} MB): {error}") from error
    return TmpLease(pool, volume)

"""Loop devices for /tmp volumes: attach an image to a free one, many threads at once.

LOOP_CTL_GET_FREE hands out the lowest unbound device and adds one when none is: the kernel's
only bounds are minor numbers and memory (`max_loop` limits only the devices made at boot or
by opening a /dev/loopN that does not exist yet). Devices stay once added; an autoclear
device unbinds itself when its last user closes it, and is handed out again.

What goes wrong under a burst, and what `attach()` does about it:
- Threads asking at once all get the same number and all but one lose (EBUSY): threads of
  this process take turns (a lock around ask-and-configure, ~0.5 ms), so they never race.
- Another process (another server, losetup) may configure the device first (EBUSY) or remove
  it (ENXIO): ask again at once, then back off a little; bounded by time, not by tries.
- A device the kernel keeps offering may stay busy (someone holds it open exclusively, e.g.
  a prober): after losing on it twice, take another unbound device, or add one.
- The kernel cannot add one (ENOMEM, ENOSPC): wait for a release, as long as the deadline.
- No udev and no devtmpfs (a container's /dev): the node is made with mknod, from the
  dev_t sysfs announces (block major 7; the minor depends on the module's max_part).
"""

from __future__ import annotations

import collections
import errno
import fcntl
import os
import stat
import struct
import threading
import time
from pathlib import Path

LOOP_CONTROL = "/dev/loop-control"
ATTACH_TIMEOUT_S = 10.0  # then the cold start fails with a clear error, never a tmpfs
BLOCK = 4096

_LOOP_CTL_ADD = 0x4C80
_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LOOP_CLR_FD = 0x4C01
_LO_FLAGS_AUTOCLEAR = 4
_LO_FLAGS_DIRECT_IO = 16
_LOOP_MAJOR = 7
_SYS_BLOCK = Path("/sys/block")
# Lost a race for a device (EBUSY), it was removed meanwhile (ENXIO, ENOENT), or the kernel
# cannot add one now (ENOMEM, ENOSPC): worth asking again.
_RETRY = frozenset({errno.EBUSY, errno.ENXIO, errno.ENOENT, errno.ENOMEM, errno.ENOSPC})
_STUCK_AFTER = 2  # EBUSYs on one device before stepping over it

_lock = threading.Lock()


class LoopError(OSError):
    """No loop device could be attached."""


def attach(image: Path, timeout_s: float = ATTACH_TIMEOUT_S) -> tuple[str, int]:
    """Attach `image` to a free loop device with direct I/O and autoclear; returns the
    device's path and our descriptor on it (closing that detaches the device once nothing
    else uses it). Raises LoopError when none could be had within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
        try:
            return _attach(control, backing, image, deadline, timeout_s)
        finally:
            os.close(control)
    finally:
        os.close(backing)


def _attach(
    control: int, backing: int, image: Path, deadline: float, timeout_s: float
) -> tuple[str, int]:
    lost: collections.Counter[int] = collections.Counter()
    pause = 0.0
    while True:
        number = -1
        try:
            with _lock:
                number = _free_number(control, lost)
                return _configure(number, backing, image)
        except OSError as error:
            if error.errno not in _RETRY:
                raise
            if error.errno == errno.EBUSY and number >= 0:
                lost[number] += 1
            if time.monotonic() >= deadline:
                raise LoopError(
                    error.errno, f"no loop device within {timeout_s:g} s: {error.strerror}"
                ) from error
            if error.errno == errno.EBUSY and lost.total() <= _STUCK_AFTER:
                continue  # lost a race to another process: ask again at once
            pause = min(max(pause * 2, 0.001), 0.05)  # else back off, up to 50 ms
            time.sleep(pause)


def _free_number(control: int, lost: collections.Counter[int]) -> int:
    number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
    if lost[number] < _STUCK_AFTER:
        return number
    # The kernel keeps offering a device we cannot have: any other unbound one, else a new one.
    existing = _existing_numbers()
    for other in existing:
        if lost[other] < _STUCK_AFTER and not _bound(other):
            return other
    candidate = max(existing, default=-1) + 1
    while True:
        try:
            return fcntl.ioctl(control, _LOOP_CTL_ADD, candidate)
        except FileExistsError:
            candidate += 1  # another process added it meanwhile


def _existing_numbers() -> list[int]:
    return sorted(
        int(entry.name[4:]) for entry in _SYS_BLOCK.glob("loop*") if entry.name[4:].isdigit()
    )


def _bound(number: int) -> bool:
    return (_SYS_BLOCK / f"loop{number}" / "loop" / "backing_file").exists()


def _configure(number: int, backing: int, image: Path) -> tuple[str, int]:
    device = f"/dev/loop{number}"
    fd = _open(number, device)
    # struct loop_config: fd, block_size, loop_info64 (232 bytes), reserved[8]
    info = bytearray(232)
    struct.pack_into("I", info, 52, _LO_FLAGS_AUTOCLEAR | _LO_FLAGS_DIRECT_IO)
    name = str(image).encode()[:63]
    info[56 : 56 + len(name)] = name
    config = struct.pack("II", backing, BLOCK) + bytes(info) + bytes(64)
    try:
        fcntl.ioctl(fd, _LOOP_CONFIGURE, config)
    except BaseException:
        os.close(fd)
        raise
    return device, fd


def _open(number: int, device: str) -> int:
    """Open loop device `number` at `device`, making the node where nothing else does (a
    container's /dev), and check that the node really is that device."""
    expected = _devno(number)
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            os.mknod(device, stat.S_IFBLK | 0o600, expected)
        except FileExistsError:
            pass  # devtmpfs made it meanwhile
        except OSError as error:
            raise LoopError(
                error.errno,
                f"cannot create {device} (block {os.major(expected)}:{os.minor(expected)}): "
                f"{error.strerror}; /dev must be writable when nothing makes device nodes",
            ) from error
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    rdev = os.fstat(fd).st_rdev
    if rdev != expected:
        os.close(fd)
        raise LoopError(
            errno.ENODEV,
            f"{device} is block {os.major(rdev)}:{os.minor(rdev)}, not loop{number} "
            f"({os.major(expected)}:{os.minor(expected)}): a stale node in /dev?",
        )
    return fd


def _devno(number: int) -> int:
    """Loop device `number`'s dev_t, as sysfs announces it."""
    if not _SYS_BLOCK.is_dir():  # no sysfs: the minor is the number unless max_part is set
        return os.makedev(_LOOP_MAJOR, number)
    try:
        major, minor = (_SYS_BLOCK / f"loop{number}" / "dev").read_text().split(":")
    except FileNotFoundError:
        raise OSError(errno.ENXIO, f"loop{number} is gone") from None  # removed: ask again
    return os.makedev(int(major), int(minor))


def detach(device: str) -> None:
    """Unbind `device` from its image now (for cleaning up after a dead process)."""
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _LOOP_CLR_FD)
    finally:
        os.close(fd)

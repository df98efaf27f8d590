"""A seccomp filter for sandboxes, assembled here as classic BPF (no libseccomp needed).

The filter is a deny list on top of an unprivileged uid with no capabilities: it closes the
kernel interfaces that let a process leave or widen its sandbox (namespaces, mounts), inspect
other processes (ptrace, process_vm_*), or reach rarely needed, often exploited kernel code
(bpf, keyrings, io_uring, userfaultfd, perf, module loading). Denied calls fail with EPERM, so
runtimes see an ordinary error. Only x86_64 is allowed: other ABIs (i386 `int 0x80`, x32) would
need their own numbers, so they are refused outright.

`build_filter()` returns the raw `struct sock_filter[]` bytes that `bwrap --seccomp FD` loads.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little endian).
_OFFSET_NR = 0
_OFFSET_ARCH = 4


def _arg_low(index: int) -> int:
    return 16 + 8 * index


SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes (linux/filter.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

# x86_64 numbers (asm/unistd_64.h); tests check them against the header when it is present.
DENIED_SYSCALLS: dict[str, int] = {
    "unshare": 272,
    "setns": 308,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "move_mount": 429,
    "open_tree": 428,
    "mount_setattr": 442,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    # Taking another process's descriptors (e.g. the agent's host socket) or memory hints.
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "bpf": 321,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "create_module": 174,
    "get_kernel_syms": 177,
    "query_module": 178,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "quotactl": 179,
    "quotactl_fd": 443,
    "acct": 163,
    "lookup_dcookie": 212,
    "settimeofday": 164,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "uselib": 134,
    "vhangup": 153,
    "iopl": 172,
    "ioperm": 173,
    "syslog": 103,
    "nfsservctl": 180,
    "_sysctl": 156,
    "fanotify_init": 300,
}
# io_uring is refused with ENOSYS, which libuv and others read as "not available, fall back".
UNSUPPORTED_SYSCALLS: dict[str, int] = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    # glibc falls back to clone() on ENOSYS; clone()'s flags can be checked, clone3's cannot.
    "clone3": 435,
}
CLONE = 56
IOCTL = 16

# clone() flags that create namespaces. CLONE_NEWTIME (0x80) is not here: in clone()'s flags
# those low bits are the exit signal, and time namespaces are only reachable via unshare/clone3.
CLONE_NEW_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
# ioctls that push input into, or reconfigure, a terminal the sandbox may share with the host.
DENIED_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX


@dataclass
class _Insn:
    code: int
    k: int
    jt: str | int = 0  # label or 0 (fall through)
    jf: str | int = 0


class _Program:
    """A tiny assembler: forward jumps to named labels, resolved when encoded."""

    def __init__(self) -> None:
        self.insns: list[_Insn] = []
        self.labels: dict[str, int] = {}

    def load(self, offset: int) -> None:
        self.insns.append(_Insn(_LD_W_ABS, offset))

    def jump(self, code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.insns.append(_Insn(code, k, jt, jf))

    def ret(self, value: int) -> None:
        self.insns.append(_Insn(_RET_K, value))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def encode(self) -> bytes:
        out = bytearray()
        for pc, insn in enumerate(self.insns):
            jt, jf = (self._offset(pc, target) for target in (insn.jt, insn.jf))
            out += struct.pack("<HBBI", insn.code, jt, jf, insn.k)
        return bytes(out)

    def _offset(self, pc: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        offset = self.labels[target] - pc - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"BPF jump to {target} out of range ({offset})")
        return offset


def build_filter() -> bytes:
    """The sandbox filter as raw `struct sock_filter[]` bytes (8 bytes per instruction)."""
    p = _Program()
    p.load(_OFFSET_ARCH)
    p.jump(_JEQ_K, AUDIT_ARCH_X86_64, jf="kill")
    p.load(_OFFSET_NR)
    p.jump(_JGE_K, X32_SYSCALL_BIT, jt="eperm")
    p.jump(_JEQ_K, CLONE, jt="clone")
    p.jump(_JEQ_K, IOCTL, jt="ioctl")
    for number in UNSUPPORTED_SYSCALLS.values():
        p.jump(_JEQ_K, number, jt="enosys")
    for number in DENIED_SYSCALLS.values():
        p.jump(_JEQ_K, number, jt="eperm")
    p.ret(SECCOMP_RET_ALLOW)

    p.label("clone")
    p.load(_arg_low(0))
    p.jump(_JSET_K, CLONE_NEW_FLAGS, jt="eperm")
    p.ret(SECCOMP_RET_ALLOW)

    p.label("ioctl")
    p.load(_arg_low(1))
    for request in DENIED_IOCTLS:
        p.jump(_JEQ_K, request, jt="eperm")
    p.ret(SECCOMP_RET_ALLOW)

    p.label("eperm")
    p.ret(SECCOMP_RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    p.label("kill")
    p.ret(SECCOMP_RET_KILL_PROCESS)
    return p.encode()

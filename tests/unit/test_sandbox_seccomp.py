"""The BPF program itself: syscall numbers and encoding."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lambdahost.sandbox import seccomp

HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


@pytest.mark.skipif(not HEADER.exists(), reason="kernel headers not installed")
def test_syscall_numbers_match_the_kernel_header() -> None:
    numbers = {
        name: int(number)
        for name, number in re.findall(r"#define __NR_(\w+) (\d+)", HEADER.read_text())
    }
    table = {**seccomp.DENIED_SYSCALLS, **seccomp.UNSUPPORTED_SYSCALLS}
    table |= {"clone": seccomp.CLONE, "ioctl": seccomp.IOCTL}
    for name, number in table.items():
        if name in numbers:  # a few ancient ones are gone from new headers
            assert numbers[name] == number, name


def test_filter_is_well_formed() -> None:
    program = seccomp.build_filter()
    assert len(program) % 8 == 0
    assert 0 < len(program) // 8 < 256  # jumps are relative 8-bit offsets

"""The layering rules the code relies on, checked on the source: `sandbox/` imports nothing
above it, `agent/` nothing but the stdlib and itself, and the runtime registry is the one
place that names runtimes and the paths they see."""

from __future__ import annotations

import ast
import sys
from pathlib import Path, PurePosixPath

import pytest

import lambdahost
from lambdahost.agent import forkserver
from lambdahost.control.lambda_ import rules
from lambdahost.invoke.environment import AGENT_DIR, PACKAGE_ROOT, provisions
from lambdahost.runtimes import PYTHON, RUNTIME_DIR, RUNTIMES

SRC = Path(lambdahost.__file__).parent
NEEDLES = ("/var/rapid", "/var/runtime", "/var/task", "/usr/bin/python", "/usr/bin/node")
ABOVE_SANDBOX = ("invoke", "control", "api", "platform", "store", "runtimes", "agent", "cli")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in `path` names, wherever it sits (function bodies,
    `if TYPE_CHECKING:` blocks), relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_sandbox_imports_nothing_above_it() -> None:
    forbidden = [f"lambdahost.{name}" for name in ABOVE_SANDBOX]
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for path in sorted((SRC / "sandbox").rglob("*.py"))
        for line, module in imported_modules(path)
        if module == "lambdahost"  # the package itself: its __file__ is no business of ours
        or any(module == name or module.startswith(name + ".") for name in forbidden)
    ]
    assert offenders == []


def test_agent_imports_only_the_stdlib_and_itself() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for path in sorted((SRC / "agent").rglob("*.py"))
        for line, module in imported_modules(path)
        if not module.startswith("lambdahost.agent")
        and module.split(".")[0] not in (*sys.stdlib_module_names, "__future__")
    ]
    assert offenders == []


def test_paths_are_spelled_once() -> None:
    """Host-side code names the sandbox's paths and interpreters through `runtimes` (and
    `invoke.environment.AGENT_DIR`); code that runs inside (agent, runtime loops) is exempt."""
    spelled: dict[str, list[str]] = {}
    inside = (SRC / "agent", SRC / "runtimes" / "python", SRC / "runtimes" / "nodejs")
    for path in sorted(SRC.rglob("*.py")):
        if any(path.is_relative_to(directory) for directory in inside):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for needle in NEEDLES:
                    if node.value.startswith(needle):
                        spelled.setdefault(needle, []).append(str(path.relative_to(SRC)))
    assert {needle: sorted(set(files)) for needle, files in spelled.items()} == {
        "/var/rapid": ["invoke/environment.py"],
        "/var/runtime": ["runtimes/__init__.py"],
        "/var/task": ["runtimes/__init__.py"],
        "/usr/bin/python": ["runtimes/__init__.py"],
        "/usr/bin/node": ["runtimes/__init__.py"],
    }


@pytest.mark.parametrize("name", list(RUNTIMES))
def test_registry_entry(name: str) -> None:
    runtime = RUNTIMES[name]
    assert runtime.name == name and runtime.bootstrap and runtime.version
    assert all(PurePosixPath(argv[0]).is_absolute() for argv in runtime.bootstrap)
    if runtime.managed:
        assert runtime.interpreter == runtime.bootstrap[0][0]
        assert runtime.package, "name the Debian package, for the message when it is missing"
    else:
        assert runtime.interpreter is None and not runtime.env and not runtime.preload
    for file in runtime.preload:
        assert (PACKAGE_ROOT / "runtimes" / file).is_file()
    if runtime.preload:
        # The only form the agent's forkserver stands in for (its own definition).
        (python, *options, script) = runtime.bootstrap[0]
        assert python == PYTHON and options == forkserver.RUNTIME_OPTIONS
        assert (
            PACKAGE_ROOT / "runtimes" / PurePosixPath(script).relative_to(RUNTIME_DIR)
        ).is_file()


def test_control_and_sandbox_read_the_registry() -> None:
    assert rules.SUPPORTED_RUNTIMES == tuple(RUNTIMES)
    given = provisions()
    assert given.python == PYTHON and given.agent is not None
    assert given.agent.target == AGENT_DIR and (given.agent.source / "boot.py").is_file()
    assert {runtime.name for runtime in given.preload} == {
        runtime.name for runtime in RUNTIMES.values() if runtime.preload
    }
    assert set(given.etc) == {entry for runtime in RUNTIMES.values() for entry in runtime.etc}

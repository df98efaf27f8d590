"""The layering rules the code relies on, checked on the source: `sandbox/` imports nothing
above it, `agent/` nothing but the stdlib and itself, and the runtime registry is the one
place that names runtimes and the paths they see."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
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


# --- rooms and cycles: api → control → invoke → sandbox → agent → runtime ---------------

BASE = {"errors", "config"}
# What each room may import besides itself (and the package root, for its location on disk).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "agent": set(),  # runs inside the sandbox as `rapid`, on the stdlib alone
    "runtimes": set(),
    "sandbox": set(),  # told what to start by its spec; imports nothing above it
    "store": BASE,
    "control": BASE | {"store", "runtimes"},
    "invoke": BASE | {"control", "store", "sandbox", "runtimes", "agent"},
    "platform": BASE | {"control", "invoke", "store", "sandbox", "runtimes"},
    "api": BASE | {"platform", "control", "invoke", "store", "runtimes"},
    "cli": BASE | {"platform", "api", "control", "invoke", "store", "sandbox", "runtimes"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _graph() -> dict[str, set[str]]:
    """Module → the lambdahost modules it imports (relative imports resolved)."""
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for _, target in imported_modules(path):
            if target in modules and target != name:
                edges[name].add(target)
    return edges


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_room_imports_upward() -> None:
    wrong = []
    for source, targets in _graph().items():
        room = _room(source)
        for target in targets:
            other = _room(target)
            if other and other != room and other not in ALLOWED[room]:
                wrong.append(f"{source} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_import_graph_has_no_cycles() -> None:
    edges = _graph()
    # A package's __init__ is loaded before its modules: an edge back to an ancestor package
    # is not a cycle in practice.
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    cycles = [sorted(c) for c in _strongly_connected(edges) if len(c) > 1]
    assert not cycles, cycles


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    counter = 0
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                result.append(component)
    return result

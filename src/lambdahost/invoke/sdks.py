"""The AWS SDKs the managed runtimes ship, found on this host and mounted into environments.

`make install` installs the versions pinned in the checkout's `sdks/<runtime>/` (boto3 and
botocore for python3.11, the JS SDK v3 for nodejs20.x) into `<root>/<runtime>/<name>`, where
`<name>` is the last part of the runtime's `Runtime.sdk` (`site-packages`, `node_modules`) and
`<root>` is $LAMBDAHOST_RUNTIME_SDKS, else the checkout's `.cache/runtime-sdks`. Next to each
it leaves copies of the pin files it installed from. None of it is on the host's own paths
(not the server's venv, not the host's site-packages); an environment sees it read-only at
`Runtime.sdk`, as on AWS, below what the function's code and layers bring.

A runtime whose SDK is missing still runs, without it (an import of boto3 fails as on a
runtime that ships none), and the server says so once, at start.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import lambdahost
from lambdahost.runtimes import OPT_DIR, RUNTIME_DIR, RUNTIMES, Runtime
from lambdahost.sandbox.api import Link, Mount

log = logging.getLogger("lambdahost.invoke")

SDKS_ENV = "LAMBDAHOST_RUNTIME_SDKS"
# The checkout this package runs from (src/lambdahost → the repository), when it is one.
CHECKOUT = Path(lambdahost.__file__).resolve().parents[2]
PINS = CHECKOUT / "sdks"
DEFAULT_ROOT = CHECKOUT / ".cache" / "runtime-sdks"


@dataclass(frozen=True)
class RuntimeSdks:
    """The SDKs found: host directory by runtime name, each mounted at its `Runtime.sdk`."""

    dirs: Mapping[str, Path] = field(default_factory=dict)

    def mounts(self, runtime: str) -> list[Mount]:
        target = RUNTIMES[runtime].sdk
        source = self.dirs.get(runtime)
        return [Mount(source, target)] if source is not None and target is not None else []

    def links(self, runtime: str, opt: Path | None) -> tuple[Link, ...]:
        """The runtime's `sdk_link`, unless the function's layers (`opt`, the host directory
        mounted at /opt) bring a module directory of their own: the link would sit ahead of
        them in Node's search (every parent's node_modules comes before NODE_PATH), and a
        layer's copy must win over the runtime's."""
        entry = RUNTIMES[runtime]
        if runtime not in self.dirs or entry.sdk is None or entry.sdk_link is None:
            return ()
        if opt is not None and layers_bring_modules(entry, opt):
            return ()
        return (Link(entry.sdk_link, entry.sdk),)

    def prepared(self, runtimes_dir: Path) -> RuntimeSdks:
        """These SDKs, once the mount points they need inside `runtimes_dir` (the host directory
        mounted read-only at RUNTIME_DIR, where nothing can be created later) exist; an SDK whose
        mount point cannot be made is left out, with a warning."""
        usable = dict(self.dirs)
        for runtime in self.dirs:
            target = RUNTIMES[runtime].sdk
            if target is None or not PurePosixPath(target).is_relative_to(RUNTIME_DIR):
                continue
            point = runtimes_dir / PurePosixPath(target).relative_to(RUNTIME_DIR)
            try:
                point.mkdir(exist_ok=True)
            except OSError as error:
                log.warning("%s runs without its AWS SDK: no %s (%s)", runtime, point, error)
                del usable[runtime]
        return RuntimeSdks(usable)


def layers_bring_modules(runtime: Runtime, opt: Path) -> bool:
    """Whether `opt` has one of the runtime's NODE_PATH directories under /opt. Host links are
    never followed (they name sandbox paths): a link on the way counts as there."""
    for entry in runtime.env.get("NODE_PATH", "").split(":"):
        path = PurePosixPath(entry)
        if not path.is_relative_to(OPT_DIR) or path == PurePosixPath(OPT_DIR):
            continue
        here = opt
        for part in path.relative_to(OPT_DIR).parts:
            here = here / part
            try:
                mode = os.lstat(here).st_mode
            except OSError:
                break
            if stat.S_ISLNK(mode):
                return True
            if not stat.S_ISDIR(mode):
                break
        else:
            return True
    return False


def find_sdks(root: Path | None = None) -> RuntimeSdks:
    """The SDKs installed under `root` (default: $LAMBDAHOST_RUNTIME_SDKS, else DEFAULT_ROOT),
    with a warning for each runtime that runs without one, or with other versions than the
    checkout pins."""
    if root is None:
        root = Path(os.environ.get(SDKS_ENV) or DEFAULT_ROOT)
    found: dict[str, Path] = {}
    for name, runtime in RUNTIMES.items():
        if runtime.sdk is None:
            continue
        installed = root / name
        source = installed / PurePosixPath(runtime.sdk).name
        if not source.is_dir():
            log.warning(
                "%s functions run without the AWS SDK: %s is missing (`make install` "
                "installs it; $%s names another place)",
                name,
                source,
                SDKS_ENV,
            )
            continue
        found[name] = source
        if stale := _stale_pins(PINS / name, installed):
            log.warning(
                "the AWS SDK of %s in %s was not installed from this checkout's %s "
                "(run `make install` to update it)",
                name,
                installed,
                ", ".join(stale),
            )
    return RuntimeSdks(found)


def _stale_pins(pins: Path, installed: Path) -> list[str]:
    """Pin files of `pins` whose copy in `installed` is missing or different."""
    if not pins.is_dir():
        return []  # not running from a checkout: nothing to compare with
    stale = []
    for pin in sorted(p for p in pins.iterdir() if p.is_file()):
        try:
            same = (installed / pin.name).read_bytes() == pin.read_bytes()
        except OSError:
            same = False
        if not same:
            stale.append(str(pin.relative_to(CHECKOUT)))
    return stale

"""The zygote process (SOCK, USENIX ATC'18): a root, single-threaded Python that has imported the
agent, the Python runtimes' modules and common stdlib modules once, and forks a sandbox per
request.

Run by `zygote.ZygoteBackend` as `<python> -I -S - <fd>` with this file on stdin, `<python>`
being `Provisions.python`: Debian's interpreter (the one sandboxes run), isolated from the
host's environment and site-packages.
Stdlib only, and nothing of `lambdahost` is imported: the launcher is loaded by file path, and
the messages' and loaded modules' types (`zygote_protocol`) are for mypy alone.

The link to the server is one SOCK_SEQPACKET Unix socket (fd <fd>); every message is one JSON
object, descriptors ride along as SCM_RIGHTS:

  server → zygote  {"t": "config", ...}                    first, once (see `preload`)
  zygote → server  {"t": "ready", "pid", "preloaded"}      or {"t": "failed", "error"}
  server → zygote  {"t": "spawn", "id"[, "netns"]}\n{request} + [stderr, *pass_fds[, netns]]
  zygote → server  {"t": "spawned", "id", "pid"} + [pidfd] or {"t": "error", "id", "error"}
  zygote → server  {"t": "exit", "pid", "status"}          a sandbox's first process ended

Per spawn the zygote unshares a pid namespace for its next child only, forks (the child is
PID 1 there), and returns at once to its loop; the child enters the sandbox (`launcher`) and
then either execs argv or, when the host says the spec boots the agent it preloaded
(`api.BootAgent`), runs the agent in-process. The zygote reaps those children and reports
their exit status. It exits when the server's end of the socket closes; running sandboxes
do not depend on it.

Every child starts as a copy of the zygote's memory, so the zygote never holds one sandbox's
data (its environment, function name, host paths) when it forks another: a spawn's request
follows its header line undecoded, lands in one fixed buffer, is decoded only by the forked
child (or the shell it is handed to), and is zeroed in the zygote right after.
"""

from __future__ import annotations

import array
import gc
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import traceback
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for mypy only: at run time nothing of lambdahost is imported
    from collections.abc import Sequence

    from lambdahost.sandbox.launcher import SpawnRequest
    from lambdahost.sandbox.zygote_protocol import (
        AgentBoot,
        AgentForkServer,
        ConfigMessage,
        Launcher,
        ServerMessage,
        SpawnHeader,
        ZygoteMessage,
    )

MAX_MESSAGE = 1 << 20
NETNS_SPARES = 4  # network namespaces made while idle, ahead of spawns (unless the server
# sends each spawn's namespace: the function network's, see `SpawnHeader.netns`)
# Shells: children forked ahead (PID 1 of a new pid namespace each), waiting for a spawn
# request, so a spawn skips the fork (~2 ms for the zygote's 24 MB). Made only after the
# zygote has been idle for SHELL_DELAY_MS, so refilling does not compete with a starting
# sandbox for the CPU.
SHELL_SPARES = 2
SHELL_DELAY_MS = 30
MAX_FDS = 64
# Imported once here so no sandbox pays for them. Not `logging`: the python runtime configures
# it the moment user code first imports it (and not asyncio/concurrent, which import it).
STDLIB_PRELOAD = (
    "base64", "collections", "copy", "ctypes", "dataclasses", "datetime", "decimal",
    "encodings.idna",  # socket.create_connection("127.0.0.1") imports it: 1.7 ms
    "errno",
    "fcntl", "functools", "hashlib", "io", "itertools", "json", "math", "random", "re",
    "selectors", "signal", "socket", "string", "struct", "tempfile", "time", "traceback",
    "typing", "urllib.parse", "uuid",
)  # fmt: skip


class SandboxPathLoader(importlib.abc.Loader):
    """Executes a host file's source as if it were at its path inside sandboxes, so that
    `__file__`, code object filenames (tracebacks) and a package's `__path__` are right in
    there, where the host path does not exist."""

    def __init__(self, host_file: str, sandbox_file: str) -> None:
        self.host_file = host_file
        self.sandbox_file = sandbox_file

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        with open(self.host_file, "rb") as f:
            source = f.read()
        exec(compile(source, self.sandbox_file, "exec", dont_inherit=True), module.__dict__)

    def code(self) -> types.CodeType:
        with open(self.host_file, "rb") as f:
            return compile(f.read(), self.sandbox_file, "exec", dont_inherit=True)


class SandboxPathFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.modules: dict[str, tuple[str, str, bool]] = {}  # name → host, sandbox, package?

    def add_module(self, name: str, host_file: str, sandbox_file: str) -> None:
        self.modules[name] = (host_file, sandbox_file, False)

    def add_package(self, name: str, host_dir: str, sandbox_dir: str) -> None:
        for entry in sorted(os.listdir(host_dir)):
            stem, dot, extension = entry.partition(".")
            if not dot or extension != "py":
                continue
            host_file, sandbox_file = f"{host_dir}/{entry}", f"{sandbox_dir}/{entry}"
            if stem == "__init__":
                self.modules[name] = (host_file, sandbox_file, True)
            else:
                self.modules[f"{name}.{stem}"] = (host_file, sandbox_file, False)

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        entry = self.modules.get(fullname)
        if entry is None:
            return None
        host_file, sandbox_file, package = entry
        loader = SandboxPathLoader(host_file, sandbox_file)
        spec = importlib.util.spec_from_loader(fullname, loader, origin=sandbox_file)
        assert spec is not None
        spec.has_location = True  # sets __file__ to the sandbox path
        if package:
            spec.submodule_search_locations = [os.path.dirname(sandbox_file)]
        return spec


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.launcher: Launcher | None = None
        self.seccomp_filter = b""
        self.agent_package = ""
        self.children: dict[int, int] = {}  # pid → spawn id
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self.own_net_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.spare_netns: list[int] = []
        self.netns_spares = NETNS_SPARES
        self.shells: list[tuple[int, socket.socket]] = []  # (pid, our end of its socket)
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # The last message received, in place: `length` bytes, the body from `body_start`.
        self.buffer = bytearray(MAX_MESSAGE)
        self.length = 0
        self.body_start = 0

    # -- messages --------------------------------------------------------------------------
    def send(self, message: ZygoteMessage, fds: Sequence[int] = ()) -> None:
        self.send_to(self.control, message, fds)

    @staticmethod
    def send_to(sock: socket.socket, message: ZygoteMessage, fds: Sequence[int] = ()) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sock.sendmsg([data], ancillary)

    @staticmethod
    def send_raw(sock: socket.socket, data: bytes | memoryview, fds: list[int]) -> None:
        ancillary = []
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sock.sendmsg([data], ancillary)

    def receive(self) -> tuple[ServerMessage | None, list[int]]:
        """The next message's header. A body stays undecoded in `self.buffer` for `request()`
        in the child; `scrub()` zeroes it."""
        length, ancillary, flags, _ = self.control.recvmsg_into(
            [self.buffer], socket.CMSG_SPACE(MAX_FDS * 4)
        )
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                fds.extend(received)
        for fd in fds:
            os.set_inheritable(fd, False)  # never leak one spawn's fds into another's child
        self.length = length
        if not length:
            return None, fds
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            self.scrub()
            raise ValueError("truncated message")
        end = self.buffer.find(b"\n", 0, length)
        if end < 0:
            end = length
        self.body_start = min(end + 1, length)
        header: ServerMessage = json.loads(self.buffer[:end])
        return header, fds

    def request(self) -> SpawnRequest:
        """Decode the body of the last message: only ever called in a forked child."""
        request: SpawnRequest = json.loads(self.buffer[self.body_start : self.length])
        return request

    def scrub(self) -> None:
        """Zero what the last message left in the buffer, before anything forks again."""
        self.buffer[: self.length] = bytes(self.length)
        self.length = self.body_start = 0

    # -- start-up --------------------------------------------------------------------------
    def preload(self, config: ConfigMessage) -> list[str]:
        """Load the launcher, the agent package, the runtime modules and the stdlib list."""
        spec = importlib.util.spec_from_file_location("lambdahost_launcher", config["launcher"])
        assert spec is not None and spec.loader is not None
        launcher = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(launcher)
        self.launcher = launcher
        self.seccomp_filter = bytes.fromhex(config["filter"])
        self.netns_spares = config.get("netns_spares", NETNS_SPARES)
        for name in STDLIB_PRELOAD:
            importlib.import_module(name)
        finder = SandboxPathFinder()
        agent = config.get("agent")
        if agent:
            self.agent_package = os.path.basename(agent["target"])
            finder.add_package(self.agent_package, agent["source"], agent["target"])
        for name, host_file, sandbox_file in config.get("modules", ()):
            finder.add_module(name, host_file, sandbox_file)
        sys.meta_path.insert(0, finder)
        try:
            for name in finder.modules:
                importlib.import_module(name)
        finally:
            sys.meta_path.remove(finder)
        if agent:
            forkserver: AgentForkServer = sys.modules[f"{self.agent_package}.forkserver"]
            for host_file, sandbox_file in config.get("bootstraps", ()):
                forkserver.register(sandbox_file, SandboxPathLoader(host_file, sandbox_file).code())
        if "logging" in sys.modules:
            raise RuntimeError("the zygote must not import logging (the runtime hooks it)")
        return sorted(finder.modules)

    # -- spawning ----------------------------------------------------------------------------
    def spawn(self, header: SpawnHeader, fds: list[int]) -> None:
        """Start the sandbox whose request is in the buffer, then scrub it."""
        try:
            self.start_child(header, fds)
        finally:
            self.scrub()

    def start_child(self, header: SpawnHeader, fds: list[int]) -> None:
        launcher = self.launcher
        assert launcher is not None
        pid = self.hand_to_shell(fds) if fds else 0
        if pid:
            self.spawned(header, pid)
            return
        try:
            if not fds:
                raise ValueError("no stderr descriptor")
            netns = self.sent_netns(header, fds)
            if netns < 0 and self.spare_netns:
                netns = self.spare_netns.pop()
            fds.append(netns)  # closed here below, after the fork
            launcher.unshare(launcher.CLONE_NEWPID)  # for the next child only
            try:
                pid = os.fork()
                if pid == 0:
                    self.child(fds[0], fds[1:-1], netns)  # never returns
            finally:
                launcher.setns(self.own_pid_ns, launcher.CLONE_NEWPID)
        except Exception as error:
            self.send({"t": "error", "id": header.get("id"), "error": str(error)})
            return
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        self.spawned(header, pid)

    @staticmethod
    def sent_netns(header: SpawnHeader, fds: list[int]) -> int:
        """The network namespace sent along with a spawn (removed from `fds`), else -1: then
        a spare, else a namespace the child unshares itself."""
        return fds.pop() if header.get("netns") and len(fds) > 1 else -1

    def spawned(self, header: SpawnHeader, pid: int) -> None:
        launcher = self.launcher
        assert launcher is not None
        self.children[pid] = header["id"]
        pidfd = launcher.pidfd_open(pid)  # the host watches it should we die
        try:
            self.send({"t": "spawned", "id": header["id"], "pid": pid}, [pidfd])
        finally:
            os.close(pidfd)

    def hand_to_shell(self, fds: list[int]) -> int:
        """Pass the message in the buffer and its descriptors to a waiting shell: its pid,
        or 0 if none took it (then the caller forks as without shells)."""
        message = memoryview(self.buffer)[: self.length]
        try:
            while self.shells:
                pid, sock = self.shells.pop(0)
                try:
                    with sock:
                        self.send_raw(sock, message, fds)
                except OSError:
                    continue  # it died while waiting (the zygote reaps it)
                for fd in fds:
                    os.close(fd)
                return pid
            return 0
        finally:
            message.release()

    def make_shell(self) -> None:
        launcher = self.launcher
        assert launcher is not None
        netns = self.spare_netns.pop() if self.spare_netns else -1
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            launcher.unshare(launcher.CLONE_NEWPID)  # for the next child only
            try:
                pid = os.fork()
                if pid == 0:
                    ours.detach()
                    self.shell(theirs, netns)  # never returns
            finally:
                launcher.setns(self.own_pid_ns, launcher.CLONE_NEWPID)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            if netns >= 0:
                os.close(netns)
        self.shells.append((pid, ours))

    def shell(self, sock: socket.socket, netns: int) -> None:
        """In a shell (PID 1 of its pid namespace): keep only our socket and the network
        namespace, wait for a request, then be `child()`. Exits when the zygote does."""
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Nothing of the zygote's may stay open here: its end of the server's socket
            # would hide the zygote's exit from the server.
            self.control.detach()
            for _, other in self.shells:
                other.detach()
            keep = sorted(fd for fd in (sock.fileno(), netns) if fd >= 0)
            low = 3
            for fd in keep:
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 1 << 20)
            self.control = sock  # `child()` detaches it; arrange_fds closes it
            message, fds = self.receive()
        except BaseException:
            os._exit(125)
        if message is None or not fds:
            os._exit(0)  # the zygote is gone
        if message["t"] == "spawn" and (sent := self.sent_netns(message, fds)) >= 0:
            if netns >= 0:
                os.close(netns)
            netns = sent
        self.child(fds[0], fds[1:], netns)

    def child(self, stderr_fd: int, received: list[int], netns: int) -> None:
        """In the forked child, PID 1 of its pid namespace: decode the request, become the
        sandbox, then exec argv or run the preloaded agent. Never returns."""
        status = 125
        launcher = self.launcher
        assert launcher is not None
        error_fd = stderr_fd
        try:
            request = self.request()
            self.scrub()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.control.detach()  # arrange_fds closes it; the object must not close it again
            launcher.enter(request, stderr_fd, received, self.seccomp_filter, netns)
            error_fd = 2
            if not request.get("in_process"):
                launcher.exec_argv(request["argv"], request["env"])
            status = self.run_agent(request)
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 1
        except BaseException as error:
            try:
                message = f"lambdahost: cannot start sandbox: {error}\n"
                if not isinstance(error, OSError):
                    message += traceback.format_exc()
                os.write(error_fd, message.encode(errors="replace"))
            except BaseException:
                pass
        finally:
            os._exit(status)

    def run_agent(self, request: SpawnRequest) -> int:
        """The agent's `boot.main()`, as `api.boot_argv()` would have run it."""
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        boot: AgentBoot = sys.modules[f"{self.agent_package}.boot"]
        forkserver: AgentForkServer = sys.modules[f"{self.agent_package}.forkserver"]
        boot.fork_runtime = forkserver.spawn if request.get("runtime_preloaded") else None
        sys.argv = ["-c"]
        sys.orig_argv = list(request["argv"])
        boot.main()
        return 0

    def make_spares(self) -> None:
        """Called when idle: refill the network namespaces spawns take."""
        launcher = self.launcher
        assert launcher is not None
        while len(self.spare_netns) < self.netns_spares:
            try:
                self.spare_netns.append(launcher.make_network_namespace(self.own_net_ns))
            except OSError:
                return  # children then unshare their own, as without spares

    def make_shells(self) -> None:
        """Called when idle for a while: refill the shells spawns take (and the network
        namespaces they took)."""
        while len(self.shells) < SHELL_SPARES:
            try:
                self.make_shell()
            except OSError:
                return  # spawns then fork, as without shells
            self.make_spares()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.children.pop(pid, None) is not None:
                code = os.waitstatus_to_exitcode(status)
                self.send({"t": "exit", "pid": pid, "status": code})

    # -- loop --------------------------------------------------------------------------------
    def serve(self) -> None:
        config, _ = self.receive()
        if config is None or config["t"] != "config":
            return
        try:
            preloaded = self.preload(config)
        except Exception:
            self.send({"t": "failed", "error": traceback.format_exc()})
            return
        # Everything imported so far lives as long as the zygote: keep the collector from
        # walking (and so copying, page by page) it in every forked sandbox.
        gc.collect()
        gc.freeze()
        self.send({"t": "ready", "pid": os.getpid(), "preloaded": preloaded})
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        poller.register(self.wake_read, select.POLLIN)
        while True:
            events = poller.poll(0)  # handle what is waiting before refilling
            if not events:
                self.make_spares()
                events = poller.poll(SHELL_DELAY_MS if len(self.shells) < SHELL_SPARES else None)
                if not events:
                    self.make_shells()
                    continue
            for fd, _ in events:
                if fd == self.wake_read:
                    try:
                        os.read(self.wake_read, 512)
                    except BlockingIOError:
                        pass
                    self.reap()
                    continue
                message, fds = self.receive()
                if message is None:
                    return  # the server is gone
                if message["t"] == "spawn":
                    self.spawn(message, fds)
                else:
                    self.scrub()
                    for received in fds:
                        os.close(received)
            self.reap()  # cheap, and a SIGCHLD may have raced the poll


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(control.fileno(), False)
    try:
        Zygote(control).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass


if __name__ == "__main__":
    main()

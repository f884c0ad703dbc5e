"""Local child processes (MLflow, SuperLink, SuperNodes, uvicorn) that never outlive us.

Every child starts in its own process group, so stopping it also stops what it spawned
(Flower's SuperExec, ServerApp and ClientApp processes). A `ProcessGroup` stops its
children in reverse start order on exit, on an exception, on Ctrl-C and on SIGTERM,
and reaps them so that no zombie is left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType


class ProcessError(RuntimeError):
    pass


# How long a SIGKILLed process may take to be gone and reaped.
KILLED_EXIT_S = 5.0


class Child:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the child and everything it spawned, SIGKILL what is left, reap."""
        self.finish(self.terminate(), time.monotonic() + grace)

    def terminate(self) -> set[int]:
        """SIGTERM the child and its descendants; returns the descendants signalled."""
        return self.signal(signal.SIGTERM)

    def signal(self, sig: signal.Signals) -> set[int]:
        """Send `sig` to the child and its descendants; returns the descendants signalled.

        Flower detaches some of its processes into new sessions (SuperExec), so the
        process group is not enough: descendants are found through /proc.
        """
        tree = descendants(self.popen.pid)
        _signal_all(self.popen.pid, tree, sig)
        return tree

    def finish(self, tree: set[int], deadline: float) -> None:
        """After `terminate`: wait until `deadline`, SIGKILL what is left, reap."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        tree |= descendants(self.popen.pid)
        while (alive := {pid for pid in tree if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.05)
            _reap(tree)
        _signal_all(self.popen.pid, alive, signal.SIGKILL)
        self.popen.wait(timeout=KILLED_EXIT_S)
        # Dead descendants are re-parented to us (subreaper) as their own parents exit:
        # reap until none is left in the process table, so no zombie outlives the stop.
        reaped_by = time.monotonic() + KILLED_EXIT_S
        while any(Path(f"/proc/{pid}").exists() for pid in tree) and time.monotonic() < reaped_by:
            _reap(tree)
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def descendants(pid: int) -> set[int]:
    """All living descendants of `pid`, whatever session or group they moved to."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _signal_all(leader: int, pids: set[int], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def set_subreaper(on: bool) -> bool:
    """Adopt orphaned descendants (Linux) while `on`, so that we can reap them: no zombies.
    Returns whether this process was a subreaper before."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        was = ctypes.c_int(0)
        prctl(37, ctypes.byref(was), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
        prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        return bool(was.value)
    except (OSError, AttributeError):
        return False


def _reap(pids: set[int]) -> None:
    """Reap those of `pids` that were orphaned to us (as subreaper) and have exited.

    Only pids from the stopped tree: other children of ours belong to their Popen objects.
    """
    me = os.getpid()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


class ProcessGroup:
    """Start children; stop them all, whatever way the block is left."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        self._previous_sigterm: Callable[[int, FrameType | None], object] | int | None = None
        self._was_subreaper = False

    def __enter__(self) -> ProcessGroup:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._was_subreaper = set_subreaper(True)
        if threading_is_main():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
        # Left as found: orphans of whatever this process runs later (a test suite's other
        # tests, a CLI's next step) go to init again, which reaps them.
        set_subreaper(self._was_subreaper)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def stop_all(self, grace: float = 5.0) -> None:
        """Stop every child at once, newest first: one grace period for all of them, so
        a Ctrl-C costs the same with 3 sites or 12 (one after the other, each slow child
        added its own grace, and a loaded machine took over a minute)."""
        children, self.children = self.children[::-1], []
        trees = [child.terminate() for child in children]
        deadline = time.monotonic() + grace
        for child, tree in zip(children, trees, strict=True):
            child.finish(tree, deadline)

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise ProcessError(
                    f"{child.name} exited with code {child.popen.returncode}; "
                    f"last lines of {child.log_path}:\n{child.log_tail()}"
                )


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, *, timeout: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise ProcessError(f"{child.name} exited before listening on {port}:\n{child.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ProcessError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def wait_for_http(url: str, *, timeout: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise ProcessError(f"{child.name} exited before {url} answered:\n{child.log_tail()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise ProcessError(f"{url} did not answer 200 within {timeout:.0f} s")


def venv_bin(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def require_loopback(host: str) -> None:
    """The embedded MLflow has no authentication: it may listen on this machine only."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"--host {host}: the embedded MLflow is unauthenticated, so it listens on loopback only "
            "(127.0.0.1, ::1, localhost); the Helm chart runs a shared MLflow with authentication"
        )


def mlflow_server_argv(state_dir: Path, host: str, port: int, allowed_hosts: str | None = None) -> list[str]:
    """The embedded, unauthenticated MLflow server: loopback addresses only."""
    require_loopback(host)
    state_dir = state_dir.resolve()
    argv = [
        venv_bin("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{state_dir / 'mlflow.db'}",
        "--artifacts-destination",
        str(state_dir / "artifacts"),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    return argv


MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextlib.contextmanager
def mlflow_server(state_dir: Path, port: int, *, host: str = "127.0.0.1") -> Iterator[str]:
    """A real `mlflow server` (sqlite + local artifacts) for the duration of the block."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with ProcessGroup(state_dir / "logs") as group:
        child = group.start("mlflow", mlflow_server_argv(state_dir, host, port), env=MLFLOW_SERVER_ENV)
        uri = f"http://{host}:{port}"
        wait_for_http(f"{uri}/health", timeout=90, child=child)
        yield uri

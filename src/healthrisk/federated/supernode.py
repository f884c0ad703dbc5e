"""`healthrisk-supernode`: Flower's SuperNode with the waits taken out of a round.

It takes `flower-supernode`'s arguments (TLS, SuperNode authentication, `--node-config`,
health server...) and speaks the same Fleet protocol to the SuperLink. What a stock
SuperNode does per message, and what this one does instead:

* Stock: the SuperExec polls for the task (up to 1 s), starts a fresh `flwr-clientapp`
  process, which imports Flower, numpy and pyarrow (about 1 CPU-second) and loads the
  site's rows, every message. Here a resident worker thread runs the ClientApp: Flower's
  `--isolation process` mode, where the SuperNode leaves the running of tasks to an
  outside executor, and this is that executor. It talks to the SuperNode through
  Flower's Runtime API exactly like `flwr-clientapp` (token-scoped task input, reply,
  context, heartbeats), so the app, its mods and Flower's state handling are Flower's;
  it is woken the moment the SuperNode has stored a message.
* Stock: the SuperNode sleeps a fixed 3 s whenever the SuperLink had no message for it,
  and polls every 0.5 s for the reply. Here the idle wait backs off from 50 ms to 1 s
  and starts over with every message (`FleetPolling`); the reply is polled every 10 ms.

The hooks are three names in Flower 1.42's SuperNode (`HOOKS`); tests/unit/
test_flower_contract.py fails if a Flower upgrade moves or changes one of them.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import ERROR, INFO, WARNING
from pathlib import Path
from types import ModuleType
from typing import Any

from flwr.supercore import log

# By module path: the packages re-export functions under these same names.
supernode_cli = importlib.import_module("flwr.supernode.cli.flower_supernode")
supernode_loop = importlib.import_module("flwr.supernode.start_client_internal")

# Where Flower 1.42 is hooked: (module, name). The contract test checks each.
HOOKS = (
    (supernode_cli, "start_client_internal"),  # called once, with the Runtime API address
    (supernode_loop, "_pull_and_store_message"),  # returns a run id when a message arrived
    (supernode_loop, "time"),  # the loop's only use of it: time.sleep(3) idle, (0.5) local
)
ISOLATION = "process"  # the SuperNode runs no tasks itself: the resident worker does


class FleetPolling:
    """Stands in for `time` in Flower's SuperNode loop, which only sleeps with it.

    A wait of a second or more is the idle wait between two polls of the SuperLink
    (3 s in Flower 1.42): it backs off from `fastest` to `slowest` by `growth` and starts
    over at `fastest` when a message arrives, since the next one follows within about a
    round. Idle, a site costs the SuperLink one poll a second. Shorter waits are local
    (the reply of the ClientApp, a message's content in the node's own state): 10 ms.
    """

    def __init__(
        self, fastest: float = 0.05, slowest: float = 1.0, growth: float = 1.25, local: float = 0.01
    ) -> None:
        self.fastest, self.slowest, self.growth, self.local = fastest, slowest, growth, local
        self.interval = slowest  # nothing to expect before the first message

    def sleep(self, seconds: float) -> None:
        if seconds >= 1.0:
            time.sleep(self.interval)
            self.interval = min(self.slowest, self.interval * self.growth)
        else:
            time.sleep(min(seconds, self.local))

    def message_arrived(self) -> None:
        self.interval = self.fastest

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@dataclass(frozen=True)
class RuntimeEndpoint:
    """Where the resident worker reaches this SuperNode's Runtime API."""

    address: str
    root_certificates: bytes | None  # None: plain HTTP on loopback (no --ssl-certfile)


class ResidentClientApp:
    """Runs this site's ClientApp tasks one after another in one thread.

    One task is what one `flwr-clientapp` process does (run_clientapp.py): pull the
    task input with the task's token, install the FAB and load its ClientApp (once per
    FAB here), call it, push the reply or an error reply, push the context and the
    task's status, with heartbeats meanwhile.
    """

    def __init__(self, endpoint: RuntimeEndpoint) -> None:
        self.endpoint = endpoint
        self._wake = threading.Event()
        self._apps: dict[str, Any] = {}  # FAB hash → ClientApp
        self._thread = threading.Thread(target=self._serve, name="healthrisk-clientapp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _client(self, token: str | None, *, retry: bool = True) -> Any:
        """A Runtime API client as `flwr-clientapp` makes it. Its retry policy answers a 401
        (a task token no longer valid) with SIGINT to the whole process: right for a
        process per task, fatal here (the process is the SuperNode), so the heartbeat's
        client has none (`retry=False`)."""
        from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        return RuntimeHttpClient.from_server_address(
            server_address=self.endpoint.address,
            insecure=self.endpoint.root_certificates is None,
            root_certificates=self.endpoint.root_certificates,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker() if retry else None,
        )

    def _serve(self) -> None:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        acquirer = self._client(None)
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
        while True:
            # Woken by each stored message; the timeout only guards against a missed wake.
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                while (acquired := acquirer.AcquireTask(request)).HasField("task") and acquired.token:
                    self.run_task(acquired.token)
            except Exception as exc:  # the SuperNode restarting, or going away: try again
                log(WARNING, "healthrisk: could not acquire a ClientApp task: %s", exc)
                time.sleep(1.0)

    def run_task(self, token: str) -> None:
        from flwr.app import Error, Message
        from flwr.clientapp.client_app import LoadClientAppError
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

        started = time.monotonic()
        client = self._client(token)
        beating = self._client(token, retry=False)
        heartbeat = HeartbeatSender(_heartbeat(beating))
        heartbeat.start()
        message = reply = context = None
        sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
        try:
            message, context, run, fab = pull_task_input(client)
            reply = self._app(run, fab)(message=message, context=context)
            sub_status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # what flwr-clientapp replies: an error naming the exception
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reason = f"{type(exc)}:<'{exc}'>"
            if isinstance(exc, LoadClientAppError):
                code, reason = (
                    ErrorCode.LOAD_CLIENT_APP_EXCEPTION,
                    "An exception was raised when loading the ClientApp",
                )
            log(ERROR, "ClientApp raised an exception", exc_info=exc)
            details = reason
            if message is not None:
                reply = Message(Error(code=code, reason=reason), reply_to=message)
        finally:
            # Stopped (and its last beat answered) before the task's output revokes the
            # token: a beat after that would be refused.
            if heartbeat.is_running:
                heartbeat.stop()
            beating.close()
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client=client, context=context, sub_status=sub_status, details=details)
            finally:
                client.close()
        kind = message.metadata.message_type if message is not None else "?"
        log(
            INFO,
            "healthrisk: %s task %s in %.3f s (resident ClientApp)",
            kind,
            sub_status,
            time.monotonic() - started,
        )

    def _app(self, run: Any, fab: Any) -> Any:
        if fab.hash_str not in self._apps:
            from flwr.cli.install import install_from_fab
            from flwr.clientapp.utils import get_load_client_app_fn

            install_from_fab(fab.content, skip_prompt=True)
            load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
            self._apps[fab.hash_str] = load(run.fab_id, run.fab_version, fab.hash_str)
        return self._apps[fab.hash_str]


def _heartbeat(client: Any) -> Callable[[], bool]:
    """Flower's task heartbeat, minus its answer to a stopped task (SIGINT to the whole
    process, which here is the SuperNode): the task runs to its end, its reply is dropped."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def beat() -> bool:
        try:
            answer = client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT):
                return False
            status = exc.response.status_code
            log(WARNING, "healthrisk: the SuperNode refused this task's heartbeat (%s)", status)
            return True
        if not answer.success:
            log(WARNING, "healthrisk: the SuperNode no longer expects this task (run stopped?)")
        return True

    return beat


def install(polling: FleetPolling) -> None:
    """Hook the resident worker and `polling` into Flower's SuperNode (this process only)."""
    start_client_internal: Callable[..., None] = supernode_cli.start_client_internal
    pull_and_store: Callable[..., int | None] = supernode_loop._pull_and_store_message
    workers: list[ResidentClientApp] = []

    @functools.wraps(pull_and_store)
    def pull_and_notify(*args: Any, **kwargs: Any) -> int | None:
        run_id = pull_and_store(*args, **kwargs)
        if run_id is not None:  # a message (and its task) is in the node's state
            polling.message_arrived()
            for worker in workers:
                worker.wake()
        return run_id

    @functools.wraps(start_client_internal)
    def start_with_worker(**kwargs: Any) -> None:
        from flwr.supercore.address import resolve_bind_address

        if kwargs["isolation"] != ISOLATION:
            raise SystemExit(f"healthrisk-supernode runs its ClientApp itself (--isolation {ISOLATION})")
        certificates = kwargs["runtime_root_certificates_path"]
        worker = ResidentClientApp(
            RuntimeEndpoint(
                resolve_bind_address(kwargs["runtime_api_address"]),
                Path(certificates).read_bytes() if kwargs["runtime_certificates"] is not None else None,
            )
        )
        worker.start()
        workers.append(worker)
        start_client_internal(**kwargs)

    _set(supernode_loop, "time", polling)
    _set(supernode_loop, "_pull_and_store_message", pull_and_notify)
    _set(supernode_cli, "start_client_internal", start_with_worker)


def _set(module: ModuleType, name: str, value: object) -> None:
    if not hasattr(module, name):
        raise RuntimeError(f"{module.__name__}.{name} is gone: this Flower is not the one healthrisk hooks")
    setattr(module, name, value)


def main() -> None:
    """`flower-supernode ARGS` with the fast path; `--isolation` is this command's to set."""
    argv = sys.argv[1:]
    if any(arg == "--isolation" or arg.startswith("--isolation=") for arg in argv):
        sys.exit(
            f"healthrisk-supernode: --isolation is always {ISOLATION} (the ClientApp runs in this process)"
        )
    install(FleetPolling())
    sys.argv = ["flower-supernode", *argv, "--isolation", ISOLATION]
    supernode_cli.flower_supernode()


if __name__ == "__main__":
    main()

"""What `healthrisk-supernode` relies on in Flower's SuperNode, checked against the
installed Flower: an upgrade that moves or changes one of these fails here, not in a
federated run. And the idle wait it puts in place of Flower's 3 s sleep."""

from __future__ import annotations

import http.server
import inspect
import re
import signal
import subprocess
import threading
import time

import pytest
from flwr.supernode.runtime import run_clientapp

from healthrisk.federated import supernode
from healthrisk.federated.runner import venv_bin


@pytest.mark.parametrize(("module", "name"), supernode.HOOKS, ids=lambda h: getattr(h, "__name__", h))
def test_every_hook_is_where_it_is_replaced(module: object, name: str) -> None:
    assert hasattr(module, name), f"{module}.{name} is gone"


def test_the_supernode_cli_hands_the_runtime_api_to_start_client_internal() -> None:
    started = inspect.signature(supernode.supernode_loop.start_client_internal).parameters
    for used in (
        "isolation",
        "runtime_api_address",
        "runtime_certificates",
        "runtime_root_certificates_path",
    ):
        assert used in started
    cli = inspect.getsource(supernode.supernode_cli.flower_supernode)
    assert "start_client_internal(" in cli  # looked up in the module at call time: the hook takes effect
    assert "import start_client_internal" not in cli


def test_the_loop_uses_time_only_to_sleep_idle_for_a_second_or_more_and_locally_for_less() -> None:
    source = inspect.getsource(supernode.supernode_loop)
    assert set(re.findall(r"\btime\.(\w+)", source)) == {"sleep"}
    waits = [float(s) for s in re.findall(r"\btime\.sleep\(([\d.]+)\)", source)]
    assert any(w >= 1.0 for w in waits), "no idle wait left to shorten"
    assert inspect.signature(supernode.supernode_loop._pull_and_store_message).return_annotation in (
        "int | None",
        int | None,
    )


def test_the_clientapp_task_steps_are_the_ones_the_resident_worker_calls() -> None:
    for name, parameters in {
        "pull_task_input": ["client"],
        "push_message": ["client", "message", "context"],
        "push_task_output": ["client", "context", "sub_status", "details"],
    }.items():
        assert (
            list(inspect.signature(getattr(run_clientapp, name)).parameters)[: len(parameters)] == parameters
        )


def test_the_supernode_accepts_the_isolation_mode_the_worker_serves() -> None:
    usage = subprocess.run(
        [venv_bin("flower-supernode"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert supernode.ISOLATION in re.search(r"--isolation \{([^}]*)\}", usage).group(1).split(",")  # type: ignore[union-attr]


def test_healthrisk_supernode_refuses_another_isolation_mode() -> None:
    done = subprocess.run(
        [venv_bin("healthrisk-supernode"), "--insecure", "--isolation", "subprocess"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "--isolation is always process" in done.stderr


def test_the_idle_wait_backs_off_and_starts_over_when_a_message_arrives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    polling = supernode.FleetPolling(fastest=0.05, slowest=1.0, growth=2.0, local=0.01)
    polling.sleep(3)  # before any message: the slowest poll
    polling.message_arrived()
    for _ in range(6):
        polling.sleep(3)
    polling.sleep(0.5)  # a local wait (the ClientApp's reply): short, not the idle one
    assert slept == [1.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 0.01]
    assert polling.monotonic() > 0  # everything else is time's


def test_a_refused_heartbeat_does_not_stop_the_supernode() -> None:
    """A task finished in milliseconds can see its first heartbeat arrive after its token
    is revoked: the SuperNode's Runtime API answers 401. Flower's retry policy answers that
    with SIGINT to the whole process (in `flwr-clientapp`, the task's own process); the
    resident worker's process is the SuperNode, so its heartbeat must only log it.
    A real HTTP server stands in for the Runtime API's refusal."""
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b'{"code": 1008, "message": "Runtime task-token authentication failed."}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = supernode.RuntimeEndpoint(f"127.0.0.1:{server.server_port}", None)
        worker = supernode.ResidentClientApp(endpoint)
        beat = supernode._heartbeat(worker._client("revoked", retry=False))
        assert beat() is True  # answered, nothing to retry
        time.sleep(0.2)  # a SIGINT raised by the client would have arrived by now
    finally:
        signal.signal(signal.SIGINT, previous)
        server.shutdown()
    assert interrupted == []

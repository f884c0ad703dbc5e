"""Bring MLflow's basic-auth users and grants to what the chart declares; idempotent.

Runs beside the MLflow server (a second container of its pod) each time the pod starts:
it waits for the server, creates the experiments and registered models the platform
uses (grants need them to exist), creates each component's user or resets its password
to the one in its Secret, and converges that user's grants to exactly the declared ones
(missing grants added, changed ones replaced, others revoked). Then it marks itself ready
(the pod's readiness waits for it) and sleeps until the pod stops.

Standard library only: it runs in the MLflow image, whose `mlflow.server.auth.client`
would need Flask-WTF on the client side too. Never prints a response body of the user
routes: a duplicate `users/create` echoes the password hash in its error message.

    python3 mlflow_auth_bootstrap.py --grants grants.json --credentials DIR [--ready-file F --stay]

Environment: MLFLOW_TRACKING_URI (the server), MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD (its admin). DIR holds one directory per user with files
`username` and `password` (the Secret mounts). grants.json:
    {"experiments": [NAME, ...], "registered_models": [NAME, ...],
     "users": {USER: [{"resource_type": "experiment" | "registered_model",
                       "resource": NAME, "permission": "READ" | "EDIT" | "MANAGE"}, ...]}}
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


class Server:
    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, {}

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
        """The answer, or exit with the status and error code (never the message: see above)."""
        status, answer = self.call(method, path, body, query or None)
        if status != 200 and answer.get("error_code") != ALREADY_EXISTS:
            sys.exit(f"{method} {path}: HTTP {status} {answer.get('error_code', '')}")
        return answer

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"MLflow at {self.base} did not answer /health within {timeout:.0f} s")
            time.sleep(2)


def experiment_ids(server: Server, names: list[str]) -> dict[str, str]:
    ids = {}
    for name in names:
        server.ok("POST", "/api/2.0/mlflow/experiments/create", {"name": name})
        found = server.ok("GET", "/api/2.0/mlflow/experiments/get-by-name", experiment_name=name)
        ids[name] = str(found["experiment"]["experiment_id"])
    return ids


def ensure_user(server: Server, username: str, password: str) -> None:
    credentials = {"username": username, "password": password}
    status, answer = server.call("POST", "/api/2.0/mlflow/users/create", credentials)
    if status == 200:
        return
    if answer.get("error_code") != ALREADY_EXISTS:
        sys.exit(f"create user {username}: HTTP {status} {answer.get('error_code', '')}")
    # The Secret is the source of truth: a regenerated or rotated password takes effect.
    status, answer = server.call("PATCH", "/api/2.0/mlflow/users/update-password", credentials)
    if status != 200:
        sys.exit(f"set the password of {username}: HTTP {status} {answer.get('error_code', '')}")


def converge_grants(server: Server, username: str, wanted: dict[tuple[str, str], str]) -> None:
    """Exactly `wanted` ((resource_type, resource_id) -> permission) on the user's own grants."""
    rows = server.ok("GET", "/api/3.0/mlflow/users/permissions/list", username=username)["permissions"]
    have = {
        (row["resource_type"], row["resource_pattern"]): row["permission"]
        for row in rows
        if row["role_name"].startswith("__user_")  # the user's own grants, not a role's
    }
    for key, permission in have.items():
        if wanted.get(key) != permission:
            resource_type, resource_id = key
            server.ok(
                "POST",
                "/api/3.0/mlflow/users/permissions/revoke",
                {"username": username, "resource_type": resource_type, "resource_id": resource_id},
            )
    for (resource_type, resource_id), permission in wanted.items():
        if have.get((resource_type, resource_id)) != permission:
            server.ok(
                "POST",
                "/api/3.0/mlflow/users/permissions/grant",
                {
                    "username": username,
                    "resource_type": resource_type,
                    "resource_id": resource_id,
                    "permission": permission,
                },
            )


def bootstrap(server: Server, grants: dict[str, Any], credentials: Path) -> list[str]:
    ids = experiment_ids(server, list(grants["experiments"]))
    for name in grants["registered_models"]:
        server.ok("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
    done = []
    for user, entries in sorted(grants["users"].items()):
        directory = credentials / user
        username = (directory / "username").read_text().strip()
        ensure_user(server, username, (directory / "password").read_text().strip())
        wanted = {}
        for entry in entries:
            resource_type, resource = entry["resource_type"], entry["resource"]
            resource_id = ids[resource] if resource_type == "experiment" else resource
            wanted[(resource_type, resource_id)] = entry["permission"]
        converge_grants(server, username, wanted)
        granted = ", ".join(f"{entry['permission']} {entry['resource']}" for entry in entries)
        done.append(f"{username} ({granted})")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=Path, required=True)
    parser.add_argument("--credentials", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, help="created once users and grants are in place")
    parser.add_argument("--stay", action="store_true", help="then sleep until SIGTERM (a pod's container)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server")
    args = parser.parse_args()
    server = Server(*(os.environ[f"MLFLOW_TRACKING_{name}"] for name in ("URI", "USERNAME", "PASSWORD")))
    server.wait_healthy(args.timeout)
    done = bootstrap(server, json.loads(args.grants.read_text()), args.credentials)
    print("MLflow users and grants in place: " + "; ".join(done), flush=True)
    if args.ready_file is not None:
        args.ready_file.parent.mkdir(parents=True, exist_ok=True)
        args.ready_file.touch()
    if args.stay:
        # PID 1 gets no default SIGTERM action: exit on it, or the pod waits out its grace period.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()


if __name__ == "__main__":
    main()

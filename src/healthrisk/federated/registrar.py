"""The registrar beside a run's SuperLink: it registers the sites' public keys and says
which sites are in.

It runs in the SuperLink's pod and reaches the Control API on loopback, so the API never
needs to be exposed for it and the operator never reads a key Secret: the pod mounts each
site's `public-key` by reference, one file per site named after the site. Every few
seconds it registers what the SuperLink lacks (list-then-register: a SuperLink that
restarted and lost its memory gets the keys again), prints the sites' standing as one
JSON line when it changes (the operator reads the last one from the pod's log), and
keeps a `ready` file while every readable key is registered: the pod's readiness, after
which the operator starts the SuperNodes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from healthrisk.federated.control import ControlClient, SuperLinkAddress, register_sites
from healthrisk.federated.pki import pem_public_key

READY_FILE = "ready"


def read_keys(keys_dir: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """(site → OpenSSH public key, site → why it has none usable)."""
    keys: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    for path in sorted(keys_dir.iterdir()):
        if path.name.startswith("."):  # the kubelet's own bookkeeping in projected volumes
            continue
        try:
            key = path.read_bytes()
            pem_public_key(key)
        except (OSError, ValueError) as exc:
            errors[path.name] = str(exc)
            continue
        keys[path.name] = key
    return keys, errors


def standing(
    control: ControlClient, keys: dict[str, bytes], errors: dict[str, str], sites: list[str]
) -> dict[str, Any]:
    """Each site's key and node at the SuperLink, as status.sites shows it (CRD schema)."""
    nodes = register_sites(control, keys)
    view: dict[str, Any] = {}
    for site in sites:
        if site in errors:
            view[site] = {"keyRegistered": False, "keyError": errors[site]}
        elif site not in keys:
            view[site] = {"keyRegistered": False, "keyError": "no public key mounted"}
        elif site in nodes:
            view[site] = {"keyRegistered": True, "node": nodes[site].status}
        else:
            view[site] = {"keyRegistered": False}
    return view


def run(
    superlink: SuperLinkAddress,
    keys_dir: Path,
    work_dir: Path,
    sites: list[str],
    *,
    interval: float = 2.0,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    ready = work_dir / READY_FILE
    last: dict[str, Any] | None = None
    with ControlClient(superlink, timeout=10) as control:
        while keep_going():
            keys, errors = read_keys(keys_dir)
            view: dict[str, Any]
            try:
                view = {"sites": standing(control, keys, errors, sites)}
            except Exception as exc:  # the SuperLink starting or restarting: not ready, retry
                view = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            done = "sites" in view and all(v["keyRegistered"] for s, v in view["sites"].items() if s in keys)
            if done:
                ready.touch()
            else:
                ready.unlink(missing_ok=True)
            if view != last:
                sys.stdout.write(json.dumps(view, sort_keys=True) + "\n")
                sys.stdout.flush()
                last = view
            time.sleep(interval)

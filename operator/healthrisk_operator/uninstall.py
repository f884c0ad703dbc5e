"""What `helm uninstall` runs first (the chart's pre-delete hook): delete the
FederatedTrainings of the namespaces this operator serves, so that no run outlives the
platform that drives it.

Nothing holds a training back (they carry no finalizer): foreground deletion has the
garbage collector delete its pods and Services (owner references) before the object
itself goes, so waiting for the objects waits for their pods too. The registry keeps
every model (the MLflow volume is kept), and the CRD stays (`crds.keep`).

    python -m healthrisk_operator.uninstall --namespace NS [--namespace NS2] [--timeout 120]
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from typing import Any

from healthrisk_operator.constants import GROUP, PLURAL, VERSION

log = logging.getLogger("healthrisk_operator.uninstall")


def _trainings(custom: Any, namespaces: Sequence[str]) -> list[tuple[str, str]]:
    if namespaces:
        found = [
            item
            for namespace in namespaces
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        ]
    else:
        found = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    return [(item["metadata"]["namespace"], item["metadata"]["name"]) for item in found]


def delete_trainings(custom: Any, namespaces: Sequence[str], timeout_s: float) -> list[tuple[str, str]]:
    """Delete every training in `namespaces` (all namespaces: empty) and wait for them and
    their pods to go; returns those still there after `timeout_s`."""
    from kubernetes.client import V1DeleteOptions
    from kubernetes.client.exceptions import ApiException

    for namespace, name in _trainings(custom, namespaces):
        try:
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body=V1DeleteOptions(propagation_policy="Foreground")
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("deleting FederatedTraining %s/%s and its pods", namespace, name)
    deadline = time.monotonic() + timeout_s
    while (left := _trainings(custom, namespaces)) and time.monotonic() < deadline:
        time.sleep(2)
    return left


def main(argv: Sequence[str] | None = None) -> int:
    from kubernetes import client, config

    parser = argparse.ArgumentParser(prog="python -m healthrisk_operator.uninstall", description=__doc__)
    parser.add_argument("--namespace", action="append", default=[], help="repeatable; none: every namespace")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for them to go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    left = delete_trainings(client.CustomObjectsApi(), args.namespace, args.timeout)
    if left:
        # Deleted all the same: the garbage collector finishes on its own, nothing blocks it.
        log.warning("still going after %.0fs: %s", args.timeout, ", ".join(f"{ns}/{n}" for ns, n in left))
    else:
        log.info("no FederatedTraining left in %s", ", ".join(args.namespace) or "any namespace")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

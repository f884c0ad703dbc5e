"""Operator reaction time: `kubectl apply` of N FederatedTrainings at once → all run pods.

Against the real cluster (the harness's .cluster/kubeconfig or KUBECONFIG): applies the
CRD, starts `healthrisk operator run` for a fresh namespace, creates N objects (two sites
each) concurrently, and times, per object, from its create call returning to the moment
a pod watch has seen its SuperLink pod, both SuperNode pods and the Service ADDED. The
run pods are given a scheduler name no scheduler serves: the figure is the operator's
(watch → reconcile → create), not image pulls. The last line is

    operator: apply_to_pods_p95_s=<s> objects=<N> errors=<n>

    .venv/bin/python benchmarks/operator.py [--objects 20] [--timeout 180]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.operator.kube import FAKE_SCHEDULER, Kube, running_operator  # noqa: E402

SITES = ("hospital_01", "hospital_02")


def spec() -> dict[str, object]:
    return {
        "rounds": 2,
        "sites": [
            {"name": s, "data": {"persistentVolumeClaim": f"{s.replace('_', '-')}-data"}} for s in SITES
        ],
        "dataWindow": {"from": "2024-01-01", "to": "2024-01-10"},
    }


def expected(name: str) -> set[str]:
    return {
        f"Pod/{name}-r1-superlink",
        f"Service/{name}-r1-superlink",
        *(f"Pod/{name}-r1-supernode-{s.replace('_', '-')}" for s in SITES),
    }


class Seen:
    """First time each child object was seen ADDED, from watches started before the apply."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.first: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch, args=("Pod", kube.core.list_namespaced_pod), daemon=True),
            threading.Thread(
                target=self._watch, args=("Service", kube.core.list_namespaced_service), daemon=True
            ),
        ]
        for thread in self.threads:
            thread.start()

    def _watch(self, kind: str, lister: object) -> None:
        while not self.stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(lister, self.namespace, timeout_seconds=5):
                if event["type"] == "ADDED":
                    with self.lock:
                        self.first.setdefault(f"{kind}/{event['object'].metadata.name}", time.monotonic())
                if self.stop.is_set():
                    stream.stop()
                    break

    def all_seen(self, names: set[str]) -> float | None:
        with self.lock:
            return max(self.first[n] for n in names) if names <= self.first.keys() else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()

    kube = Kube()
    kube.apply_crd()
    namespace = kube.create_namespace("ft-bench")
    env = {
        # No MLflow is needed to create run pods; a closed loopback port fails fast.
        "HEALTHRISK_OPERATOR_TRACKING_URI": "http://127.0.0.1:9",
        "HEALTHRISK_OPERATOR_POD_SCHEDULER_NAME": FAKE_SCHEDULER,
    }
    log = Path(tempfile.mkdtemp(prefix="operator-bench-")) / "operator.log"
    errors = 0
    try:
        with running_operator(kube, namespace, log, env):
            seen = Seen(kube, namespace)
            time.sleep(1.0)  # the watches are open before the first object exists
            names = [f"bench-{i:02d}" for i in range(args.objects)]
            applied: dict[str, float] = {}

            def create(name: str) -> None:
                kube.create_training(namespace, name, spec())
                applied[name] = time.monotonic()

            with ThreadPoolExecutor(max_workers=args.objects) as pool:
                failures = [f for f in [pool.submit(create, n) for n in names] if f.exception() is not None]
            errors += len(failures)
            for failure in failures:
                print(f"create failed: {failure.exception()}")

            deadline = time.monotonic() + args.timeout
            latencies: dict[str, float] = {}
            while time.monotonic() < deadline and len(latencies) < len(applied):
                for name, t0 in applied.items():
                    if name not in latencies and (done := seen.all_seen(expected(name))) is not None:
                        latencies[name] = max(0.0, done - t0)
                time.sleep(0.2)
            seen.stop.set()
            missing = sorted(set(applied) - set(latencies))
            errors += len(missing)
            if missing:
                print(f"no run pods within {args.timeout:.0f}s for: {', '.join(missing)}")
            values = sorted(latencies.values())
            if values:
                p95 = values[min(len(values) - 1, max(0, round(0.95 * len(values)) - 1))]
                print(
                    f"apply→pods over {len(values)} objects: min {values[0]:.2f}s  "
                    f"median {statistics.median(values):.2f}s  max {values[-1]:.2f}s"
                )
            else:
                p95 = float("nan")
            print(f"operator log: {log}")
    finally:
        kube.delete_namespace(namespace)
    print(f"operator: apply_to_pods_p95_s={p95:.2f} objects={args.objects} errors={errors}")


if __name__ == "__main__":
    main()

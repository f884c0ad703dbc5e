"""A site's SuperNode lost mid-run (SPEC §10): how long the run waits for it, and the
rounds after.

For each case (how the SuperNode dies × which SuperNode runs the sites) a real embedded
run (SuperLink and 3 SuperNodes over TLS with SuperNode authentication, a real MLflow
server, minSites 2) kills one site's SuperNode once round 1 is logged and restarts it
with the same key, as Kubernetes does with the operator's recreated pod. SIGTERM is how
Kubernetes deletes a pod (the SuperNode says goodbye); SIGKILL is a crash (the SuperLink
notices two missed heartbeats later, up to 60 s).

    .venv/bin/python benchmarks/site_loss.py [--rounds 5] [--signals SIGKILL,SIGTERM]
        [--supernodes resident,stock]

Per case: the round the site was lost in, seconds from the kill to the end of that round,
seconds per round of the rounds after it, and the whole run. Last line:
`site_loss: worst_wait_seconds=<s> rounds_after_seconds=<s> cases=<n>`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow

from healthrisk.contracts import METRIC_TRAIN_LOSS, TAG_LOST_SITES
from healthrisk.data.generator import generate, site_name
from healthrisk.data.window import DateWindow
from healthrisk.federated.runner import RoundProgress, TrainingRequest, local_federation, next_run_number
from healthrisk.processes import free_port, mlflow_server

N_SITES = 3
WINDOW = DateWindow.parse("2024-01-01..2024-01-10")


@dataclass(frozen=True)
class Case:
    signal: str
    supernode: str
    lost: str  # the run's record of the lost site
    wait_seconds: float  # from the kill to the end of the round the site was lost in
    rounds_after_seconds: float  # median of the rounds after that one
    run_seconds: float


def run_case(root: Path, work: Path, uri: str, sig: signal.Signals, supernode: str, rounds: int) -> Case:
    sites = [site_name(i) for i in range(N_SITES)]
    victim = sites[-1]
    request = TrainingRequest(
        data_root=root,
        sites=sites,
        window=WINDOW,
        tracking_uri=uri,
        rounds=rounds,
        registered_name=f"site-loss-{sig.name.lower()}-{supernode}",
        work_dir=work,
        superlink_port=0,
        min_sites=N_SITES - 1,
        stock_supernode=supernode == "stock",
    )
    killed_at: list[float] = []
    with local_federation(request) as federation:

        def kill_after_round_one(progress: RoundProgress) -> None:
            if progress.round >= 1 and not killed_at:
                killed_at.append(time.time())
                federation.kill_site(victim, sig)
                federation.restart_site(victim)

        result = federation.train(
            request.run_config(next_run_number(uri, request.registered_name)), kill_after_round_one
        )
    client = mlflow.MlflowClient(uri)
    lost = json.loads(client.get_run(result.mlflow_run_id).data.tags.get(TAG_LOST_SITES, "{}"))
    ends = {
        m.step: m.timestamp / 1000 for m in client.get_metric_history(result.mlflow_run_id, METRIC_TRAIN_LOSS)
    }
    after_kill = sorted(step for step, end in ends.items() if end > killed_at[0])
    first = after_kill[0]
    later = [ends[s] - ends[s - 1] for s in after_kill[1:]]
    return Case(
        signal=sig.name,
        supernode=supernode,
        lost=lost.get(victim, "not lost"),
        wait_seconds=ends[first] - killed_at[0],
        rounds_after_seconds=statistics.median(later) if later else float("nan"),
        run_seconds=result.seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--signals", default="SIGKILL,SIGTERM")
    parser.add_argument("--supernodes", default="resident,stock")
    args = parser.parse_args()
    cases = []
    with tempfile.TemporaryDirectory(prefix="hr-bench-") as tmp:
        root = Path(tmp) / "data"
        generate(root, n_sites=N_SITES, window=WINDOW, seed=42)
        with mlflow_server(Path(tmp) / "mlflow", free_port()) as uri:
            for name in args.signals.split(","):
                for supernode in args.supernodes.split(","):
                    case = run_case(
                        root, Path(tmp) / "flower", uri, signal.Signals[name], supernode, args.rounds
                    )
                    cases.append(case)
                    print(
                        f"{case.signal:8} {case.supernode:9} lost: {case.lost!r}  "
                        f"wait {case.wait_seconds:.1f} s  rounds after {case.rounds_after_seconds:.2f} s  "
                        f"run {case.run_seconds:.0f} s",
                        flush=True,
                    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    worst_wait = max(c.wait_seconds for c in cases)
    rounds_after = statistics.median(c.rounds_after_seconds for c in cases)
    print(
        f"site_loss: worst_wait_seconds={worst_wait:.1f} "
        f"rounds_after_seconds={rounds_after:.2f} cases={len(cases)}"
    )


if __name__ == "__main__":
    main()

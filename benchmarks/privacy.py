"""What security and privacy cost: seconds per round and AUC, with and without them.

The same generated data (3 sites, 14 days, seed 42), the same rounds, through a real
SuperLink and SuperNodes, four ways:

  insecure     no TLS, no SuperNode authentication (what every run had before issue 13)
  tls          TLS with SuperNode authentication: the default of every run
  dp           tls + differential privacy of the model updates (Flower's fixed clipping,
               RDP accountant): the documented setting noise multiplier 1.0, clipping
               norm 1.0, server-side clipping, delta 1e-5
  secagg       tls + SecAgg+ for the statistics, every round and the final evaluation

AUC: each registered model scored on the pooled validation rows (each site's held-out split).

    .venv/bin/python benchmarks/privacy.py [--rounds 3] [--noise-multiplier 1.0]

Last line: `privacy: epsilon=<e> delta=<d> auc_dp=<a> auc_no_dp=<b>`
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from healthrisk.contracts import TAG_DP_DELTA, TAG_DP_EPSILON
from healthrisk.data.generator import generate, site_name
from healthrisk.data.window import DateWindow
from healthrisk.federated.client_app import load_split
from healthrisk.federated.model import roc_auc
from healthrisk.federated.runner import TrainingRequest, train_federated
from healthrisk.processes import free_port, mlflow_server

N_SITES = 3
DELTA = 1e-5
CLIPPING_NORM = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    args = parser.parse_args()
    start = dt.date(2024, 1, 1)
    window = DateWindow(start, start + dt.timedelta(days=args.days - 1))
    sites = [site_name(i) for i in range(N_SITES)]
    modes: dict[str, dict[str, Any]] = {
        "insecure": {"insecure": True},
        "tls": {},
        "dp": {
            "dp_noise_multiplier": args.noise_multiplier,
            "dp_clipping_norm": CLIPPING_NORM,
            "dp_delta": DELTA,
        },
        "secagg": {"secure_aggregation": True},
    }
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hr-privacy-") as tmp:
        root = Path(tmp) / "data"
        generate(root, n_sites=N_SITES, window=window, seed=42)
        splits = [load_split(root, s, window) for s in sites]
        x_val = np.vstack([s.x_val for s in splits])
        y_val = np.concatenate([s.y_val for s in splits])
        with mlflow_server(Path(tmp) / "mlflow", free_port()) as uri:
            mlflow.set_tracking_uri(uri)
            client = mlflow.MlflowClient(uri)
            for mode, options in modes.items():
                result = train_federated(
                    TrainingRequest(
                        data_root=root,
                        sites=sites,
                        window=window,
                        tracking_uri=uri,
                        rounds=args.rounds,
                        registered_name=f"privacy-{mode}",
                        work_dir=Path(tmp) / "flower",
                        superlink_port=0,
                        **options,
                    )
                )
                model = mlflow.sklearn.load_model(f"models:/privacy-{mode}/{result.version}")
                tags = client.get_run(result.mlflow_run_id).data.tags
                rows[mode] = {
                    "seconds_per_round": result.seconds_per_round,
                    "seconds": result.seconds,
                    "auc": roc_auc(y_val, model.predict_proba(x_val)[:, 1]),
                    "epsilon": float(tags.get(TAG_DP_EPSILON, "nan")),
                    "delta": float(tags.get(TAG_DP_DELTA, "nan")),
                }
                print(f"{mode}: {rows[mode]}", flush=True)

    print(
        f"rows: validation={y_val.size} sites={N_SITES} days={args.days} rounds={args.rounds} "
        f"dp: noise_multiplier={args.noise_multiplier} clipping_norm={CLIPPING_NORM} (server) delta={DELTA}"
    )
    print(f"{'':10}{'s/round':>10}{'x insecure':>12}{'wall s':>9}{'AUC':>9}{'epsilon':>10}")
    base = rows["insecure"]["seconds_per_round"]
    for mode, row in rows.items():
        print(
            f"{mode:10}{row['seconds_per_round']:>10.2f}{row['seconds_per_round'] / base:>12.2f}"
            f"{row['seconds']:>9.1f}{row['auc']:>9.4f}{row['epsilon']:>10.3f}"
        )
    print(f"uptime: {os.getloadavg()}")
    print(
        f"cost: seconds_per_round insecure={base:.2f} tls={rows['tls']['seconds_per_round']:.2f} "
        f"secagg={rows['secagg']['seconds_per_round']:.2f}"
    )
    dp = rows["dp"]
    print(
        f"privacy: epsilon={dp['epsilon']:.3f} delta={dp['delta']:g} auc_dp={dp['auc']:.3f} "
        f"auc_no_dp={rows['tls']['auc']:.3f}"
    )


if __name__ == "__main__":
    main()

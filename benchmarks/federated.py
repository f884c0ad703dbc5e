"""Federated vs centralised training on the same rows, and seconds per round.

Trains the same generated data (3 sites, 5 rounds) federatedly through a real SuperLink
and SuperNodes, and centrally with sklearn on the pooled rows; both models are scored on
the same pooled validation rows (each site's held-out split).

    .venv/bin/python benchmarks/federated.py [--rounds 5] [--days 14] [--local-epochs N]

Last line: `federated: seconds_per_round=<s> auc_federated=<a> auc_centralized=<b> rounds=<n>`
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression

from healthrisk.data.generator import generate, site_name
from healthrisk.data.window import DateWindow
from healthrisk.federated.client_app import load_split
from healthrisk.federated.model import roc_auc
from healthrisk.federated.runner import TrainingRequest, train_federated
from healthrisk.processes import free_port, mlflow_server

N_SITES = 3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--local-epochs", type=int, default=TrainingRequest.local_epochs)
    args = parser.parse_args()
    start = dt.date(2024, 1, 1)
    window = DateWindow(start, start + dt.timedelta(days=args.days - 1))
    sites = [site_name(i) for i in range(N_SITES)]

    with tempfile.TemporaryDirectory(prefix="hr-bench-") as tmp:
        root = Path(tmp) / "data"
        generate(root, n_sites=N_SITES, window=window, seed=42)
        splits = [load_split(root, s, window) for s in sites]
        x_train = np.vstack([s.x_train for s in splits])
        y_train = np.concatenate([s.y_train for s in splits])
        x_val = np.vstack([s.x_val for s in splits])
        y_val = np.concatenate([s.y_val for s in splits])

        started = time.perf_counter()
        mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
        central = LogisticRegression(max_iter=1000).fit((x_train - mean) / scale, y_train)
        auc_central = roc_auc(y_val, central.predict_proba((x_val - mean) / scale)[:, 1])
        central_seconds = time.perf_counter() - started

        with mlflow_server(Path(tmp) / "mlflow", free_port()) as uri:
            result = train_federated(
                TrainingRequest(
                    data_root=root,
                    sites=sites,
                    window=window,
                    tracking_uri=uri,
                    rounds=args.rounds,
                    registered_name="benchmark",
                    work_dir=Path(tmp) / "flower",
                    superlink_port=0,
                    local_epochs=args.local_epochs,
                )
            )
            mlflow.set_tracking_uri(uri)
            federated = mlflow.sklearn.load_model(f"models:/benchmark/{result.version}")
            auc_federated = roc_auc(y_val, federated.predict_proba(x_val)[:, 1])

    print(
        f"rows: train={y_train.size} validation={y_val.size} sites={N_SITES} days={args.days} "
        f"local_epochs={args.local_epochs}"
    )
    print(f"{'':24}{'federated':>12}{'centralised':>14}")
    print(f"{'AUC (pooled validation)':24}{auc_federated:>12.4f}{auc_central:>14.4f}")
    print(f"{'AUC (site-weighted)':24}{result.metrics['auc']:>12.4f}{'':>14}")
    print(f"{'wall seconds':24}{result.seconds:>12.1f}{central_seconds:>14.2f}")
    print(
        f"seconds per round: {result.seconds_per_round:.2f} (anchor: Flower's default deployment ~20 s/round)"
    )
    print(f"AUC gap: {abs(auc_federated - auc_central):.4f} (goal <= 0.005)")
    print(
        f"federated: seconds_per_round={result.seconds_per_round:.2f} auc_federated={auc_federated:.4f} "
        f"auc_centralized={auc_central:.4f} rounds={args.rounds}"
    )


if __name__ == "__main__":
    main()

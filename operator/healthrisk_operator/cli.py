"""`healthrisk operator ...`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from healthrisk.contracts import OPERATOR_HEALTH_PORT

app = typer.Typer(help="Run the FederatedTraining operator.", no_args_is_help=True)


@app.command("run")
def run(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="namespace to watch (repeatable); default: all namespaces"),
    ] = None,
    liveness: Annotated[
        str, typer.Option(help="liveness endpoint URL served by the operator (empty: none)")
    ] = f"http://0.0.0.0:{OPERATOR_HEALTH_PORT}/healthz",
    log_format: Annotated[
        str, typer.Option(help="plain | json (default: json in a pod, plain elsewhere)")
    ] = "",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Reconcile FederatedTraining objects: in a pod (ServiceAccount) or with KUBECONFIG."""
    import logging

    import kopf

    from healthrisk_operator.handlers import QuietWakeups  # importing registers the handlers

    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    chosen = log_format or ("json" if in_cluster else "plain")
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if chosen == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("kopf.objects").addFilter(QuietWakeups())
    namespaces = namespace or []
    # standalone: one replica (the Deployment uses the Recreate strategy), no peering CRDs.
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness or None,
    )

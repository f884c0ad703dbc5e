"""What the CLI commands do, as functions the demo, the drift monitor and tests reuse."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from healthrisk.contracts import CHAMPION_ALIAS, METRIC_VAL_AUC, TRIGGER_MANUAL
from healthrisk.data.window import DateWindow
from healthrisk.federated.control import ControlClient, ControlError, RunStatus, SuperLinkAddress
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.runner import RoundProgress, TrainingRequest, TrainingResult, train_federated
from healthrisk.provenance import ensure_signing_key, signing_key_file
from healthrisk.registry import PromotionDecision, promote


@dataclass(frozen=True)
class TrainingOutcome:
    """A federated training and, when one was asked for, its promotion decision."""

    result: TrainingResult
    promotion: PromotionDecision | None = None

    def as_dict(self) -> dict[str, Any]:
        """What `healthrisk train` prints."""
        outcome: dict[str, Any] = {
            "version": self.result.version,
            "metrics": self.result.metrics,
            "mlflow_run_id": self.result.mlflow_run_id,
            "local_run_id": self.result.local_run_id,
            "seconds": round(self.result.seconds, 2),
            "seconds_per_round": round(self.result.seconds_per_round, 3),
        }
        if self.promotion is not None:
            outcome["promotion"] = self.promotion.as_dict()
        return outcome


def run_training(
    *,
    data_root: Path,
    sites: list[str],
    window: DateWindow,
    tracking_uri: str,
    rounds: int = 5,
    strategy: str = "FedAvg",
    proximal_mu: float = 0.0,
    local_epochs: int = RunConfig.local_epochs,
    model_name: str,
    superlink_port: int = 0,
    work_dir: Path = Path(".state/flower"),
    promote_alias: str | None = CHAMPION_ALIAS,
    max_auc_drop: float = 0.0,
    trigger: str = TRIGGER_MANUAL,
    data_fingerprint: str = "",
    console: Console | None = None,
) -> TrainingOutcome:
    """Train federatedly with a progress bar by round, then (optionally) decide promotion."""
    import mlflow

    console = console or Console(stderr=True)
    request = TrainingRequest(
        data_root=data_root,
        sites=sites,
        window=window,
        tracking_uri=tracking_uri,
        rounds=rounds,
        registered_name=model_name,
        trigger=trigger,
        work_dir=work_dir,
        local_epochs=local_epochs,
        strategy=strategy,
        proximal_mu=proximal_mu,
        superlink_port=superlink_port,
        champion_alias=promote_alias or CHAMPION_ALIAS,
        data_fingerprint=data_fingerprint,
    )
    with Progress(
        TextColumn("[bold]federated training[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(f"{len(sites)} sites, starting SuperLink and SuperNodes", total=rounds)

        def on_round(update: RoundProgress) -> None:
            auc = update.metrics.get(METRIC_VAL_AUC)
            detail = f"val AUC {auc:.4f}" if auc is not None else "waiting for sites"
            bar.update(
                task, completed=update.round, description=f"round {update.round}/{update.rounds} · {detail}"
            )

        result = train_federated(request, progress=on_round)
        bar.update(
            task,
            completed=rounds,
            description=f"done · val AUC {result.metrics.get('auc', float('nan')):.4f}",
        )
    console.print(
        f"registered [bold]{model_name}[/] version [bold]{result.version}[/] "
        f"(AUC {result.metrics['auc']:.4f}, {result.seconds_per_round:.2f} s/round, "
        f"{result.seconds:.1f} s total)"
    )
    if not promote_alias:
        return TrainingOutcome(result)
    decision = promote(
        mlflow.MlflowClient(tracking_uri),
        model_name,
        result.version,
        signing_key=ensure_signing_key(signing_key_file()),
        alias=promote_alias,
        max_auc_drop=max_auc_drop,
    )
    colour = "green" if decision.promoted else "yellow"
    verdict = f"promoted to {promote_alias}" if decision.promoted else "not promoted"
    console.print(f"[{colour}]version {result.version} {verdict}[/] — {decision.reason}")
    return TrainingOutcome(result, decision)


def submit_and_wait(
    superlink: SuperLinkAddress, run_config_json: str, timeout: float, *, outage_grace: float = 120.0
) -> RunStatus:
    """Submit one run to a remote SuperLink and block until it finishes (a pod's job).

    The SuperLink serves one training run, so a Flower run it already holds that is still
    going or completed was sent by an earlier attempt of this job: follow it rather than
    train twice. Every call rides out a SuperLink that does not answer yet or for a moment
    (its Control API listening after its health check passes, a Service not routing to a
    new pod yet, a connection reset) for up to `outage_grace` seconds.
    """
    try:
        config = RunConfig.from_flower(json.loads(run_config_json))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"invalid run config: {exc}") from exc
    with ControlClient(superlink) as control:
        run_id = _patiently(lambda: _send_or_adopt(control, config), outage_grace)
        deadline = time.monotonic() + timeout
        while not (status := _patiently(lambda: control.status(run_id), outage_grace)).finished:
            if time.monotonic() > deadline:
                control.stop(run_id)
                return RunStatus("finished", "stopped", f"no result within {timeout:.0f} s")
            time.sleep(1.0)
        return status


def _send_or_adopt(control: ControlClient, config: RunConfig) -> int:
    # Asked again after a failed send: a run that did reach the SuperLink is found here.
    earlier = {i: s for i, s in control.runs().items() if not s.finished or s.succeeded}
    if earlier:
        run_id = max(earlier)
        print(f"following Flower run {run_id}, submitted by an earlier attempt", file=sys.stderr)
        return run_id
    return control.submit(config)


T = TypeVar("T")


def _patiently(call: Callable[[], T], grace: float) -> T:
    """`call()`, again each second while the SuperLink does not answer (no connection,
    transport errors, 5xx), for up to `grace` seconds; what it refuses (4xx) fails at once."""
    import httpx

    silent_since = time.monotonic()
    while True:
        try:
            return call()
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                raise
            if time.monotonic() - silent_since > grace:
                raise ControlError(f"the SuperLink did not answer for {grace:.0f} s: {exc}") from exc
            print(f"the SuperLink did not answer ({type(exc).__name__}); retrying", file=sys.stderr)
            time.sleep(1.0)

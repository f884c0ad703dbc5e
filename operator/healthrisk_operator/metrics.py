"""The operator's Prometheus metrics (SPEC §7, issue 15): runs by trigger and result, skipped
triggers, promotion decisions, the current run and round, the AUC of the new model and of
the champion on the same validation rows, and each site's drift score and live champion AUC.

Counted from what each reconcile decided (its history entries, Events and status), at the
I/O edge; the decision itself stays pure. Counters restart with the operator, which
Prometheus' rate() and increase() expect.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from healthrisk.contracts import (
    METRIC_CURRENT_ROUND,
    METRIC_CURRENT_RUN,
    METRIC_DRIFT_SCORE,
    METRIC_LIVE_AUC,
    METRIC_PROMOTIONS,
    METRIC_RUN_AUC,
    METRIC_RUNS,
    METRIC_SKIPPED,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    PROMOTION_ROLLED_BACK,
)
from healthrisk_operator.builders import Training
from healthrisk_operator.decision import Plan
from healthrisk_operator.status import TrainingStatus

OBJECT = ("namespace", "training")
# The Events that record a promotion decision, and the decision each stands for.
DECISION_EVENTS = {
    "Promoted": PROMOTION_PROMOTED,
    "NotPromoted": PROMOTION_REJECTED,
    "RolledBack": PROMOTION_ROLLED_BACK,
}


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = Counter(METRIC_RUNS, "Finished runs", [*OBJECT, "trigger", "result"], registry=r)
        self.skipped = Counter(
            METRIC_SKIPPED,
            "Triggers skipped: no new data since the last run",
            [*OBJECT, "trigger"],
            registry=r,
        )
        self.promotions = Counter(METRIC_PROMOTIONS, "Promotion decisions", [*OBJECT, "decision"], registry=r)
        self.run = Gauge(METRIC_CURRENT_RUN, "The current or last run number", OBJECT, registry=r)
        self.round = Gauge(METRIC_CURRENT_ROUND, "The round of the current or last run", OBJECT, registry=r)
        self.auc = Gauge(
            METRIC_RUN_AUC,
            "Federated validation AUC of the last run's model (new) and of the champion on the same rows",
            [*OBJECT, "model"],
            registry=r,
        )
        self.drift_score = Gauge(
            METRIC_DRIFT_SCORE,
            "Drift score of the last check (0.5: retraining is worth it)",
            [*OBJECT, "site"],
            registry=r,
        )
        self.live_auc = Gauge(
            METRIC_LIVE_AUC,
            "The champion's AUC on the site's new labelled days",
            [*OBJECT, "site"],
            registry=r,
        )

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def record(self, training: Training, before: TrainingStatus, plan: Plan) -> None:
        """Count what `plan` decided, and set the gauges from the status it wrote."""
        who = (training.namespace, training.name)
        status = plan.status
        seen = {(h.number, h.result) for h in before.history or []}
        for entry in status.history or []:
            if (entry.number, entry.result) not in seen:
                self.runs.labels(*who, entry.trigger or "", entry.result).inc()
        for event in plan.events:
            if event.reason == "RetrainSkipped" and status.skipped is not None:
                self.skipped.labels(*who, status.skipped.trigger).inc()
            elif event.reason in DECISION_EVENTS:
                self.promotions.labels(*who, DECISION_EVENTS[event.reason]).inc()
        if status.run is not None:
            self.run.labels(*who).set(status.run)
            self.round.labels(*who).set(status.round or 0)
        if status.metrics is not None:
            for model, value in (("new", status.metrics.auc), ("champion", status.metrics.champion_auc)):
                if value is not None:
                    self.auc.labels(*who, model).set(value)
        sites = status.drift.sites if status.drift is not None else None
        for site, result in (sites or {}).items():
            if result.score is not None:
                self.drift_score.labels(*who, site).set(result.score)
            if result.auc is not None:
                self.live_auc.labels(*who, site).set(result.auc)

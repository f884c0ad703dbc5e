"""The reconcile state machine: `decide(observed) -> Plan`, a pure function.

Level-triggered like Kubernetes' Job controller: every call looks at what exists (pods,
Services, the MLflow run and version, the inference Deployment) and at the status it
wrote last time, and returns what should change — objects to create or delete, the
promotion/rollout/rollback to perform, Events, and the complete new status. The caller
(reconcile.py) performs the plan and writes the status; calling it again with the same
observation plans nothing new, which is what makes operator restarts harmless.

A run moves Pending (pods starting, waiting for minSites) → Training (submit pod
running) → Promoting (version found; promotion, rollout) → finished; between runs the
object is Monitoring (drift checks, schedule), Succeeded (nothing left to do) or Failed.

One module per concern, each over the typed status (status.py) and one `Decision`:

* `triggers`   what asks for a run: creation, spec change, the retrain annotation, cron
* `starting`   from a request to a run: the resolved window, or RetrainSkipped
* `inventory`  the sites' days (names only), for rolling windows and drift checks
* `runs`       a run's lifecycle: start, finish (history, Events), suspend, resume
* `progress`   an active run: pods, submission, retries, deadlines, rounds
* `promotion`  the registered version, promotion, rollout and rollback
* `drift`      drift checks and performance monitoring between runs, and their verdict
* `cleanup`    cleanPodPolicy and ttlSecondsAfterFinished; stray drift pods
* `summary`    phase, message and conditions
"""

from __future__ import annotations

from healthrisk_operator import admission
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.constants import Phase
from healthrisk_operator.decision import cleanup, drift, progress, runs, starting, summary, triggers
from healthrisk_operator.decision.context import Decision
from healthrisk_operator.decision.plan import EventSpec, Plan
from healthrisk_operator.spec import SpecError, parse_spec
from healthrisk_operator.views import Observed

__all__ = ["Plan", "decide"]


def decide(observed: Observed, config: OperatorConfig) -> Plan:
    plan = Plan(status=observed.status.model_copy(deep=True))
    status = plan.status
    status.observed_generation = observed.generation
    try:
        spec = parse_spec(observed.spec)
        admission.check(spec, config)
    except SpecError as exc:
        # Permanent until the spec changes: one Event, a Failed condition, no retries.
        if summary.invalid_spec(status, str(exc), observed.now, observed.generation):
            plan.events.append(EventSpec("Warning", "InvalidSpec", str(exc)))
        return plan
    d = Decision(observed, config, spec, plan)
    cleanup.clean_finished_runs(d)
    if spec.suspend:
        runs.suspend(d)
    else:
        if status.phase == Phase.SUSPENDED:
            runs.resume(d)
        triggers.apply(d)
        drift.monitor(d)
        starting.advance(d)
        if status.active:
            progress.advance(d)
    summary.write(d)
    return plan

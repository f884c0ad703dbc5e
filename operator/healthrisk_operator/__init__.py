"""The kopf operator that reconciles FederatedTraining objects (SPEC §7).

Layout — handlers orchestrate, builders are pure, I/O sits at the edge:

* `crd.py`        the chart's CRD, shipped in the package: the one place spec defaults live
* `spec.py`       the typed spec (CRD defaults applied, every field tested against the CRD)
* `builders.py`   pure functions → Pod/Service/Event dicts, Deployment patches, names
* `views.py`      small immutable views of pods, the Deployment and MLflow
* `status.py`     the typed status (mirrors the CRD's status schema; the one dict conversion)
* `decision/`     `decide(observed) -> Plan`: the level-triggered state machine, one module
                  per concern (triggers, runs, progress, promotion, drift, cleanup, summary)
* `reconcile.py`  observe → decide → act → write status (kubernetes client)
* `tracking.py`   MLflow: progress and versions found by tags, promote, roll back
* `handlers.py`   kopf: one reconcile loop per object, started and woken by watch events
* `uninstall.py`  `helm uninstall`'s pre-delete hook: the trainings go before the operator
* `config.py`, `constants.py`, `cli.py` (`healthrisk operator run`)
"""

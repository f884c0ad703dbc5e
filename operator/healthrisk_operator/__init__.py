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
* `handlers.py`   kopf: one daemon per object plus watch events that wake it
* `config.py`, `constants.py`, `cli.py` (`healthrisk operator run`)
"""

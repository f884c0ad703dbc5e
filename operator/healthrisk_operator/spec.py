"""The operator's typed view of a FederatedTraining spec.

The API server validates and defaults objects against the CRD schema; `parse_spec`
applies the same defaults again (so unit tests and objects created before a default
was added read the same) and checks what a schema cannot: a cron expression that
croniter rejects, sites whose Kubernetes names would collide. tests/operator/test_crd.py
proves that the defaults and field names here are those of the CRD YAML.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from healthrisk.contracts import CHAMPION_ALIAS, DEFAULT_DRIFT_THRESHOLD, REGISTERED_MODEL


class SpecError(ValueError):
    """The spec passed the schema but cannot be acted on; permanent until it changes."""


@dataclass(frozen=True)
class SiteData:
    persistent_volume_claim: str
    path: str = "/data"
    sub_path: str | None = None


@dataclass(frozen=True)
class Site:
    name: str
    data: SiteData
    node_selector: Mapping[str, str] = field(default_factory=dict)
    auth_secret_name: str | None = None

    @property
    def k8s_name(self) -> str:
        """The site as it appears in pod names (DNS labels have no underscores)."""
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Strategy:
    name: str = "FedAvg"
    local_epochs: int = 1
    proximal_mu: float = 0.0


@dataclass(frozen=True)
class Model:
    registered_name: str = REGISTERED_MODEL
    tracking_uri: str | None = None


@dataclass(frozen=True)
class Promotion:
    alias: str = CHAMPION_ALIAS
    max_auc_drop: float = 0.0
    inference_deployment: str | None = None
    inference_container: str | None = None
    rollout_timeout_seconds: int = 600


@dataclass(frozen=True)
class DriftPolicy:
    interval: str = "6h"
    threshold: float = DEFAULT_DRIFT_THRESHOLD
    policy: str = "any"
    window_days: int = 7
    current: tuple[dt.date, dt.date] | None = None

    @property
    def interval_seconds(self) -> int:
        return parse_duration(self.interval)

    def current_window(self, today: dt.date) -> tuple[dt.date, dt.date]:
        if self.current is not None:
            return self.current
        return today - dt.timedelta(days=self.window_days - 1), today


@dataclass(frozen=True)
class Retraining:
    schedule: str | None = None
    drift: DriftPolicy | None = None


@dataclass(frozen=True)
class RunPolicy:
    backoff_limit: int = 2
    active_deadline_seconds: int = 3600
    start_deadline_seconds: int = 600
    ttl_seconds_after_finished: int = 86400
    clean_pod_policy: str = "Running"


@dataclass(frozen=True)
class Security:
    tls_secret_name: str | None = None
    supernode_auth: bool = False


@dataclass(frozen=True)
class TrainingSpec:
    sites: tuple[Site, ...]
    data_from: dt.date
    data_to: dt.date
    rounds: int = 5
    min_sites_requested: int | None = None
    strategy: Strategy = field(default_factory=Strategy)
    model: Model = field(default_factory=Model)
    promotion: Promotion = field(default_factory=Promotion)
    retraining: Retraining = field(default_factory=Retraining)
    run_policy: RunPolicy = field(default_factory=RunPolicy)
    security: Security = field(default_factory=Security)
    suspend: bool = False

    @property
    def min_sites(self) -> int:
        return self.min_sites_requested if self.min_sites_requested is not None else len(self.sites)

    @property
    def retrains(self) -> bool:
        """Whether runs may start after the first without anyone touching the object."""
        return self.retraining.schedule is not None or self.retraining.drift is not None

    def training_hash(self) -> str:
        """Hash of what shapes a run's result: changing it starts a run (trigger spec-change).

        suspend, runPolicy, retraining and promotion steer the operator, not the model,
        so editing them (e.g. `suspend: true`) does not retrain.
        """
        shaping = {
            "sites": [asdict(s) for s in self.sites],
            "window": [self.data_from.isoformat(), self.data_to.isoformat()],
            "rounds": self.rounds,
            "minSites": self.min_sites,
            "strategy": asdict(self.strategy),
            "model": asdict(self.model),
            "security": asdict(self.security),
        }
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


_DURATION_PART = re.compile(r"([0-9]+)(s|m|h|d)")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'1h30m' → 5400 seconds (the CRD's pattern for retraining.drift.interval)."""
    if not re.fullmatch(r"([0-9]+(s|m|h|d))+", text):
        raise SpecError(f"duration {text!r} is not like 30m, 6h or 1d12h")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise SpecError(f"duration {text!r} must be positive")
    return seconds


def _date(value: Any, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise SpecError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from exc


def _optional(raw: Mapping[str, Any], key: str) -> Any:
    value = raw.get(key)
    return None if value in (None, "") else value


def parse_spec(raw: Mapping[str, Any]) -> TrainingSpec:
    """The typed spec, or SpecError with a message a person can act on."""
    try:
        return _parse(raw)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"invalid spec: {exc!r}") from exc


def _parse(raw: Mapping[str, Any]) -> TrainingSpec:
    sites = tuple(
        Site(
            name=str(s["name"]),
            data=SiteData(
                persistent_volume_claim=str(s["data"]["persistentVolumeClaim"]),
                path=str(s["data"].get("path") or "/data"),
                sub_path=_optional(s["data"], "subPath"),
            ),
            node_selector=dict(s.get("nodeSelector") or {}),
            auth_secret_name=_optional(s, "authSecretName"),
        )
        for s in raw.get("sites") or ()
    )
    if not sites:
        raise SpecError("spec.sites must list at least one site")
    k8s_names = [s.k8s_name for s in sites]
    clashes = sorted({n for n in k8s_names if k8s_names.count(n) > 1})
    if clashes:
        raise SpecError(f"site names collide once '_' becomes '-' in pod names: {', '.join(clashes)}")

    window = raw.get("dataWindow") or {}
    data_from = _date(window.get("from"), "spec.dataWindow.from")
    data_to = _date(window.get("to"), "spec.dataWindow.to")
    if data_from > data_to:
        raise SpecError(f"spec.dataWindow.from {data_from} is after .to {data_to}")

    min_sites = raw.get("minSites")
    if min_sites is not None and not 1 <= int(min_sites) <= len(sites):
        raise SpecError(f"spec.minSites {min_sites} must be between 1 and the number of sites ({len(sites)})")

    strategy_raw = raw.get("strategy") or {}
    strategy = Strategy(
        name=str(strategy_raw.get("name", "FedAvg")),
        local_epochs=int(strategy_raw.get("localEpochs", 1)),
        proximal_mu=float(strategy_raw.get("proximalMu", 0.0)),
    )
    model_raw = raw.get("model") or {}
    promotion_raw = raw.get("promotion") or {}
    retraining_raw = raw.get("retraining") or {}
    schedule = _optional(retraining_raw, "schedule")
    if schedule is not None:
        from croniter import croniter

        if not croniter.is_valid(schedule):
            raise SpecError(f"spec.retraining.schedule {schedule!r} is not a valid cron expression")
    drift_raw = retraining_raw.get("drift")
    drift = None
    if drift_raw is not None:
        current_raw = drift_raw.get("current")
        current = None
        if current_raw:
            current = (
                _date(current_raw.get("from"), "spec.retraining.drift.current.from"),
                _date(current_raw.get("to"), "spec.retraining.drift.current.to"),
            )
        drift = DriftPolicy(
            interval=str(drift_raw.get("interval", "6h")),
            threshold=float(drift_raw.get("threshold", DEFAULT_DRIFT_THRESHOLD)),
            policy=str(drift_raw.get("policy", "any")),
            window_days=int(drift_raw.get("windowDays", 7)),
            current=current,
        )
        parse_duration(drift.interval)
    policy_raw = raw.get("runPolicy") or {}
    security_raw = raw.get("security") or {}
    security = Security(
        tls_secret_name=_optional(security_raw, "tlsSecretName"),
        supernode_auth=bool(security_raw.get("supernodeAuth", False)),
    )
    if security.supernode_auth:
        missing = [s.name for s in sites if not s.auth_secret_name]
        if missing:
            raise SpecError(f"security.supernodeAuth needs authSecretName on every site; missing: {missing}")
    return TrainingSpec(
        sites=sites,
        data_from=data_from,
        data_to=data_to,
        rounds=int(raw.get("rounds", 5)),
        min_sites_requested=None if min_sites is None else int(min_sites),
        strategy=strategy,
        model=Model(
            registered_name=str(model_raw.get("registeredName", REGISTERED_MODEL)),
            tracking_uri=_optional(model_raw, "trackingUri"),
        ),
        promotion=Promotion(
            alias=str(promotion_raw.get("alias", CHAMPION_ALIAS)),
            max_auc_drop=float(promotion_raw.get("maxAucDrop", 0.0)),
            inference_deployment=_optional(promotion_raw, "inferenceDeployment"),
            inference_container=_optional(promotion_raw, "inferenceContainer"),
            rollout_timeout_seconds=int(promotion_raw.get("rolloutTimeoutSeconds", 600)),
        ),
        retraining=Retraining(schedule=schedule, drift=drift),
        run_policy=RunPolicy(
            backoff_limit=int(policy_raw.get("backoffLimit", 2)),
            active_deadline_seconds=int(policy_raw.get("activeDeadlineSeconds", 3600)),
            start_deadline_seconds=int(policy_raw.get("startDeadlineSeconds", 600)),
            ttl_seconds_after_finished=int(policy_raw.get("ttlSecondsAfterFinished", 86400)),
            clean_pod_policy=str(policy_raw.get("cleanPodPolicy", "Running")),
        ),
        security=security,
        suspend=bool(raw.get("suspend", False)),
    )

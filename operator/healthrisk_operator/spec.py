"""The operator's typed view of a FederatedTraining spec.

The API server validates and defaults objects against the CRD schema; `parse_spec`
applies the same defaults again, read from the same CRD file (crd.py), so unit tests and
objects created before a default was added read the same, and no default is written
here. It also checks what a schema cannot: a cron expression that croniter rejects,
sites whose Kubernetes names would collide, drift settings the drift rulebook
(healthrisk.drift.policy: duration grammar, threshold range) refuses.
tests/operator/test_crd.py proves that every CRD field and default reaches these
dataclasses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from healthrisk.data.window import DateWindow, WindowRule
from healthrisk.drift.policy import RetrainPolicy, parse_check_interval, resolve_threshold
from healthrisk.federated.run_config import RunConfig
from healthrisk_operator.crd import with_defaults


class SpecError(ValueError):
    """The spec passed the schema but cannot be acted on; permanent until it changes."""


@dataclass(frozen=True)
class SiteData:
    persistent_volume_claim: str
    path: str
    sub_path: str | None


@dataclass(frozen=True)
class Site:
    name: str
    data: SiteData
    node_selector: Mapping[str, str]
    auth_secret_name: str | None

    @property
    def k8s_name(self) -> str:
        """The site as it appears in pod names (DNS labels have no underscores)."""
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Strategy:
    name: str
    local_epochs: int
    proximal_mu: float


@dataclass(frozen=True)
class Model:
    registered_name: str
    tracking_uri: str | None


@dataclass(frozen=True)
class Promotion:
    alias: str
    max_auc_drop: float
    inference_deployment: str | None
    inference_container: str | None
    rollout_timeout_seconds: int


@dataclass(frozen=True)
class DriftPolicy:
    interval: str  # the CRD's duration grammar, e.g. 6h or 1h30m
    threshold: float
    policy: RetrainPolicy
    window_days: int  # a check looks at the site's new days, at most this many

    @property
    def interval_seconds(self) -> int:
        return int(parse_check_interval(self.interval).total_seconds())


@dataclass(frozen=True)
class PerformancePolicy:
    max_auc_drop: float


@dataclass(frozen=True)
class Retraining:
    schedule: str | None
    drift: DriftPolicy | None
    performance: PerformancePolicy | None


@dataclass(frozen=True)
class RunPolicy:
    backoff_limit: int
    active_deadline_seconds: int
    start_deadline_seconds: int
    ttl_seconds_after_finished: int
    clean_pod_policy: str


@dataclass(frozen=True)
class Security:
    tls_secret_name: str | None  # the SuperLink's certificate, brought; else made per run
    insecure: bool  # no TLS, no SuperNode authentication: only when asked for by name


@dataclass(frozen=True)
class DifferentialPrivacy:
    noise_multiplier: float
    clipping_norm: float
    delta: float
    clipping: str


@dataclass(frozen=True)
class Privacy:
    min_rows: int
    per_site_metrics: bool
    secure_aggregation: bool
    differential_privacy: DifferentialPrivacy | None

    def run_config(self) -> dict[str, Any]:
        """The Flower App's run config for these settings (keys of its pyproject)."""
        config: dict[str, Any] = {
            "min-rows": self.min_rows,
            "per-site-metrics": self.per_site_metrics,
            "secure-aggregation": self.secure_aggregation,
        }
        dp = self.differential_privacy
        if dp is not None:
            config |= {
                "dp-noise-multiplier": dp.noise_multiplier,
                "dp-clipping-norm": dp.clipping_norm,
                "dp-delta": dp.delta,
                "dp-clipping": dp.clipping,
            }
        return config


@dataclass(frozen=True)
class TrainingSpec:
    sites: tuple[Site, ...]
    data_window: WindowRule
    rounds: int
    min_sites_requested: int | None
    strategy: Strategy
    model: Model
    promotion: Promotion
    retraining: Retraining
    run_policy: RunPolicy
    security: Security
    privacy: Privacy
    suspend: bool

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
            "window": str(self.data_window),
            "rounds": self.rounds,
            "minSites": self.min_sites,
            "strategy": asdict(self.strategy),
            "model": asdict(self.model),
            "security": asdict(self.security),
            "privacy": asdict(self.privacy),
        }
        return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _date(value: Any, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise SpecError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from exc


def _data_window(raw: Mapping[str, Any]) -> WindowRule:
    """{last: Nd} or {from, to}: the one window rule (healthrisk.data.window)."""
    if raw.get("last") is not None:
        if raw.get("from") is not None or raw.get("to") is not None:
            raise SpecError("spec.dataWindow is either {last: Nd} or {from, to}, not both")
        try:
            return WindowRule.parse(str(raw["last"]))
        except ValueError as exc:
            raise SpecError(f"spec.dataWindow.last: {exc}") from exc
    data_from = _date(raw.get("from"), "spec.dataWindow.from")
    data_to = _date(raw.get("to"), "spec.dataWindow.to")
    if data_from > data_to:
        raise SpecError(f"spec.dataWindow.from {data_from} is after .to {data_to}")
    return WindowRule(fixed=DateWindow(data_from, data_to))


def _optional(raw: Mapping[str, Any], key: str) -> Any:
    value = raw.get(key)
    return None if value in (None, "") else value


def parse_spec(raw: Mapping[str, Any]) -> TrainingSpec:
    """The typed spec, or SpecError with a message a person can act on."""
    try:
        return _parse(with_defaults(raw))
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
                path=str(s["data"]["path"]),
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

    data_window = _data_window(raw.get("dataWindow") or {})

    min_sites = raw.get("minSites")
    if min_sites is not None and not 1 <= int(min_sites) <= len(sites):
        raise SpecError(f"spec.minSites {min_sites} must be between 1 and the number of sites ({len(sites)})")

    strategy_raw = raw["strategy"]
    strategy = Strategy(
        name=str(strategy_raw["name"]),
        local_epochs=int(strategy_raw["localEpochs"]),
        proximal_mu=float(strategy_raw["proximalMu"]),
    )
    model_raw = raw["model"]
    promotion_raw = raw["promotion"]
    retraining_raw = raw["retraining"]
    schedule = _optional(retraining_raw, "schedule")
    if schedule is not None:
        from croniter import croniter

        if not croniter.is_valid(schedule):
            raise SpecError(f"spec.retraining.schedule {schedule!r} is not a valid cron expression")
    drift_raw = retraining_raw.get("drift")
    drift = None
    if drift_raw is not None:
        # The drift rulebook's own checks: what the drift pods and the embedded monitor accept.
        try:
            parse_check_interval(drift_raw["interval"])
            threshold = resolve_threshold(float(drift_raw["threshold"]))
        except ValueError as exc:
            raise SpecError(f"spec.retraining.drift: {exc}") from exc
        drift = DriftPolicy(
            interval=str(drift_raw["interval"]),
            threshold=threshold,
            policy=RetrainPolicy(drift_raw["policy"]),
            window_days=int(drift_raw["windowDays"]),
        )
    performance_raw = retraining_raw.get("performance")
    performance = None
    if performance_raw is not None:
        if drift is None:
            raise SpecError(
                "spec.retraining.performance needs spec.retraining.drift (its checks measure the AUC)"
            )
        performance = PerformancePolicy(max_auc_drop=float(performance_raw["maxAucDrop"]))
    policy_raw = raw["runPolicy"]
    security_raw = raw["security"]
    security = Security(
        tls_secret_name=_optional(security_raw, "tlsSecretName"),
        insecure=bool(security_raw["insecure"]),
    )
    if security.insecure and security.tls_secret_name:
        raise SpecError("security.tlsSecretName and security.insecure exclude each other")
    privacy_raw = raw["privacy"]
    dp_raw = privacy_raw.get("differentialPrivacy")
    privacy = Privacy(
        min_rows=int(privacy_raw["minRows"]),
        per_site_metrics=bool(privacy_raw["perSiteMetrics"]),
        secure_aggregation=bool(privacy_raw["secureAggregation"]),
        differential_privacy=None
        if dp_raw is None
        else DifferentialPrivacy(
            noise_multiplier=float(dp_raw["noiseMultiplier"]),
            clipping_norm=float(dp_raw["clippingNorm"]),
            delta=float(dp_raw["delta"]),
            clipping=str(dp_raw["clipping"]),
        ),
    )
    try:  # the Flower App's own rules for these settings
        RunConfig.from_flower({**privacy.run_config(), "local-run-id": "spec"})
    except ValueError as exc:
        raise SpecError(f"spec.privacy: {exc}") from exc
    return TrainingSpec(
        sites=sites,
        data_window=data_window,
        rounds=int(raw["rounds"]),
        min_sites_requested=None if min_sites is None else int(min_sites),
        strategy=strategy,
        model=Model(
            registered_name=str(model_raw["registeredName"]),
            tracking_uri=_optional(model_raw, "trackingUri"),
        ),
        promotion=Promotion(
            alias=str(promotion_raw["alias"]),
            max_auc_drop=float(promotion_raw["maxAucDrop"]),
            inference_deployment=_optional(promotion_raw, "inferenceDeployment"),
            inference_container=_optional(promotion_raw, "inferenceContainer"),
            rollout_timeout_seconds=int(promotion_raw["rolloutTimeoutSeconds"]),
        ),
        retraining=Retraining(schedule=schedule, drift=drift, performance=performance),
        run_policy=RunPolicy(
            backoff_limit=int(policy_raw["backoffLimit"]),
            active_deadline_seconds=int(policy_raw["activeDeadlineSeconds"]),
            start_deadline_seconds=int(policy_raw["startDeadlineSeconds"]),
            ttl_seconds_after_finished=int(policy_raw["ttlSecondsAfterFinished"]),
            clean_pod_policy=str(policy_raw["cleanPodPolicy"]),
        ),
        security=security,
        privacy=privacy,
        suspend=bool(raw["suspend"]),
    )

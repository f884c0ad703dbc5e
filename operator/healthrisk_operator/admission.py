"""What a FederatedTraining may make the operator do beyond its own namespace's pods.

Anyone allowed to create a FederatedTraining could otherwise point the operator (and the
pods it creates) at any URL as the tracking server (request forgery from inside the
cluster), have it mount any Secret of the namespace into a run pod, or roll any
Deployment. The chart sets three allow-lists (values `operator.policy`), and with MLflow's
authentication a fourth: the registered models its users hold grants on (a training naming
another would fail only at registration, after its whole run). The operator run by hand
(tests, development) sets none and is unrestricted, and says so at start.

A spec outside them is an invalid spec: refused before anything is contacted, created or
mounted, with a message naming the field and the value (decision.summary.invalid_spec).
"""

from __future__ import annotations

import logging

from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.spec import SpecError, TrainingSpec

log = logging.getLogger(__name__)


def _uri(value: str) -> str:
    return value.strip().rstrip("/")


def check(spec: TrainingSpec, config: OperatorConfig) -> None:
    """SpecError when `spec` asks for what the operator's policy does not allow."""
    uri = spec.model.tracking_uri
    if uri is not None and config.allowed_tracking_uris is not None:
        allowed = {_uri(u) for u in (config.tracking_uri, config.tracking_uri_for_pods)}
        allowed |= {_uri(u) for u in config.allowed_tracking_uris}
        if _uri(uri) not in allowed:
            raise SpecError(
                f"spec.model.trackingUri {uri!r} is not a tracking server this operator may use "
                f"(allowed: {', '.join(sorted(allowed))}; chart value operator.policy.allowedTrackingUris)"
            )
    if config.mountable_secrets is not None:
        named = [("spec.security.tlsSecretName", spec.security.tls_secret_name)]
        if not spec.security.insecure:  # an insecure run mounts no SuperNode key
            named += [(f"spec.sites[{s.name}].authSecretName", s.auth_secret_name) for s in spec.sites]
        for field, secret in named:
            if secret is not None and secret not in config.mountable_secrets:
                raise SpecError(
                    f"{field} {secret!r} is not a Secret this operator mounts into run pods "
                    f"(allowed: {', '.join(sorted(config.mountable_secrets)) or 'none'}; "
                    "chart value operator.policy.mountableSecrets)"
                )
    models = config.registered_models
    if models is not None and spec.model.registered_name not in models:
        raise SpecError(
            f"spec.model.registeredName {spec.model.registered_name!r} is not a registered model "
            f"the platform's MLflow users may write and promote (allowed: {', '.join(sorted(models))}; "
            "chart value mlflow.auth.registeredModels)"
        )
    deployments = config.inference_deployments
    deployment = spec.promotion.inference_deployment
    if deployment is not None and deployments is not None and deployment not in deployments:
        raise SpecError(
            f"spec.promotion.inferenceDeployment {deployment!r} is not a Deployment this operator "
            f"may roll (allowed: {', '.join(sorted(deployments)) or 'none'}; "
            "chart value operator.policy.inferenceDeployments)"
        )


def warn_if_unrestricted(config: OperatorConfig) -> None:
    unset = [
        name
        for name, value in (
            ("allowed_tracking_uris", config.allowed_tracking_uris),
            ("mountable_secrets", config.mountable_secrets),
            ("inference_deployments", config.inference_deployments),
        )
        if value is None
    ]
    if unset:
        log.warning(
            "no policy for %s: a FederatedTraining may name any value there (the chart sets them)",
            ", ".join(unset),
        )

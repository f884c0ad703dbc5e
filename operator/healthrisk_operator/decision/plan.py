"""What one decision asks the reconciler to do: the plan, and its requests to the edge."""

from __future__ import annotations

from dataclasses import dataclass, field

from healthrisk_operator.builders import Manifest
from healthrisk_operator.spec import Site
from healthrisk_operator.status import TrainingStatus


@dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class RunSecretRequest:
    """Make the run's key material: a Control CA and client certificate, and a CA and
    certificate for the SuperLink naming `server_names` (none: the training brings one)."""

    run: int
    server_names: tuple[str, ...] | None


@dataclass(frozen=True)
class SiteKeyRequest:
    """Make a SuperNode key pair for a site that brings none."""

    site: Site


@dataclass(frozen=True)
class PromoteRequest:
    registered_name: str
    version: str
    alias: str
    max_auc_drop: float


@dataclass(frozen=True)
class RolloutRequest:
    deployment: str
    patch: Manifest


@dataclass(frozen=True)
class RollbackRequest:
    registered_name: str
    alias: str
    version: str  # the one taken out of service
    to_version: str | None
    reason: str
    deployment: str
    patch: Manifest


@dataclass
class Plan:
    status: TrainingStatus
    create: list[Manifest] = field(default_factory=list)
    # Secrets whose content the reconciler makes (keys are not pure), before `create`;
    # made again and refused (AlreadyExists) when they exist: the operator never reads them.
    generate: list[RunSecretRequest | SiteKeyRequest] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    events: list[EventSpec] = field(default_factory=list)
    promote: PromoteRequest | None = None
    rollout: RolloutRequest | None = None
    rollback: RollbackRequest | None = None
    remove_annotations: list[str] = field(default_factory=list)

    @property
    def changes_registry_or_deployment(self) -> bool:
        """After these the world changed in ways the next observation must see at once."""
        return self.promote is not None or self.rollout is not None or self.rollback is not None

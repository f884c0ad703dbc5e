"""Keeps the served model current: first load, polling, atomic swap, registry health.

The served model is one attribute holding an immutable `LoadedModel`; a request reads it
once and uses that object to the end, so a swap never mixes two versions in one response
and never exposes a half-loaded model. Loading (loader.py: one small document, verified
and parsed) happens on a background thread; the event loop never waits for the registry.
A refused version is never retried, unless its signature changes (the gate promoted it
since), and the model being served keeps serving.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from healthrisk.contracts import (
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
    ENV_TRACKING_URI,
    LATEST_VERSION,
    TAG_PROMOTION_HMAC,
)
from healthrisk.model_parameters import ModelIntegrityError
from healthrisk.provenance import ProvenanceError, SigningKeyUnavailable, read_signing_key
from healthrisk.registry_rest import RegistryUnreachable, VersionNotFound
from healthrisk_inference.loader import load_directory, load_version
from healthrisk_inference.metrics import ServiceMetrics
from healthrisk_inference.model import LoadedModel
from healthrisk_inference.registry_client import RegistryClient, ResolvedVersion
from healthrisk_inference.settings import Settings

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
# While nothing is loaded, the registry is asked again at least this often.
UNLOADED_RETRY_S = 2.0


@dataclass
class RegistryStatus:
    reachable: bool | None = None  # None: not asked yet (or no registry configured)
    last_error: str | None = None
    last_success: float | None = None
    last_check: float | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Availability(StrEnum):
    """What the service can do now. Only the first two may receive traffic: one answers
    predictions, the other answers them 503 for a reason that is not a fault."""

    SERVING = "serving"  # a model is loaded (even if the registry is unreachable now)
    NO_MODEL_YET = "no-model-yet"  # the registry says nothing was promoted to the alias yet
    STARTING = "starting"  # the registry not asked yet, or the first load still running
    REGISTRY_UNREACHABLE = "registry-unreachable"  # and nothing loaded
    NOT_FOUND = "not-found"  # a fixed version that the registry does not have
    LOAD_FAILED = "load-failed"  # the version exists but could not be (or may not be) loaded

    @property
    def takes_traffic(self) -> bool:
        return self in (Availability.SERVING, Availability.NO_MODEL_YET)


@dataclass(frozen=True)
class State:
    availability: Availability
    detail: str


class ModelManager:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self.registry = RegistryStatus()
        self.last_load_error: str | None = None
        # uri → why it was refused, for /model; keyed again by signature below.
        self.refused: dict[str, str] = {}
        self._refused_signatures: dict[str, str | None] = {}
        # The registry's answer that there is nothing to serve, while that is its answer.
        self.unresolved: str | None = None
        self._client = (
            RegistryClient(settings.mlflow_tracking_uri, timeout=settings.registry_timeout_seconds)
            if settings.mlflow_tracking_uri
            else None
        )
        if self._local_directory is None and self._client is None:
            raise ValueError(
                f"set {ENV_TRACKING_URI} (with {ENV_MODEL_NAME}/{ENV_MODEL_VERSION} or a "
                f"{ENV_MODEL_URI} models:/NAME/VERSION), or {ENV_MODEL_URI} to a local model directory"
            )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)

    @property
    def _local_directory(self) -> Path | None:
        uri = self.settings.model_uri
        return Path(uri) if uri is not None and not _MODELS_URI.match(uri) else None

    @property
    def reference(self) -> str:
        if self.settings.model_uri:
            return self.settings.model_uri
        separator = "/" if self.settings.model_version.isdigit() else "@"
        return f"models:/{self.settings.model_name}{separator}{self.settings.model_version}"

    def state(self) -> State:
        """Serving, waiting for a first promotion, or broken — and why, in one line."""
        if self.current is not None:
            return State(Availability.SERVING, f"serving {self.current.name} version {self.current.version}")
        if self.last_load_error is not None:
            return State(Availability.LOAD_FAILED, self.last_load_error)
        if self.registry.reachable is False:
            return State(
                Availability.REGISTRY_UNREACHABLE,
                f"model registry unreachable and no model loaded: {self.registry.last_error}",
            )
        if self.unresolved is not None:
            if self.settings.polls_registry:
                return State(Availability.NO_MODEL_YET, self._nothing_promoted())
            return State(Availability.NOT_FOUND, f"{self.reference} not found: {self.unresolved}")
        return State(Availability.STARTING, f"loading {self.reference}")

    def no_model_message(self) -> str:
        """What a prediction is answered (HTTP 503) while no model is loaded."""
        state = self.state()
        if state.availability is Availability.NO_MODEL_YET:
            return state.detail
        return f"no model loaded yet: {state.detail}"

    def _nothing_promoted(self) -> str:
        name, reference = self.settings.model_name, self.settings.model_version
        if reference == LATEST_VERSION:
            return (
                f"no promoted version yet: no version of {name!r} has passed the promotion gate; "
                "predictions start once one is promoted"
            )
        return (
            f"no {reference} yet: no version of {name!r} has the alias {reference!r} (nothing promoted "
            "so far); predictions start once one is promoted"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.poll_once():
                    return
            except Exception:
                # A poller that died would freeze the model silently; say it and go on.
                log.exception("model poll failed unexpectedly; retrying")
            interval = self.settings.model_poll_interval_seconds
            # Nothing to serve yet (a new pod whose first load failed, no champion yet): look
            # again soon, whatever the poll interval, or a rollout waits a whole interval.
            self._stop.wait(interval if self.current is not None else min(interval, UNLOADED_RETRY_S))

    def poll_once(self) -> bool:
        """One resolve-and-maybe-load step; returns whether polling is still needed."""
        directory = self._local_directory
        if directory is not None:
            self._load(
                str(directory),
                None,
                lambda: load_directory(
                    directory, self.settings.model_name, provenance_required=self.settings.provenance_required
                ),
            )
            return self.current is None and str(directory) not in self.refused
        assert self._client is not None
        name, reference = self._registry_reference()
        try:
            resolved = self._client.resolve(name, reference)
        except (RegistryUnreachable, VersionNotFound) as exc:
            self._record_registry(exc)
            return True
        self._record_registry(None)
        self.unresolved = None
        if self.current is None or self.current.version != resolved.version:
            self._load_resolved(resolved)
        return self.settings.polls_registry or self.current is None

    @property
    def model_name(self) -> str:
        """The registered model this service serves: MODEL_URI's models:/NAME/..., else MODEL_NAME."""
        return self._registry_reference()[0]

    def _registry_reference(self) -> tuple[str, str]:
        match = _MODELS_URI.match(self.settings.model_uri or "")
        if match:
            return match["name"], match["version"]
        return self.settings.model_name, self.settings.model_version

    def _load_resolved(self, resolved: ResolvedVersion) -> None:
        signature = resolved.tags.get(TAG_PROMOTION_HMAC)
        # Refused once is refused for good, unless the gate has signed the version since.
        if resolved.uri in self.refused and self._refused_signatures.get(resolved.uri) == signature:
            return
        client = self._client
        assert client is not None

        def load() -> LoadedModel:
            key = (
                read_signing_key(self.settings.model_signing_key_file)
                if self.settings.provenance_required
                else None
            )
            return load_version(client, resolved, signing_key=key)

        if self._load(resolved.uri, signature, load):
            self.refused.pop(resolved.uri, None)
            self._refused_signatures.pop(resolved.uri, None)

    def _load(self, uri: str, signature: str | None, load: Callable[[], LoadedModel]) -> bool:
        started = time.monotonic()
        try:
            model = load()
        except ModelIntegrityError as exc:
            reason = exc.reason if isinstance(exc, ProvenanceError) else "refused"
            self.refused[uri] = str(exc)
            self._refused_signatures[uri] = signature
            self.last_load_error = f"refused {uri}: {exc}"
            self.metrics.model_load_failures.labels(reason=reason).inc()
            log.error("refusing model %s (%s): %s; it will not be served", uri, reason, exc)
            return False
        except (RegistryUnreachable, VersionNotFound, SigningKeyUnavailable) as exc:
            self.last_load_error = f"could not load {uri}: {exc}"
            self.metrics.model_load_failures.labels(reason="error").inc()
            log.warning("could not load model %s (will retry): %s", uri, exc)
            return False
        previous = self.current
        self.current = model
        self.last_load_error = None
        self.metrics.model_swapped(model)
        log.info(
            "serving model %s version %s (was %s), loaded in %.3f s",
            model.name,
            model.version,
            previous.version if previous else "none",
            time.monotonic() - started,
        )
        return True

    def _record_registry(self, error: Exception | None) -> None:
        now = time.time()
        self.registry.last_check = now
        if isinstance(error, RegistryUnreachable):
            if self.registry.reachable is not False:
                log.warning("model registry unreachable, keeping the current model: %s", error)
            self.registry.reachable = False
            self.registry.last_error = str(error)
            self.metrics.registry_reachable.set(0)
            return
        if self.registry.reachable is False:
            log.info("model registry reachable again")
        self.registry.reachable = True
        self.registry.last_success = now
        self.metrics.registry_reachable.set(1)
        self.metrics.registry_last_success.set(now)
        if isinstance(error, VersionNotFound):
            self.unresolved = str(error)
            self.last_load_error = None  # nothing to load any more, so nothing failed to load
            # Said once per distinct answer, not on every poll.
            if str(error) != self.registry.last_error:
                log.warning("the registry has no %s to serve: %s", self.reference, error)
            self.registry.last_error = str(error)
        else:
            self.registry.last_error = None

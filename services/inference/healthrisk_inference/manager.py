"""Keeps the served model current: first load, polling, atomic swap, registry health.

The served model is one attribute holding an immutable `LoadedModel`; a request reads it
once and uses that object to the end, so a swap never mixes two versions in one response
and never exposes a half-loaded model. Loading happens on a background thread (in a child
process, see loader.py); the event loop never waits for the registry.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from healthrisk.contracts import ENV_MODEL_NAME, ENV_MODEL_URI, ENV_MODEL_VERSION, ENV_TRACKING_URI
from healthrisk_inference.loader import LoadRequest, ModelLoadError, load_in_child
from healthrisk_inference.metrics import ServiceMetrics
from healthrisk_inference.model import LoadedModel, ModelIntegrityError
from healthrisk_inference.registry_client import (
    RegistryClient,
    RegistryUnreachable,
    ResolvedVersion,
    VersionNotFound,
)
from healthrisk_inference.settings import Settings

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass
class RegistryStatus:
    reachable: bool | None = None  # None: not asked yet (or no registry configured)
    last_error: str | None = None
    last_success: float | None = None
    last_check: float | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ModelManager:
    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self.registry = RegistryStatus()
        self.last_load_error: str | None = None
        self._refused: dict[str, str] = {}
        self._client = (
            RegistryClient(settings.mlflow_tracking_uri, timeout=settings.registry_timeout_seconds)
            if settings.model_uri is None and settings.mlflow_tracking_uri
            else None
        )
        if settings.model_uri is None and self._client is None:
            raise ValueError(
                f"set {ENV_TRACKING_URI} (with {ENV_MODEL_NAME}/{ENV_MODEL_VERSION}) or {ENV_MODEL_URI}"
            )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)

    @property
    def reference(self) -> str:
        if self.settings.model_uri:
            return self.settings.model_uri
        separator = "/" if self.settings.model_version.isdigit() else "@"
        return f"models:/{self.settings.model_name}{separator}{self.settings.model_version}"

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
            self._stop.wait(self.settings.model_poll_interval_seconds)

    def poll_once(self) -> bool:
        """One resolve-and-maybe-load step; returns whether polling is still needed."""
        if self.settings.model_uri is not None:
            return self._load_uri(self.settings.model_uri)
        assert self._client is not None
        try:
            resolved = self._client.resolve(self.settings.model_name, self.settings.model_version)
        except (RegistryUnreachable, VersionNotFound) as exc:
            self._record_registry(exc)
            return True
        self._record_registry(None)
        if self.current is None or self.current.version != resolved.version:
            self._load_resolved(resolved)
        return self.settings.polls_registry or self.current is None

    def _load_uri(self, uri: str) -> bool:
        match = _MODELS_URI.match(uri)
        name, version = (match["name"], match["version"]) if match else (self.settings.model_name, "local")
        request = LoadRequest(uri=uri, name=name, version=version, from_registry=match is not None)
        return not self._load(request) and uri not in self._refused

    def _load_resolved(self, resolved: ResolvedVersion) -> None:
        if resolved.uri in self._refused:
            return
        self._load(
            LoadRequest(uri=resolved.uri, name=resolved.name, version=resolved.version, alias=resolved.alias)
        )

    def _load(self, request: LoadRequest) -> bool:
        started = time.monotonic()
        try:
            model = load_in_child(request, timeout=self.settings.model_load_timeout_seconds)
        except ModelIntegrityError as exc:
            self._refused[request.uri] = str(exc)
            self.last_load_error = f"refused {request.uri}: {exc}"
            self.metrics.model_load_failures.labels(reason="refused").inc()
            log.error("refusing model %s: %s; it will not be served", request.uri, exc)
            return False
        except ModelLoadError as exc:
            self.last_load_error = f"could not load {request.uri}: {exc}"
            self.metrics.model_load_failures.labels(reason="error").inc()
            log.warning("could not load model %s (will retry): %s", request.uri, exc)
            return False
        previous = self.current
        self.current = model
        self.last_load_error = None
        self.metrics.model_swapped(model)
        log.info(
            "serving model %s version %s (was %s), loaded in %.1f s",
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
            # Said once per distinct answer, not on every poll.
            if str(error) != self.registry.last_error:
                log.warning("the registry has no %s to serve: %s", self.reference, error)
            self.registry.last_error = str(error)
        else:
            self.registry.last_error = None

"""Load a model artifact in a short-lived child process and hand back plain parameters.

Why a child: mlflow, sklearn and pandas cost ~200 MB of resident memory once imported,
and memory a Python process has grown into is not given back. The serving process only
ever needs four small arrays, so the heavy import, download, signature check and
pipeline check all happen in `python -m healthrisk_inference.loader`, which writes a JSON
document and exits. A crash or hang while loading cannot take the serving process down.

Integrity: a model is refused (exit code `EXIT_REFUSED`, never retried for that version)
when its MLflow signature is not exactly the feature schema (names, order, float64), when
the pipeline is not StandardScaler → binary LogisticRegression over those features, or
when the extracted numpy formula disagrees with the pipeline's own predict_proba.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES, FEATURES
from healthrisk_inference.model import LoadedModel, ModelIntegrityError, ModelParameters

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 3
# The numpy path and sklearn's predict_proba must agree to this on the check rows.
_AGREEMENT_TOLERANCE = 1e-9
_CHECK_ROWS = 64


class ModelLoadError(RuntimeError):
    """Loading failed for a reason that may go away (registry down, timeout)."""


@dataclass(frozen=True)
class LoadRequest:
    uri: str
    name: str
    version: str
    alias: str | None = None
    # Set when the version comes from the registry: its tags and run metrics are fetched.
    from_registry: bool = True


def load_in_child(request: LoadRequest, *, timeout: float) -> LoadedModel:
    """Run the loader child; raise ModelIntegrityError (refused) or ModelLoadError."""
    with tempfile.TemporaryDirectory(prefix="healthrisk-load-") as tmp:
        output = Path(tmp) / "model.json"
        argv = [sys.executable, "-m", "healthrisk_inference.loader", request.uri, "--output", str(output)]
        if request.from_registry:
            argv += ["--name", request.name, "--version", request.version]
        try:
            completed = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ModelLoadError(f"loading {request.uri} took longer than {timeout:.0f} s") from exc
        document: dict[str, Any] = {}
        if output.exists():
            document = json.loads(output.read_text())
        if completed.returncode == EXIT_REFUSED:
            raise ModelIntegrityError(document.get("error", "refused by the loader"))
        if completed.returncode != EXIT_OK or "parameters" not in document:
            tail = completed.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise ModelLoadError(document.get("error") or " | ".join(tail) or f"exit {completed.returncode}")
    return LoadedModel(
        name=request.name,
        version=request.version,
        alias=request.alias,
        source=request.uri,
        parameters=ModelParameters.from_json(document["parameters"]),
        run_id=document.get("run_id"),
        metrics={k: float(v) for k, v in document.get("metrics", {}).items()},
        tags=dict(document.get("tags", {})),
    )


# --- everything below runs in the child -------------------------------------------------


def _check_signature(model_dir: str) -> str | None:
    """Refuse unless the signature's inputs are exactly the schema's float64 columns."""
    from mlflow.models import Model
    from mlflow.types import DataType

    mlmodel = Model.load(model_dir)
    signature = mlmodel.signature
    if signature is None or signature.inputs is None:
        raise ModelIntegrityError("the model has no input signature; it cannot be checked against the schema")
    names = tuple(signature.inputs.input_names())
    if names != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in names]
        extra = [n for n in names if n not in FEATURE_NAMES]
        raise ModelIntegrityError(
            f"signature inputs {list(names)} do not match the feature schema "
            f"(missing {missing}, unexpected {extra}, order must be {list(FEATURE_NAMES)})"
        )
    wrong = [
        f"{name}:{dtype}"
        for name, dtype in zip(names, signature.inputs.input_types(), strict=True)
        if dtype != DataType.double
    ]
    if wrong:
        raise ModelIntegrityError(f"signature inputs must be double (float64); got {wrong}")
    return mlmodel.run_id


def _extract_parameters(pipeline: Any) -> ModelParameters:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise ModelIntegrityError(f"expected a 2-step sklearn Pipeline, got {type(pipeline).__name__}")
    scaler, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(scaler, StandardScaler) or not isinstance(classifier, LogisticRegression):
        raise ModelIntegrityError(
            "expected StandardScaler → LogisticRegression, got "
            f"{type(scaler).__name__} → {type(classifier).__name__}"
        )
    feature_names = getattr(scaler, "feature_names_in_", None)
    if feature_names is not None and tuple(feature_names) != FEATURE_NAMES:
        raise ModelIntegrityError(f"the scaler was fitted on {list(feature_names)}, not the feature schema")
    if list(classifier.classes_) != [0, 1] or classifier.coef_.shape != (1, len(FEATURE_NAMES)):
        raise ModelIntegrityError(
            f"expected a binary classifier over {len(FEATURE_NAMES)} features, got classes "
            f"{list(classifier.classes_)} and coef shape {classifier.coef_.shape}"
        )
    n = len(FEATURE_NAMES)
    mean = scaler.mean_ if scaler.with_mean else np.zeros(n)
    scale = scaler.scale_ if scaler.with_std else np.ones(n)
    return ModelParameters(
        mean=np.asarray(mean, dtype=np.float64),
        scale=np.asarray(scale, dtype=np.float64),
        coef=np.asarray(classifier.coef_[0], dtype=np.float64),
        intercept=float(classifier.intercept_[0]),
    )


def _check_agreement(pipeline: Any, parameters: ModelParameters) -> None:
    """The numpy formula must give what the pipeline gives, over the whole valid range."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    low = np.array([f.minimum for f in FEATURES])
    high = np.array([f.maximum for f in FEATURES])
    rows = np.vstack(
        [[EXAMPLE_RECORD[n] for n in FEATURE_NAMES], rng.uniform(low, high, (_CHECK_ROWS, len(low)))]
    )
    expected = pipeline.predict_proba(pd.DataFrame(rows, columns=list(FEATURE_NAMES)))[:, 1]
    served = LoadedModel(name="check", version="0", source="", parameters=parameters).scores(rows)
    worst = float(np.max(np.abs(expected - served)))
    if worst > _AGREEMENT_TOLERANCE:
        raise ModelIntegrityError(f"extracted parameters disagree with the pipeline by {worst:.3g}")


def _registry_metadata(name: str, version: str) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient()
    model_version = client.get_model_version(name, version)
    metadata: dict[str, Any] = {"tags": dict(model_version.tags), "run_id": model_version.run_id}
    if model_version.run_id:
        metadata["metrics"] = dict(client.get_run(model_version.run_id).data.metrics)
    return metadata


def _load(uri: str, name: str | None, version: str | None) -> dict[str, Any]:
    import mlflow

    with tempfile.TemporaryDirectory(prefix="healthrisk-artifact-") as tmp:
        model_dir = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        run_id = _check_signature(model_dir)
        pipeline = mlflow.sklearn.load_model(model_dir)
    parameters = _extract_parameters(pipeline)
    _check_agreement(pipeline, parameters)
    document: dict[str, Any] = {"parameters": parameters.as_json(), "run_id": run_id}
    if name is not None and version is not None:
        document.update(_registry_metadata(name, version))
    return document


def _die_with_parent() -> None:
    """A load that the server no longer waits for is pointless: let Linux end it with the server."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("uri")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--name")
    parser.add_argument("--version")
    args = parser.parse_args(argv)
    _die_with_parent()
    # Loading competes with serving for the same cores; serving comes first.
    os.nice(10)
    try:
        document = _load(args.uri, args.name, args.version)
        code = EXIT_OK
    except ModelIntegrityError as exc:
        document, code = {"error": str(exc)}, EXIT_REFUSED
    except Exception as exc:
        document, code = {"error": f"{type(exc).__name__}: {exc}"}, EXIT_FAILED
    args.output.write_text(json.dumps(document))
    return code


if __name__ == "__main__":
    sys.exit(main())

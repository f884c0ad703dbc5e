"""health-risk: federated health-risk classification with MLflow, Evidently and Flower."""

from importlib.metadata import PackageNotFoundError, version

from healthrisk.contracts import APP_NAME

try:
    __version__ = version(APP_NAME)
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

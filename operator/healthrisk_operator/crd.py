"""The FederatedTraining CRD the chart installs, read by the operator itself.

The CRD YAML is the one place the spec's defaults are written: the API server applies
them to every object, and `with_defaults` applies the same ones here (to objects in unit
tests and to anything that reaches the operator undefaulted), so spec.py holds no
default of its own. The file ships inside this package as a symlink to
charts/health-risk/files/ (package data resolves it into the wheel).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from healthrisk_operator.constants import CRD_NAME

CRD_FILE = f"crds/{CRD_NAME}.yaml"


@lru_cache(maxsize=1)
def definition() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(CRD_FILE).read_text(encoding="utf-8")
    crd: dict[str, Any] = yaml.safe_load(text)
    return crd


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the API server stores it: every default of the schema filled in."""
    defaulted = copy.deepcopy(dict(spec))
    apply_defaults(spec_schema(), defaulted)
    return defaulted


def apply_defaults(schema: Mapping[str, Any], value: Any) -> None:
    """Structural defaulting as the API server does it, in place: a missing property gets
    its default; objects that are present (or defaulted) are defaulted inside; absent
    objects without a default stay absent."""
    if schema.get("type") == "object" and isinstance(value, dict):
        for key, prop in (schema.get("properties") or {}).items():
            if key not in value and "default" in prop:
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                apply_defaults(prop, value[key])
    elif schema.get("type") == "array" and isinstance(value, list):
        for item in value:
            apply_defaults(schema["items"], item)

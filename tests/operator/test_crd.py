"""The CRD YAML (the chart's file) and the operator's spec model agree; the CRD is where
the spec's defaults are written, once."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources
from typing import Any

import pytest

from healthrisk.contracts import CHAMPION_ALIAS, DEFAULT_DRIFT_THRESHOLD, REGISTERED_MODEL
from healthrisk.data.window import DateWindow, WindowRule
from healthrisk.federated.run_config import RunConfig
from healthrisk_operator import crd, spec
from healthrisk_operator.constants import CRD_NAME, GROUP, KIND, PLURAL, VERSION
from healthrisk_operator.spec import SpecError, parse_spec

from .helpers import CRD_PATH, FULL_SPEC, MINIMAL_SPEC, load_crd, schema_paths, value_paths, version_schema


def test_names_scope_and_subresources() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == CRD_NAME
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"]) == (KIND, PLURAL)
    assert names["shortNames"] == ["ft", "fedtrain"]
    assert names["categories"] == ["healthrisk"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["Phase", "Run", "Round", "Sites", "AUC", "Model", "Age"]
    assert all(c.get("priority") == 1 for c in columns[len(default) :])
    assert len(columns) > len(default)


def test_the_operator_reads_the_charts_crd() -> None:
    """The package's copy is the chart's file (a symlink that wheels resolve)."""
    assert crd.definition() == load_crd()
    assert crd.spec_schema() == version_schema(load_crd())["properties"]["spec"]
    assert (resources.files("healthrisk_operator") / crd.CRD_FILE).read_bytes() == CRD_PATH.read_bytes()


def test_spec_defaults_match_the_operator_model() -> None:
    defaulted = crd.with_defaults(MINIMAL_SPEC)
    assert defaulted != MINIMAL_SPEC  # the schema does default things
    assert parse_spec(defaulted) == parse_spec(MINIMAL_SPEC)
    with_drift = {**MINIMAL_SPEC, "retraining": {"drift": {}}}
    assert parse_spec(crd.with_defaults(with_drift)) == parse_spec(with_drift)


def _defaults(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaf path → default of every defaulted scalar in a schema."""
    found: dict[str, Any] = {}
    if schema.get("type") == "array":
        return _defaults(schema["items"], prefix + "[]")
    for key, prop in (schema.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if "properties" in prop or prop.get("type") == "array":
            found |= _defaults(prop, path)
        elif "default" in prop:
            found[path] = prop["default"]
    return found


def _typed_value(typed: Any, path: str) -> Any:
    for part in path.split("."):
        name = re.sub(r"(?<!^)([A-Z])", r"_\1", part.removesuffix("[]")).lower()
        typed = getattr(typed, name)
        if part.endswith("[]"):
            typed = typed[0]
    return typed


def test_every_crd_default_reaches_the_typed_spec_and_none_is_written_twice() -> None:
    defaults = _defaults(crd.spec_schema())
    assert "strategy.localEpochs" in defaults and "retraining.drift.interval" in defaults
    # Optional objects present, so that their own defaults apply.
    typed = parse_spec(
        {
            **MINIMAL_SPEC,
            "retraining": {"drift": {}, "performance": {}},
            "privacy": {"differentialPrivacy": {"noiseMultiplier": 1.0}},
        }
    )
    assert {path: _typed_value(typed, path) for path in defaults} == defaults
    for model in (getattr(spec, n) for n in dir(spec)):
        if dataclasses.is_dataclass(model) and model.__module__ == spec.__name__:
            for field in dataclasses.fields(model):
                assert field.default is dataclasses.MISSING, f"{model.__name__}.{field.name}"
                assert field.default_factory is dataclasses.MISSING, f"{model.__name__}.{field.name}"


def test_crd_defaults_are_the_platforms_defaults() -> None:
    """The same facts as the CLI and the Flower app use: a run started by the operator
    trains like one started by `healthrisk train`."""
    defaults = _defaults(crd.spec_schema())
    app = RunConfig(local_run_id="defaults")
    assert defaults["rounds"] == app.num_server_rounds
    assert defaults["strategy.name"] == app.strategy
    assert defaults["strategy.localEpochs"] == app.local_epochs
    assert defaults["strategy.proximalMu"] == app.proximal_mu
    assert defaults["model.registeredName"] == REGISTERED_MODEL == app.registered_model
    assert defaults["promotion.alias"] == CHAMPION_ALIAS
    assert defaults["retraining.drift.threshold"] == DEFAULT_DRIFT_THRESHOLD
    assert defaults["privacy.minRows"] == app.min_rows
    assert defaults["privacy.perSiteMetrics"] == app.per_site_metrics
    assert defaults["privacy.secureAggregation"] == app.secure_aggregation
    assert defaults["privacy.differentialPrivacy.clippingNorm"] == app.dp_clipping_norm
    assert defaults["privacy.differentialPrivacy.delta"] == app.dp_delta
    assert defaults["privacy.differentialPrivacy.clipping"] == app.dp_clipping
    assert defaults["security.insecure"] is False


def test_every_crd_field_is_read_by_the_operator() -> None:
    spec_schema = crd.spec_schema()
    free_maps = frozenset({"sites[].nodeSelector"})
    # dataWindow is {from, to} in FULL_SPEC; its other form, {last}, is read below
    assert value_paths(FULL_SPEC, free_maps=free_maps) | {"dataWindow.last"} == schema_paths(spec_schema)
    rolling = parse_spec({**MINIMAL_SPEC, "dataWindow": {"last": "28d"}})
    assert rolling.data_window == WindowRule(last_days=28) and rolling.data_window.rolling
    full = parse_spec(FULL_SPEC)
    minimal = parse_spec(MINIMAL_SPEC)
    for name in (
        "rounds",
        "strategy",
        "model",
        "promotion",
        "retraining",
        "run_policy",
        "security",
        "privacy",
        "suspend",
    ):
        assert getattr(full, name) != getattr(minimal, name), name
    site = full.sites[0]
    assert (site.data.path, site.data.sub_path, dict(site.node_selector), site.auth_secret_name) == (
        "/srv/data",
        "h1",
        {"site": "h1"},
        "h1-auth",
    )
    assert full.min_sites == 1 and minimal.min_sites == 2
    assert full.retraining.drift is not None and full.retraining.drift.interval_seconds == 5400
    assert full.retraining.performance is not None and full.retraining.performance.max_auc_drop == 0.05
    assert full.data_window == WindowRule(fixed=DateWindow.parse("2024-02-01..2024-02-10"))


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ({"interval": "90"}, "duration '90' is not like 30m"),
        ({"interval": "1.5h"}, "duration '1.5h' is not like 30m"),
        ({"interval": "30s"}, "shorter than the floor of 60 s"),
        ({"threshold": 0}, "drift threshold must be in (0, 1]"),
    ],
)
def test_drift_settings_follow_the_drift_rulebook(drift: dict[str, Any], message: str) -> None:
    """What the CRD lets through but the drift rulebook refuses is an invalid spec."""
    with pytest.raises(SpecError) as refused:
        parse_spec({**MINIMAL_SPEC, "retraining": {"drift": drift}})
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"last": "28d", "from": "2024-01-01", "to": "2024-01-02"}, "either {last: Nd} or {from, to}"),
        ({"from": "2024-01-02", "to": "2024-01-01"}, "is after .to"),
    ],
)
def test_a_data_window_is_rolling_or_fixed(window: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**MINIMAL_SPEC, "dataWindow": window})


def test_performance_monitoring_needs_drift_checks() -> None:
    with pytest.raises(SpecError, match=r"needs spec\.retraining\.drift"):
        parse_spec({**MINIMAL_SPEC, "retraining": {"performance": {}}})

"""The CRD YAML (the chart's file) and the operator's spec model agree."""

from __future__ import annotations

from healthrisk_operator.constants import CRD_NAME, GROUP, KIND, PLURAL, VERSION
from healthrisk_operator.spec import parse_spec

from .helpers import (
    FULL_SPEC,
    MINIMAL_SPEC,
    apply_defaults,
    load_crd,
    schema_paths,
    value_paths,
    version_schema,
)


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


def test_spec_defaults_match_the_operator_model() -> None:
    spec_schema = version_schema(load_crd())["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, MINIMAL_SPEC)
    assert defaulted != MINIMAL_SPEC  # the schema does default things
    assert parse_spec(defaulted) == parse_spec(MINIMAL_SPEC)
    with_drift = {**MINIMAL_SPEC, "retraining": {"drift": {}}}
    assert parse_spec(apply_defaults(spec_schema, with_drift)) == parse_spec(with_drift)


def test_every_crd_field_is_read_by_the_operator() -> None:
    spec_schema = version_schema(load_crd())["properties"]["spec"]
    free_maps = frozenset({"sites[].nodeSelector"})
    assert value_paths(FULL_SPEC, free_maps=free_maps) == schema_paths(spec_schema)
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

"""The routes of SPEC §5 against a real service: answers, validation, metrics, logs, auth."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from healthrisk.contracts import (
    ENV_INFERENCE_API_KEY,
    ENV_MODEL_NAME,
    ENV_MODEL_PROVENANCE,
    ENV_MODEL_URI,
    TAG_VAL_AUC,
)
from healthrisk.model_parameters import parse_parameters
from healthrisk.processes import ProcessGroup
from healthrisk.registry_rest import parameters_document
from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES, FEATURES
from tests.inference.helpers import (
    BasicDeployment,
    RawRequest,
    Service,
    metric_samples,
    post_raw,
    record,
    sample,
    start_service,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.integration

SEED_REQUEST = (
    '{"heart_rate": 75, "steps": 8000, "sleep_hours": 7.5, "respiratory_rate": 16,\n'
    ' "body_temp": 98.6, "pm25": 15, "pm10": 25, "o3": 0.05, "no2": 0.02,\n'
    ' "temperature": 72, "humidity": 50}'
)


def bad_fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]
    return {str(item["loc"][-1]) for item in body["detail"]}


def test_the_seed_request_works_unchanged(basic: BasicDeployment) -> None:
    with basic.service.client() as client:
        response = post_raw(client, "/predict", SEED_REQUEST)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"risk_score", "risk_level", "model_version"}
    assert 0 <= body["risk_score"] <= 1
    assert body["risk_level"] in {"low", "moderate", "high"}
    assert body["model_version"] == basic.version


def test_batch_matches_single_predictions(basic: BasicDeployment) -> None:
    rng = np.random.default_rng(1)
    records = [{f.name: float(rng.uniform(f.minimum, f.maximum)) for f in FEATURES} for _ in range(50)] + [
        EXAMPLE_RECORD
    ]
    with basic.service.client() as client:
        batch = client.post("/predict/batch", json={"records": records})
        assert batch.status_code == 200, batch.text
        singles = [client.post("/predict", json=r).json()["risk_score"] for r in records[:5]]
    predictions = batch.json()["predictions"]
    assert batch.json()["model_version"] == basic.version
    assert len(predictions) == len(records)
    assert [p["risk_score"] for p in predictions[:5]] == pytest.approx(singles, abs=1e-15)
    for p in predictions:
        expected = "low" if p["risk_score"] < 0.3 else "moderate" if p["risk_score"] < 0.6 else "high"
        assert p["risk_level"] == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({k: v for k, v in EXAMPLE_RECORD.items() if k != "steps"}, {"steps"}, id="missing"),
        pytest.param(record(shoe_size=44), {"shoe_size"}, id="extra"),
        pytest.param(record(heart_rate="75"), {"heart_rate"}, id="string"),
        pytest.param(record(o3=True), {"o3"}, id="boolean"),
        pytest.param(record(no2=None), {"no2"}, id="null"),
        pytest.param(record(heart_rate=251), {"heart_rate"}, id="above-limit"),
        pytest.param(record(temperature=-61, humidity=100.5), {"temperature", "humidity"}, id="two-out"),
    ],
)
def test_bad_records_are_refused_naming_each_field(
    basic: BasicDeployment, body: dict[str, object], expected: set[str]
) -> None:
    with basic.service.client() as client:
        assert bad_fields(client.post("/predict", json=body)) == expected


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_literals_are_refused(basic: BasicDeployment, literal: str) -> None:
    body = SEED_REQUEST.replace('"pm10": 25', f'"pm10": {literal}')
    with basic.service.client() as client:
        assert bad_fields(post_raw(client, "/predict", body)) == {"pm10"}


def test_a_bad_record_in_a_batch_is_named_with_its_index(basic: BasicDeployment) -> None:
    records = [EXAMPLE_RECORD, record(sleep_hours=25), EXAMPLE_RECORD]
    with basic.service.client() as client:
        response = client.post("/predict/batch", json={"records": records})
    assert response.status_code == 422
    assert [item["loc"] for item in response.json()["detail"]] == [["body", "records", 1, "sleep_hours"]]
    assert "records[1].sleep_hours" in response.json()["error"]


def test_oversize_batch_is_413(basic: BasicDeployment) -> None:
    with basic.service.client() as client:
        response = client.post("/predict/batch", json={"records": [EXAMPLE_RECORD] * 10_001})
    assert response.status_code == 413
    assert "10000" in response.json()["error"]


def test_model_describes_version_metrics_and_schema(basic: BasicDeployment) -> None:
    described = basic.service.model()
    assert described["ready"] is True
    assert (described["name"], described["version"]) == (basic.name, basic.version)
    assert described["source"] == f"models:/{basic.name}/{basic.version}"
    assert described["run_id"]
    assert described["tags"][TAG_VAL_AUC] == "0.8"
    assert described["feature_schema"]["required"] == list(FEATURE_NAMES)
    assert described["risk_levels"] == {"low": 0.0, "moderate": 0.3, "high": 0.6}
    assert described["registry"]["reachable"] is True


def test_openapi_documents_the_example_record(basic: BasicDeployment) -> None:
    with basic.service.client() as client:
        spec = client.get("/openapi.json").json()
    record_schema = spec["components"]["schemas"]["PatientRecord"]
    assert record_schema["examples"] == [EXAMPLE_RECORD]
    assert record_schema["properties"]["heart_rate"]["minimum"] == 20
    assert record_schema["additionalProperties"] is False
    for path in ("/predict", "/predict/batch", "/health", "/ready", "/readyz", "/model"):
        assert path in spec["paths"]
    assert "/metrics" not in spec["paths"]  # a port of its own
    assert "/v2/models/{model_name}/infer" in spec["paths"]


def test_health_and_readiness(basic: BasicDeployment) -> None:
    with basic.service.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"ready": True, "model_version": basic.version}
        assert client.get("/readyz").json() == {
            "ready": True,
            "state": "serving",
            "detail": f"serving {basic.name} version {basic.version}",
            "model_version": basic.version,
        }
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get(f"/v2/models/{basic.name}/ready").json() == {"ready": True}


def test_open_inference_protocol_v2(basic: BasicDeployment) -> None:
    rows = [[EXAMPLE_RECORD[n] for n in FEATURE_NAMES], [record(pm25=500)[n] for n in FEATURE_NAMES]]
    with basic.service.client() as client:
        metadata = client.get(f"/v2/models/{basic.name}").json()
        assert metadata["versions"] == [basic.version]
        assert [i["name"] for i in metadata["inputs"]] == list(FEATURE_NAMES)
        matrix = client.post(
            f"/v2/models/{basic.name}/infer",
            json={
                "id": "r1",
                "inputs": [{"name": "input-0", "shape": [2, 11], "datatype": "FP64", "data": rows}],
            },
        )
        assert matrix.status_code == 200, matrix.text
        per_feature = client.post(
            f"/v2/models/{basic.name}/infer",
            json={
                "inputs": [
                    {"name": n, "shape": [2], "datatype": "FP32", "data": [rows[0][j], rows[1][j]]}
                    for j, n in enumerate(FEATURE_NAMES)
                ]
            },
        ).json()
        batch = client.post("/predict/batch", json={"records": [EXAMPLE_RECORD, record(pm25=500)]}).json()
        out_of_range = client.post(
            f"/v2/models/{basic.name}/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 11], "datatype": "FP64", "data": [*rows[0][:-1], 101]}]
            },
        )
        unknown = client.post("/v2/models/nope/infer", json={"inputs": per_feature["outputs"][:1]})
    body = matrix.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (basic.name, basic.version, "r1")
    scores = {o["name"]: o for o in body["outputs"]}
    expected = [p["risk_score"] for p in batch["predictions"]]
    assert scores["risk_score"]["data"] == pytest.approx(expected, abs=1e-12)
    assert scores["risk_level"]["data"] == [p["risk_level"] for p in batch["predictions"]]
    assert per_feature["outputs"][0]["data"] == pytest.approx(expected, abs=1e-12)
    assert out_of_range.status_code == 422
    assert out_of_range.json()["detail"][0]["loc"][-1] == "humidity"
    assert unknown.status_code == 404


def test_metrics_have_the_fixed_names(basic: BasicDeployment) -> None:
    before = metric_samples(basic.service)
    with basic.service.client() as client:
        for _ in range(3):
            assert client.post("/predict", json=EXAMPLE_RECORD).status_code == 200
        assert client.post("/predict/batch", json={"records": [EXAMPLE_RECORD] * 4}).status_code == 200
        assert client.post("/predict", json=record(heart_rate=999)).status_code == 422
    after = metric_samples(basic.service)
    v = basic.version

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("predictions_total", model_version=v, endpoint="predict", outcome="success") == 3
    assert delta("predictions_total", model_version=v, endpoint="predict_batch", outcome="success") == 1
    assert delta("predictions_total", model_version="none", endpoint="predict", outcome="invalid") == 1
    assert delta("prediction_latency_seconds_count", endpoint="predict") == 4
    assert (
        "prediction_latency_seconds_bucket",
        frozenset({("endpoint", "predict"), ("le", "0.0005")}),
    ) in after
    assert delta("prediction_risk_score_count", model_version=v) == 7
    assert sample(after, "model_info", name=basic.name, version=v, alias="") == 1
    assert sample(after, "model_reloads_total") == 1
    assert sample(after, "model_registry_reachable") == 1


def test_no_feature_values_in_the_logs_or_errors(basic: BasicDeployment) -> None:
    marker = 123.456789
    with basic.service.client() as client:
        client.post("/predict", json=record(heart_rate=marker))
        refused = client.post("/predict", json=record(heart_rate=-marker))
        client.post("/predict/batch", json={"records": [record(steps=marker)]})
    assert refused.status_code == 422 and "123.456" not in refused.text  # not echoed back either
    log = basic.service.log()
    assert "POST /predict" in log  # the access log is on, and still holds no values
    assert "123.456" not in log


API_KEY = "s3cret"


@pytest.fixture(scope="module")
def keyed_local(
    basic: BasicDeployment, mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A second deployment: the basic version copied to a local MODEL_URI, behind an API key.

    A local directory has no tags to verify: it is served only with provenance off.
    """
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    state = tmp_path_factory.mktemp("keyed-local")
    local = mlflow.artifacts.download_artifacts(
        f"models:/{basic.name}/{basic.version}", dst_path=str(state / "m")
    )
    with ProcessGroup(state / "logs") as group:
        service = start_service(
            group,
            {
                ENV_MODEL_URI: local,
                ENV_MODEL_NAME: basic.name,
                ENV_INFERENCE_API_KEY: API_KEY,
                ENV_MODEL_PROVENANCE: "off",
            },
        )
        wait_ready(service)
        yield service


def test_api_key_is_required_when_configured(keyed_local: Service, basic: BasicDeployment) -> None:
    with keyed_local.client() as anonymous:
        assert anonymous.post("/predict", json=EXAMPLE_RECORD).status_code == 401
        assert anonymous.post("/predict/batch", json={"records": [EXAMPLE_RECORD]}).status_code == 401
        assert anonymous.get("/model").status_code == 401
        assert anonymous.post(f"/v2/models/{basic.name}/infer", json={"inputs": []}).status_code == 401
        assert anonymous.get(f"/v2/models/{basic.name}").status_code == 401
        assert anonymous.get("/health").status_code == 200
    with keyed_local.client(**{"X-API-Key": "wrong"}) as wrong:
        assert wrong.post("/predict", json=EXAMPLE_RECORD).status_code == 401
    with keyed_local.client(**{"X-API-Key": API_KEY}) as keyed:
        assert keyed.post("/predict", json=EXAMPLE_RECORD).status_code == 200
    with keyed_local.client(Authorization=f"Bearer {API_KEY}") as bearer:
        assert bearer.post("/predict", json=EXAMPLE_RECORD).status_code == 200
    unauthorized = sample(
        metric_samples(keyed_local),
        "predictions_total",
        model_version="none",
        endpoint="predict",
        outcome="unauthorized",
    )
    assert unauthorized == 2


def test_a_local_model_uri_is_served_without_the_registry(
    keyed_local: Service, basic: BasicDeployment
) -> None:
    with keyed_local.client(**{"X-API-Key": API_KEY}) as client, basic.service.client() as registry_served:
        local_answer = client.post("/predict", json=EXAMPLE_RECORD).json()
        registry_answer = registry_served.post("/predict", json=EXAMPLE_RECORD).json()
    described = keyed_local.model(**{"X-API-Key": API_KEY})
    assert local_answer["model_version"] == "local"
    assert local_answer["risk_score"] == registry_answer["risk_score"]
    assert (described["version"], described["source"]) == ("local", described["reference"])
    assert described["registry"]["reachable"] is None  # never asked


def test_explanation_sums_with_the_intercept_to_the_logit(keyed_local: Service) -> None:
    with keyed_local.client(**{"X-API-Key": API_KEY}) as client:
        body = client.post(
            "/predict", params={"explain": "true"}, json=record(pm25=400, heart_rate=130)
        ).json()
    explanation = body["explanation"]
    assert list(explanation["contributions"]) == list(FEATURE_NAMES)
    logit = explanation["intercept"] + sum(explanation["contributions"].values())
    assert logit == pytest.approx(explanation["logit"], abs=1e-12)
    assert logit == pytest.approx(math.log(body["risk_score"] / (1 - body["risk_score"])), abs=1e-9)


def test_nobody_unauthenticated_learns_the_coefficients(
    basic: BasicDeployment, keyed_local: Service, mlflow_uri: str
) -> None:
    """Explanations (coefficient × standardized value) need an API key; /model never has them."""
    parameters = parse_parameters(parameters_document(mlflow_uri, basic.name, basic.version, timeout=10))
    coefficients = [repr(c) for c in (*parameters.coef.tolist(), parameters.intercept)]
    with basic.service.client() as open_service:  # no key configured: nobody is authenticated
        single = open_service.post("/predict", params={"explain": "true"}, json=EXAMPLE_RECORD)
        batch = open_service.post(
            "/predict/batch", params={"explain": "true"}, json={"records": [EXAMPLE_RECORD]}
        )
        assert open_service.post("/predict", json=EXAMPLE_RECORD).status_code == 200
    for refused in (single, batch):
        assert refused.status_code == 403 and "API key" in refused.json()["error"]
    described = [basic.service.model(), keyed_local.model(**{"X-API-Key": API_KEY})]
    assert all(c not in json.dumps(d) for c in coefficients for d in described)


def test_metrics_are_served_on_their_own_port_only(basic: BasicDeployment) -> None:
    with basic.service.client() as client:
        assert client.get("/metrics").status_code == 404
    scraped = httpx.get(basic.service.metrics_url, timeout=10)
    assert scraped.status_code == 200 and "prediction_risk_score" in scraped.text


def test_the_size_limit_holds_for_a_chunked_body(basic: BasicDeployment) -> None:
    """No Content-Length to refuse by: the body is counted as it arrives (default limit)."""
    before = metric_samples(basic.service)
    upload = RawRequest(basic.service, "/predict/batch")
    for _ in range(21):  # 21 MiB of JSON whitespace, over the ~20 MB of MAX_BATCH=10000
        upload.chunk(b" " * (1 << 20))
    upload.end()
    assert upload.status() == 413
    upload.close()
    after = metric_samples(basic.service)
    labels = {"model_version": "none", "endpoint": "predict_batch", "outcome": "too_large"}
    assert sample(after, "predictions_total", **labels) - sample(before, "predictions_total", **labels) == 1


def test_no_byte_of_an_unauthenticated_body_is_read(keyed_local: Service, basic: BasicDeployment) -> None:
    """Each route answers 401 while the body has not even finished arriving."""
    for path in ("/predict", "/predict/batch", f"/v2/models/{basic.name}/infer"):
        anonymous = RawRequest(keyed_local, path)
        anonymous.chunk(b'{"inputs": [')
        assert anonymous.status() == 401, path
        anonymous.close()
        keyed = RawRequest(keyed_local, path, {"X-API-Key": API_KEY})
        keyed.chunk(b'{"inputs": [')
        assert keyed.status(timeout=1) is None, path  # waits for the rest of the body
        keyed.close()


def test_requests_beyond_the_concurrency_cap_get_503(basic: BasicDeployment) -> None:
    """The default cap (32): bodies that never finish arriving hold their places, then free them."""
    held = [RawRequest(basic.service, "/predict") for _ in range(32)]
    for request in held:
        request.chunk(b"{")
    with basic.service.client() as client:
        wait_until(
            lambda: client.post("/predict", json=EXAMPLE_RECORD).status_code == 503,
            timeout=10,
            what="the 33rd request to be refused",
        )
        refused = client.post("/predict", json=EXAMPLE_RECORD)
        assert refused.headers["retry-after"] == "1" and "in flight" in refused.json()["error"]
        for request in held:
            request.close()
        wait_until(
            lambda: client.post("/predict", json=EXAMPLE_RECORD).status_code == 200,
            timeout=10,
            what="the places to be freed",
        )
    assert sample(metric_samples(basic.service), "predictions_total", model_version="none",
                  endpoint="predict", outcome="overloaded") >= 2  # fmt: skip


FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,  # "schema-valid request rejected"
    negative_data_rejection,  # "schema-violating request accepted"
]


def sizes_agree(case: schemathesis.Case) -> schemathesis.Case:
    """Give a generated V2 request the one property of its body JSON Schema cannot state.

    Its document says it (V2InferenceRequest): an [N, 11] tensor's shape[0] is its number
    of rows, and the per-feature tensors all hold N values. Nothing else is changed.
    """
    inputs = case.body.get("inputs") if isinstance(case.body, dict) else None
    if not isinstance(inputs, list):
        return case
    n = min(len(tensor["data"]) for tensor in inputs)
    for tensor in inputs:
        tensor["data"] = tensor["data"][:n]
        tensor["shape"][0] = n
    return case


@pytest.fixture(params=["open", "keyed"])
def fuzzed(request: pytest.FixtureRequest) -> tuple[Service, dict[str, str]]:
    """Both ways the document differs: without an API key (explanations refused) and with one."""
    if request.param == "open":
        return request.getfixturevalue("basic").service, {}
    return request.getfixturevalue("keyed_local"), {"X-API-Key": API_KEY}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_the_openapi_document_matches_what_the_service_accepts(
    fuzzed: tuple[Service, dict[str, str]], mode: GenerationMode
) -> None:
    """Schemathesis: schema-valid requests accepted, schema-violating ones refused, no 5xx, and
    every answer as documented. (Driven by hand rather than with schemathesis' pytest plugin,
    whose lazy fixture loading does not work with pytest 9.)"""
    service, headers = fuzzed
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operations.append(result.ok())
    assert len(operations) == 11

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (
            operation.body or operation.path_parameters or operation.query
        ):
            continue  # nothing in the request to get wrong

        strategy = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE:
            strategy = strategy.map(sizes_agree)

        @given(case=strategy)
        # derandomize: the same cases on every run, so that CI cannot turn red by luck.
        @settings(
            max_examples=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=FUZZ_CHECKS)

        call()

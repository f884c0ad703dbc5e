"""The chart without a cluster: lint, schema, and what every rendering must hold."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    APP_NAME,
    CHAMPION_ALIAS,
    ENV_INFERENCE_API_KEY,
    ENV_MODEL_VERSION,
    INFERENCE_METRICS_PORT,
    INFERENCE_PORT,
    LABEL_APP_NAME,
    LABEL_COMPONENT,
    LABEL_INFERENCE_CLIENT,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_SERVED_VERSION,
    MLFLOW_PORT,
    OPERATOR_METRICS_PORT,
    ROLE_DRIFT,
    ROLE_SUBMIT,
    ROLE_SUPERLINK,
    ROLE_SUPERNODE,
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_FLEET_PORT,
)
from healthrisk_operator.constants import CRD_NAME
from tests.chart.values import VALUE_SETS, pod_specs, render, with_namespace
from tests.kit.commands import run
from tests.kit.tools import CHART

STANDARD_LABELS = (
    LABEL_APP_NAME,
    "app.kubernetes.io/instance",
    LABEL_COMPONENT,
    "app.kubernetes.io/version",
    LABEL_MANAGED_BY,
    "helm.sh/chart",
)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict(helm: str, value_set: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(with_namespace(VALUE_SETS[value_set], "health-risk-mlops")))
    out = run([helm, "lint", "--strict", str(CHART), "-f", str(values)])
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("inference.modelVersion=not a version", "modelVersion"),
        ("operator.logFormat=xml", "logFormat"),
        ("mlflow.enabled=false", "externalTrackingUri"),
        ("inference.autoscaling.targetCPUUtilizationPercentage=0", "targetCPUUtilizationPercentage"),
        ("operator.watchNamespace=typo", "watchNamespace"),
        ("podSecurity.runAsUser=0", "runAsUser"),
    ],
)
def test_schema_rejects_bad_values(helm: str, setting: str, complaint: str) -> None:
    proc = run([helm, "template", "x", str(CHART), "--set", setting], check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert complaint in proc.stderr, proc.stderr


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment right above it, or its parent block has one."""
    documented_blocks: list[tuple[int, bool]] = []  # (indent, documented) of the open parents
    undocumented = []
    previous = ""
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), start=1):
        match = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if match:
            indent = len(match.group(1))
            while documented_blocks and documented_blocks[-1][0] >= indent:
                documented_blocks.pop()
            parent_documented = bool(documented_blocks) and documented_blocks[-1][1]
            documented = previous.lstrip().startswith("#") or parent_documented
            if not documented:
                undocumented.append(f"{number}: {line.strip()}")
            documented_blocks.append((indent, previous.lstrip().startswith("#")))
        if line.strip():
            previous = line
    assert not undocumented, "values without a comment:\n" + "\n".join(undocumented)


def test_pods_are_locked_down(rendered: list[dict[str, Any]]) -> None:
    specs = dict(pod_specs(rendered))
    assert specs, "no workloads rendered"
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"].get("limits", {}).get("memory"), f"{name}: no memory limit"
        ours = all("health-risk/" in c["image"] for c in spec["containers"])
        if ours and not name.startswith("Pod/"):
            mounts = {m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


def test_standard_labels_everywhere(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        labels = doc["metadata"].get("labels", {})
        missing = [key for key in STANDARD_LABELS if key not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"


def test_operator_is_recreated_probed_and_told_its_images(helm: str, tmp_path: Path) -> None:
    docs = render(
        helm,
        {
            "operator": {
                "runPods": {"image": {"repository": "reg/flower", "tag": "1.2.3"}, "pullPolicy": "Never"}
            }
        },
        tmp_path,
    )
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HEALTHRISK_OPERATOR_FLOWER_IMAGE"] == "reg/flower:1.2.3"
    assert env["HEALTHRISK_OPERATOR_IMAGE_PULL_POLICY"] == "Never"
    assert (
        env["HEALTHRISK_OPERATOR_TRACKING_URI"]
        == f"http://health-risk-mlflow.health-risk-mlops.svc:{MLFLOW_PORT}"
    )
    assert "--namespace=health-risk-mlops" in container["args"]


def is_pod_security_hook(doc: dict[str, Any]) -> bool:
    return bool(doc["metadata"].get("labels", {}).get(LABEL_COMPONENT) == "pod-security")


def test_operator_rbac_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if doc["kind"] not in ("Role", "ClusterRole") or is_pod_security_hook(doc):
            continue
        for rule in doc["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], doc["metadata"]["name"]
            if "secrets" in rule["resources"]:  # Flower key material: made, never read back
                assert set(rule["verbs"]) <= {"create", "delete"}, rule
            assert "namespaces" not in rule["resources"], "kopf runs without namespace scanning"


def test_operator_policy_is_the_releases_own_objects_plus_what_values_add(helm: str, tmp_path: Path) -> None:
    def policy(values: dict[str, Any]) -> tuple[dict[str, Any], list[list[str]]]:
        docs = render(helm, values, tmp_path)
        operator = next(d for d in kind_of(docs, "Deployment") if d["metadata"]["name"].endswith("-operator"))
        container = operator["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        patchable = [
            rule.get("resourceNames")
            for role in kind_of(docs, "Role")
            for rule in role["rules"]
            if "deployments" in rule["resources"] and "patch" in rule["verbs"]
        ]
        return env, patchable

    env, patchable = policy({})
    assert yaml.safe_load(env["HEALTHRISK_OPERATOR_ALLOWED_TRACKING_URIS"]) == []
    # The operator's own per-run certificates and site keys are never named in a spec.
    assert yaml.safe_load(env["HEALTHRISK_OPERATOR_MOUNTABLE_SECRETS"]) == []
    assert yaml.safe_load(env["HEALTHRISK_OPERATOR_INFERENCE_DEPLOYMENTS"]) == [f"{APP_NAME}-inference"]
    assert patchable == [[f"{APP_NAME}-inference"]], "patch only with resourceNames, only the release's"

    env, patchable = policy({
        "operator": {"policy": {
            "allowedTrackingUris": ["https://mlflow.example.org"],
            "mountableSecrets": ["site-a-key"],
            "inferenceDeployments": ["scoring"],
        }},
    })  # fmt: skip
    assert yaml.safe_load(env["HEALTHRISK_OPERATOR_ALLOWED_TRACKING_URIS"]) == ["https://mlflow.example.org"]
    secrets = yaml.safe_load(env["HEALTHRISK_OPERATOR_MOUNTABLE_SECRETS"])
    assert secrets == ["site-a-key"]
    assert patchable == [[f"{APP_NAME}-inference", "scoring"]]


def test_operator_is_namespaced_unless_told_otherwise(helm: str, tmp_path: Path) -> None:
    kinds = {d["kind"] for d in render(helm, {}, tmp_path) if not is_pod_security_hook(d)}
    assert "Role" in kinds
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "no cluster-wide grant by default"


def test_restricted_pod_security_is_enforced_by_a_hook_on_every_managed_namespace(
    helm: str, tmp_path: Path
) -> None:
    docs = render(helm, {"operator": {"watchNamespaces": ["site-a"]}}, tmp_path)
    hook = [d for d in docs if is_pod_security_hook(d)]
    assert sorted(d["kind"] for d in hook) == ["ClusterRole", "ClusterRoleBinding", "Job", "ServiceAccount"]
    for doc in hook:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade", doc["metadata"]["name"]
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"], "gone once it ran"
    (role,) = (d for d in hook if d["kind"] == "ClusterRole")
    assert role["rules"] == [{
        "apiGroups": [""], "resources": ["namespaces"],
        "resourceNames": ["health-risk-mlops", "site-a"], "verbs": ["get", "patch"],
    }], "only the namespaces the release manages, only get and patch"  # fmt: skip
    (job,) = (d for d in hook if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    labels, *namespaces = container["args"][1:]
    assert yaml.safe_load(labels)["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespaces == ["health-risk-mlops", "site-a"]

    off = render(helm, {"podSecurity": {"enforceRestricted": False}}, tmp_path)
    assert not [d for d in off if is_pod_security_hook(d)]


def test_mlflow_allows_its_service_names_and_keeps_its_volume(helm: str, tmp_path: Path) -> None:
    docs = render(helm, {}, tmp_path)
    mlflow = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "health-risk-mlflow"
    )
    args = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert f"health-risk-mlflow:{MLFLOW_PORT}" in allowed
    assert f"health-risk-mlflow.health-risk-mlops.svc:{MLFLOW_PORT}" in allowed
    assert mlflow["spec"]["strategy"]["type"] == "Recreate"
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def kind_of(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]


def test_the_crd_is_a_kept_template_of_the_one_crd_file(helm: str, tmp_path: Path) -> None:
    """Helm upgrades a templated CRD (never one under crds/); its spec is the file the
    operator packages, and a change to that file restarts the operator."""
    crd_file = CHART / "files" / f"{CRD_NAME}.yaml"
    docs = render(helm, {}, tmp_path)
    (crd,) = kind_of(docs, "CustomResourceDefinition")
    assert crd["spec"] == yaml.safe_load(crd_file.read_text())["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert not (CHART / "crds").exists(), "Helm would install it once and never upgrade it"
    operator = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    checksum = operator["spec"]["template"]["metadata"]["annotations"]["checksum/crd"]
    assert checksum == hashlib.sha256(crd_file.read_bytes()).hexdigest()

    (dropped,) = [
        d
        for d in render(helm, {"crds": {"keep": False}}, tmp_path)
        if d["kind"] == "CustomResourceDefinition"
    ]
    assert "helm.sh/resource-policy" not in (dropped["metadata"].get("annotations") or {})
    assert not [
        d
        for d in render(helm, {"crds": {"enabled": False}}, tmp_path)
        if d["kind"] == "CustomResourceDefinition"
    ]


def test_upgrades_leave_the_operators_version_pin_alone(helm: str, tmp_path: Path) -> None:
    """The operator pins the served version in fields this chart never renders: an env entry
    MODEL_VERSION (which wins over the ConfigMap's) and the pod template's annotation. So a
    `helm upgrade` or `helm rollback` neither resets them nor conflicts over them."""
    docs = render(helm, {"inference": {"apiKey": {"enabled": True}}}, tmp_path)
    inference = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-inference")
    )
    template = inference["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert ENV_MODEL_VERSION not in {e["name"] for e in container.get("env") or []}
    assert ANNOTATION_MODEL_VERSION not in template["metadata"]["annotations"]
    assert LABEL_SERVED_VERSION not in inference["metadata"]["labels"]
    (source,) = container["envFrom"]
    config = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["configMapRef"]["name"]
    )
    assert config["data"][ENV_MODEL_VERSION] == CHAMPION_ALIAS
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", "ready before the first promotion"
    assert template["metadata"]["annotations"]["checksum/config"], "a settings change rolls the pods"
    assert inference["spec"]["replicas"] == 1


def test_uninstall_deletes_the_trainings_first_with_the_operators_grants(helm: str, tmp_path: Path) -> None:
    """`helm uninstall` runs the pre-delete Job before anything of the release goes: it
    deletes the trainings of the operator's namespaces, as the operator's ServiceAccount."""
    docs = render(helm, {"operator": {"watchNamespaces": ["site-a"]}}, tmp_path)
    (job,) = kind_of(docs, "Job", "-uninstall")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    spec = job["spec"]["template"]["spec"]
    (account,) = kind_of(docs, "ServiceAccount", "-operator")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    (container,) = spec["containers"]
    assert container["command"][-1] == "healthrisk_operator.uninstall"
    (operator,) = kind_of(docs, "Deployment", "-operator")
    namespaces = {
        a for a in operator["spec"]["template"]["spec"]["containers"][0]["args"] if "--namespace=" in a
    }
    # the release namespace is always served, watchNamespaces come on top of it
    served = {"--namespace=site-a", "--namespace=health-risk-mlops"}
    assert namespaces == {a for a in container["args"] if "--namespace=" in a} == served
    granted = {
        verb
        for role in kind_of(docs, "Role")
        for rule in role["rules"]
        if "federatedtrainings" in rule["resources"]
        for verb in rule["verbs"]
    }
    assert "delete" in granted

    kept = render(helm, {"operator": {"deleteTrainingsOnUninstall": False}}, tmp_path)
    assert not kind_of(kept, "Job", "-uninstall")


def test_helm_test_pods_check_the_api_and_mlflow(helm: str, tmp_path: Path) -> None:
    docs = render(helm, {"inference": {"apiKey": {"enabled": True}}}, tmp_path)
    tests = {
        d["metadata"]["name"]: d
        for d in docs
        if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    }
    assert set(tests) == {"health-risk-test-inference", "health-risk-test-mlflow"}
    script = tests["health-risk-test-inference"]["spec"]["containers"][0]["args"][0]
    for call in ('"/readyz"', '"/predict"', '"/metrics"'):
        assert call in script
    env = tests["health-risk-test-inference"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "health-risk-inference-api-key"


def test_external_backends_need_no_volume(helm: str, tmp_path: Path) -> None:
    docs = render(helm, VALUE_SETS["production"], tmp_path)
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    mlflow = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "health-risk-mlflow"
    )
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in container["args"]
    assert "--artifacts-destination=s3://models/mlflow" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-s3"
    assert container["image"].startswith("registry.hospital.example/health-risk/mlflow:")


def policies(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rendered NetworkPolicies by namespace/name, release prefix dropped."""
    return {
        f"{d['metadata']['namespace']}/{d['metadata']['name'].removeprefix(APP_NAME + '-')}": d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In) selects these labels."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def ports(rules: list[dict[str, Any]]) -> list[Any]:
    return [p["port"] for rule in rules for p in rule["ports"]]


def test_every_managed_namespace_is_closed_but_for_dns(helm: str, tmp_path: Path) -> None:
    found = policies(render(helm, {"operator": {"watchNamespaces": ["site-a"]}}, tmp_path))
    for namespace in ("health-risk-mlops", "site-a"):
        deny = found[f"{namespace}/default-deny"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, "nothing in, nothing out"
        (dns,) = found[f"{namespace}/dns"]["egress"]
        assert found[f"{namespace}/dns"]["podSelector"] == {}
        assert dns["to"] == [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }] and ports([dns]) == [53, 53]  # fmt: skip
    assert not [
        d
        for d in render(helm, {"networkPolicy": {"enabled": False}}, tmp_path)
        if d["kind"] == "NetworkPolicy"
    ]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_pod_the_chart_runs_has_a_policy_that_opens_its_flows(
    helm: str, value_set: str, tmp_path: Path
) -> None:
    """Under the default deny a component without a policy of its own could do nothing: each
    workload the chart renders (and each kind of run pod but the site-listing one, which
    needs no network) is selected by a policy that opens some flow in or out."""
    docs = render(helm, with_namespace(VALUE_SETS[value_set], "health-risk-mlops"), tmp_path)
    found = {k: v for k, v in policies(docs).items() if not k.endswith(("/default-deny", "/dns"))}
    if not found:
        return  # a value set with networkPolicy.enabled=false
    workloads = {
        d["metadata"]["name"]: (d["spec"]["template"] if d["kind"] != "Pod" else d)["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "Job", "Pod")
    }
    run_pods = {
        f"run pod {role}": {LABEL_ROLE: role}
        for role in (ROLE_SUPERLINK, ROLE_SUPERNODE, ROLE_SUBMIT, ROLE_DRIFT)
    }
    for name, labels in {**workloads, **run_pods}.items():
        opened = [
            p
            for p in found.values()
            if selects(p["podSelector"], labels) and (p.get("egress") or p.get("ingress"))
        ]
        assert opened, f"{name} ({labels}) is selected by no policy that opens a flow"


def test_run_pods_reach_only_their_flows(helm: str, tmp_path: Path) -> None:
    found = policies(render(helm, {}, tmp_path))
    ns = "health-risk-mlops"
    superlink = found[f"{ns}/superlink"]
    assert superlink["podSelector"] == {"matchLabels": {LABEL_ROLE: ROLE_SUPERLINK}}
    # Two doors, both the proxy's: Fleet for SuperNodes only, Control for the submitter only.
    fleet, control = superlink["ingress"]
    assert fleet["from"] == [{"podSelector": {"matchLabels": {LABEL_ROLE: ROLE_SUPERNODE}}}]
    assert ports([fleet]) == [SUPERLINK_FLEET_PORT]
    assert control["from"] == [{"podSelector": {"matchLabels": {LABEL_ROLE: ROLE_SUBMIT}}}]
    assert ports([control]) == [SUPERLINK_CONTROL_PORT]
    assert ports(superlink["egress"]) == [MLFLOW_PORT], "its ServerApp logs to MLflow"
    # A site's pods: SuperNodes (and the submitter) reach a SuperLink and nothing else.
    clients = found[f"{ns}/superlink-clients"]
    (egress,) = clients["egress"]
    assert egress["to"] == [{"podSelector": {"matchLabels": {LABEL_ROLE: ROLE_SUPERLINK}}}]
    assert ports([egress]) == [SUPERLINK_FLEET_PORT, SUPERLINK_CONTROL_PORT] and not clients.get("ingress")
    assert ports(found[f"{ns}/drift"]["egress"]) == [MLFLOW_PORT]
    mlflow_peers = str(found[f"{ns}/mlflow"]["ingress"])
    assert ROLE_SUPERNODE not in mlflow_peers and ROLE_SUBMIT not in mlflow_peers, (
        "site data stays at the site"
    )
    assert "egress" not in found[f"{ns}/mlflow"], "MLflow connects nowhere unless mlflowEgress says so"


def test_the_inference_api_is_closed_but_to_named_callers(helm: str, tmp_path: Path) -> None:
    ns = "health-risk-mlops"
    api, *metrics = policies(render(helm, {}, tmp_path))[f"{ns}/inference"]["ingress"]
    assert not metrics, "without a Prometheus, nobody scrapes the metrics port"
    assert api["from"][1:] == [{"podSelector": {"matchLabels": {LABEL_INFERENCE_CLIENT: "true"}}}]
    assert api["from"][0]["podSelector"]["matchLabels"][LABEL_COMPONENT] == "test"
    clients = policies(render(helm, {}, tmp_path))[f"{ns}/inference-clients"]
    assert clients["podSelector"] == {"matchLabels": {LABEL_INFERENCE_CLIENT: "true"}}
    assert ports(clients["egress"]) == [INFERENCE_PORT], "the labelled pods' way out, to the API only"
    closed = render(helm, {"networkPolicy": {"inferenceFrom": []}}, tmp_path)
    (api,) = policies(closed)[f"{ns}/inference"]["ingress"]
    assert len(api["from"]) == 1, "empty inferenceFrom: nobody but helm test"
    scraped = policies(render(helm, {"metrics": {"prometheus": {"enabled": True}}}, tmp_path))
    prometheus = scraped[f"{ns}/prometheus"]
    assert ports(prometheus["egress"]) == [INFERENCE_METRICS_PORT, OPERATOR_METRICS_PORT, 443, 6443]
    assert not prometheus.get("ingress"), "its UI is reached by port-forward only"
    (_, metrics_rule) = scraped[f"{ns}/inference"]["ingress"]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert scraped[f"{ns}/test"]["egress"][0]["ports"] == [{"port": INFERENCE_PORT, "protocol": "TCP"}]


def test_the_api_server_rule_names_given_addresses_or_any_on_its_ports(helm: str, tmp_path: Path) -> None:
    ns = "health-risk-mlops"
    api = policies(render(helm, {}, tmp_path))[f"{ns}/operator"]["egress"][0]
    assert api["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}] and ports([api]) == [443, 6443]
    given = {"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]}}}
    found = policies(render(helm, given, tmp_path))
    for name in ("operator", "hooks"):
        api = found[f"{ns}/{name}"]["egress"][0]
        assert api == {
            "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "ports": [{"port": 6443, "protocol": "TCP"}],
        }


def test_an_external_mlflow_needs_rules_that_reach_it(helm: str, tmp_path: Path) -> None:
    external = {
        "mlflow": {"enabled": False, "externalTrackingUri": f"http://mlflow.shared.svc:{MLFLOW_PORT}"}
    }
    (values_file := tmp_path / "external.yaml").write_text(yaml.safe_dump(external))
    refused = run([helm, "template", APP_NAME, str(CHART), "-f", str(values_file)], check=False)
    assert refused.returncode != 0 and "networkPolicy.externalMlflow" in refused.stderr, refused.stderr
    rule = {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"port": MLFLOW_PORT, "protocol": "TCP"}]}
    found = policies(render(helm, {**external, "networkPolicy": {"externalMlflow": [rule]}}, tmp_path))
    for name in ("superlink", "drift", "inference", "test"):
        assert rule in found[f"health-risk-mlops/{name}"]["egress"], name


def test_grafana_dashboard_queries_the_service_metrics(helm: str, tmp_path: Path) -> None:
    import json

    docs = render(helm, {}, tmp_path)
    configmap = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(next(iter(configmap["data"].values())))
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "predictions_total",
        "prediction_latency_seconds_bucket",
        "prediction_risk_score_bucket",
        "model_info",
        "model_reloads_total",
    ):
        assert metric in exprs, metric


def test_service_monitor_for_an_existing_prometheus_operator(helm: str, tmp_path: Path) -> None:
    # rendering only: the API server here has no monitoring.coreos.com CRDs to validate against
    monitor_values = {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}
    values = {"metrics": {"serviceMonitor": monitor_values}}
    docs = render(helm, values, tmp_path)
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceMonitor"}
    assert sorted(monitors) == ["health-risk-inference", "health-risk-operator"]
    monitor = monitors["health-risk-inference"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    # The Services it selects: only the headless one has the metrics port, the API's has none.
    services = [
        d
        for d in docs
        if d["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
    ]
    ports = {d["metadata"]["name"]: {p["name"] for p in d["spec"]["ports"]} for d in services}
    assert ports == {"health-risk-inference": {"http"}, "health-risk-inference-pods": {"metrics"}}
    operator = monitors["health-risk-operator"]
    assert operator["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert operator["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    service = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "health-risk-operator"
    )
    assert operator["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_the_api_key_is_on_by_default_and_notes_show_how_to_read_it(helm: str, tmp_path: Path) -> None:
    """The NOTES' command reads the Secret and key the inference pods take INFERENCE_API_KEY from."""
    release, namespace = "notes", "notes-ns"
    docs = render(helm, {}, tmp_path, namespace=namespace, release=release)
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"][LABEL_COMPONENT] == "inference"
    ]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    reference = env[ENV_INFERENCE_API_KEY]["valueFrom"]["secretKeyRef"]
    generated = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == reference["name"]]
    assert len(generated) == 1 and reference["key"] in generated[0]["data"]

    install = [helm, "install", release, str(CHART), "-n", namespace, "--dry-run=client"]
    notes = run(install).stdout.split("NOTES:", 1)[1]
    (read_key,) = [line.strip() for line in notes.splitlines() if line.strip().startswith("API_KEY=$(")]
    assert read_key == (
        f"API_KEY=$(kubectl -n {namespace} get secret {reference['name']} "
        f"-o jsonpath='{{.data.{reference['key']}}}' | base64 -d)"
    )
    assert '-H "X-API-Key: $API_KEY"' in notes

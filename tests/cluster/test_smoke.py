"""Smoke tests: the cluster does what the product needs from Kubernetes.

They run against KUBECONFIG (any cluster) or the local harness (`make cluster-up`).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.cluster.conftest import SmokeImage
from tests.kit.kube import Kube
from tests.kit.wait import wait_for

pytestmark = pytest.mark.cluster


def web_manifest(image: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: web, labels: {{app: web}}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: web}}}}
          template:
            metadata: {{labels: {{app: web}}}}
            spec:
              containers:
              - name: web
                image: {image}
                imagePullPolicy: Never
                ports: [{{name: http, containerPort: 8080}}]
                readinessProbe:
                  httpGet: {{path: /index.html, port: http}}
                  periodSeconds: 1
                securityContext: {{runAsNonRoot: true, runAsUser: 65534, allowPrivilegeEscalation: false}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: web}}
        spec:
          selector: {{app: web}}
          ports: [{{name: http, port: 80, targetPort: http}}]
        """
    )


def run_pod(kube: Kube, ns: str, name: str, image: str, script: str, timeout: float = 180) -> str:
    """Run a one-shot python pod to completion; return its log. Fails with the log if it fails."""
    manifest = textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}}}
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: {image}
            imagePullPolicy: Never
            command: ["python3", "-c", {json.dumps(script)}]
        """
    )
    kube.in_namespace(ns).apply(manifest)
    phase = wait_for(
        f"pod {ns}/{name} to finish",
        lambda: (
            (p := kube.out("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}"))
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=timeout,
    )
    logs = kube.out("-n", ns, "logs", name)
    assert phase == "Succeeded", f"pod {name} {phase}:\n{logs}"
    return logs


@pytest.fixture
def web(kube: Kube, namespace: str, smoke_image: SmokeImage) -> str:
    kube.in_namespace(namespace).apply(web_manifest(smoke_image.ref))
    kube.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=180s", timeout=200)
    kube.in_namespace(namespace).wait_for_endpoints("web")
    return namespace


def test_deployment_of_local_image_becomes_ready_and_serves_http(
    kube: Kube, web: str, smoke_image: SmokeImage
) -> None:
    ns = web
    dep = kube.get("-n", ns, "deploy", "web")
    assert dep["status"].get("readyReplicas") == 1
    # through the API server's service proxy: API server -> pod network -> the pod
    body = wait_for(
        "service proxy to answer",
        lambda: kube.out("get", "--raw", f"/api/v1/namespaces/{ns}/services/web:http/proxy/index.html"),
        timeout=60,
    )
    assert f"health-risk smoke {smoke_image.marker}" in body


def test_another_pod_reaches_it_by_service_dns_name(kube: Kube, web: str, smoke_image: SmokeImage) -> None:
    ns = web
    # The endpoint is published (fixture), but kube-proxy programs it asynchronously: until
    # then the Service refuses connections. The client retries a refusal for up to 30 s.
    script = textwrap.dedent(
        f"""\
        import socket, time, urllib.error, urllib.request

        def get(url):
            deadline = time.monotonic() + 30
            while True:
                try:
                    return urllib.request.urlopen(url, timeout=10).read().decode()
                except urllib.error.URLError as exc:
                    if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

        for host in ("web", "web.{ns}", "web.{ns}.svc.cluster.local"):
            addr = socket.gethostbyname(host)
            print(host, addr, get(f"http://{{host}}/index.html").strip())
        """
    )
    logs = run_pod(kube, ns, "client", smoke_image.ref, script)
    svc_ip = kube.out("-n", ns, "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}")
    lines = logs.strip().splitlines()
    assert len(lines) == 3, logs
    for line in lines:
        host, addr, *body = line.split()
        assert addr == svc_ip, f"{host} resolved to {addr}, service IP is {svc_ip}"
        assert " ".join(body) == f"health-risk smoke {smoke_image.marker}"


def test_job_runs_to_completion(kube: Kube, namespace: str, smoke_image: SmokeImage) -> None:
    kube.in_namespace(namespace).apply(
        textwrap.dedent(
            f"""\
            apiVersion: batch/v1
            kind: Job
            metadata: {{name: sum}}
            spec:
              backoffLimit: 0
              template:
                spec:
                  restartPolicy: Never
                  containers:
                  - name: sum
                    image: {smoke_image.ref}
                    imagePullPolicy: Never
                    command: ["python3", "-c", "print('total', sum(range(101)))"]
            """
        ),
    )
    kube.kubectl(
        "-n", namespace, "wait", "--for=condition=complete", "job/sum", "--timeout=180s", timeout=200
    )
    job = kube.get("-n", namespace, "job", "sum")
    assert job["status"].get("succeeded") == 1
    assert "total 5050" in kube.out("-n", namespace, "logs", "job/sum")


def test_pvc_binds_and_keeps_data(kube: Kube, namespace: str, smoke_image: SmokeImage) -> None:
    classes = kube.get("storageclass")["items"]
    default = [
        c["metadata"]["name"]
        for c in classes
        if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"
    ]
    assert default, f"no default StorageClass among {[c['metadata']['name'] for c in classes]}"
    kube.in_namespace(namespace).apply(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: data}
            spec:
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: 64Mi}}
            """
        ),
    )
    token = uuid.uuid4().hex
    volume_pod = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}}}
        spec:
          restartPolicy: Never
          securityContext: {{runAsUser: 65534, runAsGroup: 65534, fsGroup: 65534}}
          containers:
          - name: main
            image: {image}
            imagePullPolicy: Never
            command: ["python3", "-c", {script}]
            volumeMounts: [{{name: data, mountPath: /data}}]
          volumes:
          - name: data
            persistentVolumeClaim: {{claimName: data}}
        """
    )
    write = f"open('/data/token', 'w').write('{token}'); print('wrote')"
    read = "print(open('/data/token').read())"
    for name, script in (("writer", write), ("reader", read)):
        kube.in_namespace(namespace).apply(
            volume_pod.format(name=name, image=smoke_image.ref, script=json.dumps(script))
        )
        phase = wait_for(
            f"pod {name} to finish",
            lambda n=name: (
                (p := kube.out("-n", namespace, "get", "pod", n, "-o", "jsonpath={.status.phase}"))
                in ("Succeeded", "Failed")
                and p
            ),
            timeout=180,
        )
        assert phase == "Succeeded", kube.kubectl("-n", namespace, "logs", name, check=False).stdout
    pvc = kube.get("-n", namespace, "pvc", "data")
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["volumeName"]
    assert token in kube.out("-n", namespace, "logs", "reader")


CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.smoke.healthrisk.io}
spec:
  group: smoke.healthrisk.io
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [color]
            properties:
              color: {type: string, enum: [red, green, blue]}
              size: {type: integer, minimum: 1, maximum: 10}
          status:
            type: object
            properties:
              phase: {type: string}
"""


def test_crd_printer_columns_show_in_kubectl_get(kube: Kube, namespace: str) -> None:
    kube.apply(CRD)
    try:
        check_gadgets(kube, namespace)
    finally:
        kube.kubectl(
            "delete", "crd", "gadgets.smoke.healthrisk.io", "--ignore-not-found", "--wait=false", check=False
        )


def check_gadgets(kube: Kube, namespace: str) -> None:
    kube.kubectl("wait", "--for=condition=established", "crd/gadgets.smoke.healthrisk.io", "--timeout=60s")
    gadget = (
        "apiVersion: smoke.healthrisk.io/v1\nkind: Gadget\n"
        "metadata: {name: g1}\nspec: {color: blue, size: 7}\n"
    )
    # right after `established` discovery can lag a moment: retry the first create
    wait_for("gadget create", lambda: kube.in_namespace(namespace).apply(gadget) or True, timeout=30)
    # schema validation is real: a bad enum and an out-of-range size are refused
    bad = kube.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        check=False,
        input=gadget.replace("g1", "bad").replace("blue", "purple").replace("7", "11"),
    )
    assert bad.returncode != 0 and "Unsupported value" in bad.stderr and "size" in bad.stderr, bad.stderr
    # status subresource: status is written apart from spec
    kube.kubectl(
        "-n",
        namespace,
        "patch",
        "gadget",
        "g1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Shiny"}}',
    )
    table = kube.out("-n", namespace, "get", "gadgets").splitlines()
    header = table[0].split()
    assert header == ["NAME", "COLOR", "SIZE", "PHASE", "AGE"], table
    row = table[1].split()
    assert row[:4] == ["g1", "blue", "7", "Shiny"], table
    assert kube.out("-n", namespace, "get", "gdg", "-o", "name").strip() == "gadget.smoke.healthrisk.io/g1"


def test_rbac_denies_a_serviceaccount_what_it_was_not_granted(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    kube.in_namespace(ns).apply(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: ServiceAccount
            metadata: {{name: reader}}
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: Role
            metadata: {{name: pod-reader}}
            rules:
            - {{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}}
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: RoleBinding
            metadata: {{name: reader-reads-pods}}
            roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
            subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]
            """
        ),
    )
    sa = f"system:serviceaccount:{ns}:reader"

    def can_i(*args: str) -> str:
        return kube.kubectl("auth", "can-i", *args, "--as", sa, check=False).stdout.strip()

    assert wait_for("the grant to apply", lambda: can_i("list", "pods", "-n", ns) == "yes", timeout=30)
    assert can_i("get", "pods", "-n", ns) == "yes"
    assert can_i("delete", "pods", "-n", ns) == "no"
    assert can_i("create", "deployments", "-n", ns) == "no"
    assert can_i("get", "secrets", "-n", ns) == "no"
    assert can_i("list", "pods", "-n", "kube-system") == "no"
    # and with a real token of that ServiceAccount, the API server itself says 403
    token = kube.out("-n", ns, "create", "token", "reader", "--duration=10m").strip()
    cfg = json.loads(kube.out("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = cfg["clusters"][0]["cluster"]
    sa_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": "reader", "context": {"cluster": "c", "user": "reader", "namespace": ns}}],
        "current-context": "reader",
    }
    path = tmp_path / "reader.kubeconfig"
    path.write_text(json.dumps(sa_config))
    as_sa = dataclasses.replace(kube, kubeconfig=str(path))
    assert "system:serviceaccount" in as_sa.out("auth", "whoami")
    ok = as_sa.kubectl("get", "pods", check=False)
    assert ok.returncode == 0, ok.stderr
    denied = as_sa.kubectl("get", "secrets", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr


def client_pod(name: str, image: str, labels: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {"name": "main", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
                ],
            },
        }
    )


def test_network_policies_are_enforced(kube: Kube, web: str, smoke_image: SmokeImage) -> None:
    """A default-deny policy blocks a connection that worked; an allow rule re-opens it for
    the pods it names only. Needs a cluster that enforces NetworkPolicies (the harness runs
    kube-router's firewall)."""
    ns = web
    in_ns = kube.in_namespace(ns)
    for name, labels in (("client", {"role": "client"}), ("stranger", {"role": "other"})):
        in_ns.apply(client_pod(name, smoke_image.ref, labels))
    kube.kubectl(
        "-n", ns, "wait", "--for=condition=Ready", "pod/client", "pod/stranger", "--timeout=120s", timeout=140
    )

    def reaches_web(pod: str) -> bool:
        fetch = "import urllib.request; urllib.request.urlopen('http://web/index.html', timeout=3).read()"
        return kube.kubectl("-n", ns, "exec", pod, "--", "python3", "-c", fetch, check=False).returncode == 0

    # kube-proxy programs the new Service asynchronously: allow it a bounded time
    wait_for("client to reach web before any policy", lambda: reaches_web("client"), timeout=30)
    assert reaches_web("stranger")

    in_ns.apply(
        textwrap.dedent(
            """\
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: default-deny}
            spec:
              podSelector: {}
              policyTypes: [Ingress]
            """
        )
    )
    wait_for("the default-deny policy to block client", lambda: not reaches_web("client"), timeout=60)
    assert not reaches_web("stranger")
    # blocked by the policy, not by a missing endpoint: web is still ready behind its Service
    assert in_ns.wait_for_endpoints("web", timeout=5)

    in_ns.apply(
        textwrap.dedent(
            """\
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: web-from-clients}
            spec:
              podSelector: {matchLabels: {app: web}}
              policyTypes: [Ingress]
              ingress:
              - from: [{podSelector: {matchLabels: {role: client}}}]
                ports: [{port: 8080}]
            """
        )
    )
    wait_for("the allow rule to re-open web for client", lambda: reaches_web("client"), timeout=60)
    assert not reaches_web("stranger"), "the allow rule names role=client only"

"""Install, first model, upgrade and uninstall the way a user does them (issue 12).

Every install here takes the chart's DEFAULT values; the only values set are the images
(built here, imported into the node, never pulled). In file order:

1. one release: `helm install --wait` and `helm test` before any model exists; the first
   training is served with no manual step; `helm upgrade` with nothing changed rolls
   nothing, with a changed value keeps the version served, and `helm rollback` works; two
   trainings promoting the same registered model at once; `helm uninstall` while a
   training runs leaves nothing but the MLflow volume it keeps on purpose;
2. a release whose namespace is deleted first, while a training runs;
3. a release of the previous chart (a599819, the main before this work: CRD under crds/)
   serving a model, upgraded to this chart: it keeps serving that model, the CRD is
   upgraded, the object created under the old CRD keeps reconciling.

Figures (install to ready, first promotion to served, uninstall) are printed with `uptime`.
Images are the kit's `platform_images` (built and loaded when missing or stale).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthrisk.contracts import (
    APP_NAME,
    CHAMPION_ALIAS,
    ENV_MODEL_VERSION,
    FINALIZER,
    INFERENCE_METRICS_PORT,
    INFERENCE_PORT,
    LABEL_COMPONENT,
    LABEL_INFERENCE_CLIENT,
    LABEL_ROLE,
    LABEL_SERVED_VERSION,
    LABEL_TRAINING,
    MLFLOW_PORT,
    OPERATOR_METRICS_PORT,
    PROMOTION_PROMOTED,
    ROLE_DRIFT,
    ROLE_SUBMIT,
    ROLE_SUPERLINK,
    ROLE_SUPERNODE,
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_FLEET_PORT,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_VAL_AUC,
)
from healthrisk.promotion_lock import lock_name
from healthrisk.schema import EXAMPLE_RECORD
from healthrisk_operator.constants import CRD_NAME
from tests.e2e.platform import (
    RELEASE,
    ROUNDS,
    SITES,
    Platform,
    follow_run,
    image_values,
    installed,
    predict,
    pvc_name,
    served_version,
    tags,
    training,
)
from tests.kit.http import http_call
from tests.kit.kube import RESTRICTED_CONTAINER, RESTRICTED_POD, Kube
from tests.kit.tools import CHART, REPO
from tests.kit.wait import printed_table, wait_for

# Installs, trainings and upgrades on a shared 2-core machine: minutes each.
pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.timeout(1800)]

MAIN = APP_NAME  # the training every act of the story follows
PREVIOUS_CHART_COMMIT = "a599819"  # main before this work: chart 0.1.0, CRD under crds/
COMPONENTS = ("operator", "mlflow", "inference")


@pytest.fixture(scope="module")
def story(kube: Kube, platform_images: dict[str, str]) -> Iterator[Platform]:
    with installed(kube, platform_images, image_values(), prefix="hr-life") as platform:
        yield platform


def uptime() -> str:
    """The load average, printed beside every figure a test measures (PROTOCOL)."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def pinned(platform: Platform) -> str | None:
    """MODEL_VERSION as the operator pinned it in the container's env (None: not pinned)."""
    deployment = platform.kube.get("deployment", platform.inference)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return next((e.get("value") for e in container.get("env") or [] if e["name"] == ENV_MODEL_VERSION), None)


def served_label(platform: Platform) -> str:
    table = platform.kube.kubectl("get", "deploy", platform.inference, "-L", LABEL_SERVED_VERSION).stdout
    print(table)
    return printed_table(table)[0][LABEL_SERVED_VERSION.split("/")[-1].upper()]


def api(platform: Platform, path: str, body: Any = None) -> tuple[int, Any]:
    with platform.kube.port_forward(f"svc/{platform.inference}", INFERENCE_PORT) as url:
        return http_call(f"{url}{path}", body, headers=platform.api_headers)


def helm_test(platform: Platform) -> str:
    out = platform.kube.helm("test", RELEASE, "--logs", "--timeout", "5m", timeout=400).stdout
    print(out)
    return out


def answers_with(platform: Platform, version: str) -> bool:
    return all(a["model_version"] == version for a in predict(platform))


# ---- 1. one release, from install to uninstall -----------------------------------------


def test_install_waits_until_ready_and_helm_test_passes_before_any_model(story: Platform) -> None:
    kube = story.kube
    print(f"install to ready (helm install --wait): {story.timings['helm install --wait']:.0f}s; {uptime()}")
    for component in COMPONENTS:
        deployment = kube.get("deployment", f"{RELEASE}-{component}")
        assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"] == 1, component

    status, readiness = api(story, "/readyz")
    assert (status, readiness["state"]) == (200, "no-model-yet"), readiness
    status, refused = api(story, "/predict", dict(EXAMPLE_RECORD))
    assert status == 503 and refused["error"].startswith(f"no {CHAMPION_ALIAS} yet"), refused
    assert api(story, "/ready")[0] == 503, "/ready still means a model is loaded"
    assert served_label(story) == "", "nothing served yet"
    assert pinned(story) is None

    out = helm_test(story)
    assert "ok no model yet" in out and "ok registry API" in out

    # Every pod above was admitted under restricted Pod Security, which the chart's hook
    # enforced on the namespace before them; a pod that could escalate is refused.
    labels = kube.get("namespace", story.namespace)["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels
    loose = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "loose"},
        "spec": {"containers": [{"name": "c", "image": story.images["flower"]}]},
    }  # fmt: skip
    refused = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(loose), check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr


def test_the_first_promotion_is_served_with_no_manual_step(story: Platform) -> None:
    kube = story.kube
    moments: dict[str, float] = {}

    def serves(version: str) -> bool:
        # While the rollout runs, the pod that answers may be the old one (503 until its
        # next look at the alias) or one going away: not served yet.
        try:
            return answers_with(story, version)
        except (OSError, AssertionError):
            return False

    def watch(status: dict[str, Any]) -> None:
        version = status.get("modelVersion")
        if status.get("promoted") and "promoted" not in moments:
            moments["promoted"] = time.monotonic()
        if "promoted" in moments and "served" not in moments and version and serves(version):
            moments["served"] = time.monotonic()

    kube.apply(training(story, MAIN, serve=True))
    record = follow_run(kube, MAIN, 1, act=watch)
    entry = record.entry(1)
    assert (entry["result"], entry["promoted"]) == ("Succeeded", True), entry
    version = entry["version"]
    if "served" not in moments:
        assert answers_with(story, version)
        moments["served"] = time.monotonic()
    print(f"first promotion to served: {moments['served'] - moments['promoted']:.0f}s; {uptime()}")

    assert pinned(story) == version and served_version(story)[0] == version
    assert served_label(story) == version
    out = helm_test(story)
    assert f"ok /predict: version {version}" in out


# One connection attempt per target, all at once, from inside a pod: prints {target: reached}.
PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def reach(target):
    try:
        if target.startswith("dns:"):
            return bool(socket.getaddrinfo(target[4:], 443))
        host, port = target.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=3).close()
        return True
    except OSError:
        return False
with ThreadPoolExecutor(len(sys.argv) - 1) as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(reach, sys.argv[1:])))))
"""


def probe_pod(image: str, name: str, labels: dict[str, str], listen: tuple[int, ...]) -> dict[str, Any]:
    """A restricted pod with `labels` (a run pod's role, or none), listening on `listen`."""
    command = (
        "import socketserver as s, threading as t, time\n"
        f"for port in {listen!r}:\n"
        "    server = s.TCPServer(('', port), s.BaseRequestHandler)\n"
        "    t.Thread(target=server.serve_forever, daemon=True).start()\n"
        "time.sleep(3600)"
    )
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {LABEL_COMPONENT: "e2e-network-probe", **labels}},
        "spec": {
            "securityContext": RESTRICTED_POD, "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", command], "workingDir": "/tmp",
                "securityContext": RESTRICTED_CONTAINER,
            }],
        },
    }  # fmt: skip


def test_network_policies_let_through_the_platforms_flows_and_nothing_else(story: Platform) -> None:
    """With the chart's default policies, enforced by the harness's kube-router: the flows the
    story used so far all passed (helm test to the API and MLflow, the run's SuperNodes to their
    SuperLink, its ServerApp to MLflow, the operator to the API server and MLflow, inference to
    MLflow). Here real TCP connections from pods carrying each run role's labels (the role is
    all the policies select run pods by), from a pod without one, from an allowed API caller and
    from the chart's own pods show that every other flow is refused."""
    kube = story.kube
    probes = {
        "np-superlink": ({LABEL_ROLE: ROLE_SUPERLINK}, (SUPERLINK_FLEET_PORT, SUPERLINK_CONTROL_PORT)),
        "np-supernode": ({LABEL_ROLE: ROLE_SUPERNODE}, ()),
        "np-submit": ({LABEL_ROLE: ROLE_SUBMIT}, ()),
        "np-drift": ({LABEL_ROLE: ROLE_DRIFT}, ()),
        "np-stranger": ({}, ()),
        "np-api-caller": ({LABEL_INFERENCE_CLIENT: "true"}, ()),
    }
    for name, (labels, listen) in probes.items():
        kube.apply(probe_pod(story.images["flower"], name, labels, listen))
    try:
        kube.kubectl(
            "wait", "--for=condition=Ready", *(f"pod/{p}" for p in probes), "--timeout=180s", timeout=200
        )
        pod = lambda selector: kube.get("pods", "-l", selector)["items"][0]  # noqa: E731
        ip = lambda name: kube.get("pod", name)["status"]["podIP"]  # noqa: E731
        chart_pods = {
            c: pod(f"{LABEL_COMPONENT}={c},app.kubernetes.io/instance={RELEASE}") for c in COMPONENTS
        }
        mlflow_ip = chart_pods["mlflow"]["status"]["podIP"]
        inference_ip = chart_pods["inference"]["status"]["podIP"]
        targets = {
            "mlflow": f"{mlflow_ip}:{MLFLOW_PORT}",
            # The two doors of a SuperLink pod (its proxy's): Fleet and Control.
            "fleet": f"{ip('np-superlink')}:{SUPERLINK_FLEET_PORT}",
            "control": f"{ip('np-superlink')}:{SUPERLINK_CONTROL_PORT}",
            "api": f"{inference_ip}:{INFERENCE_PORT}",
            "api metrics": f"{inference_ip}:{INFERENCE_METRICS_PORT}",
            "operator metrics": f"{chart_pods['operator']['status']['podIP']}:{OPERATOR_METRICS_PORT}",
            "kubernetes": "kubernetes.default.svc.cluster.local:443",
            "dns": "dns:kubernetes.default.svc.cluster.local",
        }
        # Each source: what it may reach. A pod's own addresses are left out (loopback
        # inside the pod, never seen by a policy); the rest of `targets` must be refused.
        allowed: dict[str, tuple[set[str], set[str]]] = {
            "np-supernode": ({"fleet", "dns"}, set()),  # a site: its SuperLink's Fleet, nothing else
            "np-submit": ({"control", "dns"}, set()),  # the submitter: Control only
            "np-drift": ({"mlflow", "dns"}, set()),
            "np-superlink": ({"mlflow", "dns"}, {"fleet", "control"}),  # MLflow for its ServerApp
            "np-stranger": ({"dns"}, set()),  # no role: neither MLflow, a SuperLink nor the API
            "np-api-caller": ({"api", "dns"}, set()),
            chart_pods["operator"]["metadata"]["name"]: (
                {"kubernetes", "mlflow", "dns"},
                {"operator metrics"},
            ),
            chart_pods["inference"]["metadata"]["name"]: ({"mlflow", "dns"}, {"api", "api metrics"}),
            chart_pods["mlflow"]["metadata"]["name"]: ({"dns"}, {"mlflow"}),
        }
        expected = {
            source: {t: t in may for t in targets if t not in own} for source, (may, own) in allowed.items()
        }

        def observed() -> dict[str, dict[str, bool]]:
            picture = {}
            for source, per_target in expected.items():
                addresses = [targets[t] for t in per_target]
                out = kube.out("exec", source, "--", "python3", "-c", PROBE, *addresses, timeout=60)
                reached = json.loads(out)
                picture[source] = {t: reached[targets[t]] for t in per_target}
            return picture

        # kube-router programs a new pod's chains within seconds of it starting: retry a while.
        last: dict[str, dict[str, bool]] = {}

        def matches() -> bool:
            nonlocal last
            last = observed()
            return last == expected

        try:
            wait_for("the policies to pass exactly the platform's flows", matches, timeout=120, interval=5)
        except AssertionError:
            wrong = {s: {t: v for t, v in last.get(s, {}).items() if v != expected[s][t]} for s in expected}
            raise AssertionError(
                f"flows that differ (reached?): { {s: w for s, w in wrong.items() if w} }"
            ) from None
        for source, reached in last.items():
            print(f"{source} reaches: {', '.join(t for t, yes in reached.items() if yes)}")
    finally:
        kube.kubectl("delete", "pod", *probes, "--wait=false", check=False)


def test_upgrade_keeps_the_served_version_and_rollback_works(story: Platform, tmp_path: Path) -> None:
    kube = story.kube
    version, revision = served_version(story)
    generation = kube.get("deployment", story.inference)["metadata"]["generation"]
    values = tmp_path / "values.yaml"
    values.write_text(json.dumps(image_values()))

    kube.helm("upgrade", RELEASE, str(CHART), "-f", str(values), "--wait", "--timeout", "5m", timeout=400)
    after = kube.get("deployment", story.inference)
    assert after["metadata"]["generation"] == generation, "nothing changed: no rollout"
    assert served_version(story) == (version, revision) and pinned(story) == version

    changed = ("--set", "inference.modelPollIntervalSeconds=15")
    kube.helm(
        "upgrade", RELEASE, str(CHART), "-f", str(values), *changed, "--wait", "--timeout", "5m", timeout=400
    )
    rolled, new_revision = served_version(story)
    assert new_revision > revision, "a changed setting rolls the pods"
    assert (rolled, pinned(story)) == (version, version), "with the version the operator pinned"
    assert answers_with(story, version)

    kube.helm("rollback", RELEASE, "1", "--wait", "--timeout", "5m", timeout=400)
    settings = kube.get("configmap", story.inference)["data"]
    assert settings["MODEL_POLL_INTERVAL_SECONDS"] == "30", "revision 1's settings are back"
    assert (served_version(story)[0], pinned(story)) == (version, version)
    assert answers_with(story, version)
    print(kube.helm("history", RELEASE).stdout)


def test_two_trainings_promoting_one_model_at_once_keep_the_better_champion(story: Platform) -> None:
    """Two objects promote the same registered model from the operator's parallel loops:
    serialised, the second promotion is always compared with the first."""
    kube, name = story.kube, "race"
    # A model of its own, apart from the story's champion: a registered model MLflow's users
    # hold no grant on is refused, so it is added the way README says, by a helm upgrade.
    granted = f'mlflow.auth.registeredModels=["{name}"]'
    kube.helm(
        "upgrade", RELEASE, str(CHART), "--reuse-values", "--set-json", granted,
        "--wait", "--timeout", "5m", timeout=400,
    )  # fmt: skip
    for training_name in ("race-a", "race-b"):
        kube.apply(training(story, training_name, registered_name=name))
    for training_name in ("race-a", "race-b"):
        entry = follow_run(kube, training_name, 1).entry(1)
        assert entry["result"] == "Succeeded", entry

    with kube.port_forward(f"svc/{story.mlflow}", MLFLOW_PORT) as url:
        mlflow = story.registry(url)
        versions = {v["version"]: tags(v) for v in mlflow.versions(name)}
        champion = mlflow.champion(name)["version"]
        locks = mlflow.get("registered-models/search", filter=f"name = '{lock_name(name)}'")
    print(
        {
            v: (t.get(TAG_VAL_AUC), t.get(TAG_PROMOTION), t.get(TAG_PREVIOUS_CHAMPION))
            for v, t in versions.items()
        }
    )
    assert len(versions) == 2, versions
    (other,) = set(versions) - {champion}
    if versions[other][TAG_PROMOTION] == PROMOTION_PROMOTED:
        # promoted first; the champion was then compared with it, not with what it replaced
        assert versions[champion][TAG_PREVIOUS_CHAMPION] == other, versions
    else:
        assert f"v{champion}" in versions[other][TAG_PROMOTION_REASON], versions
    assert not locks.get("registered_models"), "no promotion lock left behind"
    kube.kubectl("delete", "ft", "race-a", "race-b", "--wait=true", timeout=120)


def test_uninstall_with_a_training_running_leaves_nothing_stuck(story: Platform) -> None:
    kube, namespace = story.kube, story.namespace
    # A model-shaping change: a retrain request on the data run 1 trained on would be skipped
    # (RetrainSkipped), this starts run 2.
    kube.patch(f"ft/{MAIN}", {"spec": {"rounds": ROUNDS + 1}})
    wait_for(
        "run 2 to be under way (its pods created)",
        lambda: (
            kube.get("ft", MAIN)["status"].get("run") == 2
            and kube.get("pods", "-l", f"{LABEL_TRAINING}={MAIN}")["items"]
        ),
        timeout=180,
    )
    started = time.monotonic()
    kube.helm("uninstall", RELEASE, "--wait", "--timeout", "5m", timeout=400)
    print(f"helm uninstall with a training running: {time.monotonic() - started:.0f}s; {uptime()}")

    assert not kube.get("ft")["items"], "the uninstall removed the trainings"
    # Kept on purpose: the registry's volume, the admin Secret of the users it holds, and the
    # key its promoted versions were signed with; the sites' volumes are this test's own.
    kept = {
        f"PersistentVolumeClaim/{story.mlflow}",
        f"Secret/{RELEASE}-mlflow-admin",
        f"Secret/{RELEASE}-model-signing",
    }
    expected = kept | {f"PersistentVolumeClaim/{pvc_name(site)}" for site in SITES}

    def left() -> set[str]:
        kinds = "all,configmaps,secrets,serviceaccounts,roles,rolebindings,networkpolicies,pvc"
        found = {f"{o['kind']}/{o['metadata']['name']}" for o in kube.get(kinds)["items"]}
        return found - {"ConfigMap/kube-root-ca.crt", "ServiceAccount/default"}

    wait_for("nothing but the kept objects to be left", lambda: left() == expected or None, timeout=120)
    assert kube.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0, "the CRD is kept (crds.keep)"

    # README: how to remove what is kept; then the namespace goes at once.
    kube.kubectl(
        "delete",
        f"pvc/{story.mlflow}",
        f"secret/{RELEASE}-mlflow-admin",
        f"secret/{RELEASE}-model-signing",
        "--wait=true",
        timeout=120,
    )
    kube.kubectl("delete", "namespace", namespace, "--wait=true", timeout=300)
    assert kube.get_or_none("namespace", namespace) is None


# ---- 2. the namespace deleted first -----------------------------------------------------


def test_deleting_the_namespace_first_with_a_training_running_completes(
    kube: Kube, platform_images: dict[str, str]
) -> None:
    with installed(kube, platform_images, image_values(), prefix="hr-nsfirst") as platform:
        kube = platform.kube
        kube.apply(training(platform, MAIN, serve=True))
        wait_for(
            "the run's pods",
            lambda: len(kube.get("pods", "-l", f"{LABEL_TRAINING}={MAIN}")["items"]) >= 2,
            timeout=180,
        )
        started = time.monotonic()
        kube.kubectl("delete", "namespace", platform.namespace, "--wait=true", timeout=400)
        print(f"namespace deleted first, training running: {time.monotonic() - started:.0f}s; {uptime()}")
        assert kube.get_or_none("namespace", platform.namespace) is None


# ---- 3. upgrade from the previous chart ------------------------------------------------


@pytest.fixture
def previous_chart(tmp_path: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_CHART_COMMIT, str(CHART.relative_to(REPO))],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    chart = tmp_path / CHART.relative_to(REPO)
    crd = chart / "crds" / f"{CRD_NAME}.yaml"
    assert crd.exists(), "the previous chart had its CRD under crds/"
    # Its schema equals this one; give it the default an earlier release had (localEpochs 1,
    # chart 19e1e86) so the upgrade has a CRD change to apply and the test can see it applied.
    old_default = "maximum: 100\n                      default: 1\n"
    text = crd.read_text().replace("maximum: 100\n                      default: 2\n", old_default)
    assert old_default in text
    crd.write_text(text)
    # It runs today's images (the old ones cannot be built offline), and today's operator
    # makes each run's TLS material and puts its SuperLink behind a proxy: give the old
    # chart the two grants that takes, Secrets to create and the proxy's ports, and nothing
    # else (the upgrade then replaces both with today's).
    helpers = chart / "templates" / "_helpers.tpl"
    apps_rule = '- apiGroups: ["apps"]\n  resources: ["deployments"]\n'
    assert helpers.read_text().count(apps_rule) == 1
    helpers.write_text(
        helpers.read_text().replace(
            apps_rule,
            f'- apiGroups: [""]\n  resources: ["secrets"]\n  verbs: ["create", "delete"]\n{apps_rule}',
        )
    )
    superlink = chart / "templates" / "networkpolicy" / "superlink.yaml"
    flower_port = "- {port: 8000, protocol: TCP}"
    assert flower_port in superlink.read_text()
    superlink.write_text(
        superlink.read_text().replace(
            flower_port,
            f"- {{port: {SUPERLINK_FLEET_PORT}, protocol: TCP}}\n"
            f"        - {{port: {SUPERLINK_CONTROL_PORT}, protocol: TCP}}",
        )
    )
    return chart


def test_upgrade_from_the_chart_before_this_work_keeps_serving_its_model(
    kube: Kube, platform_images: dict[str, str], previous_chart: Path, tmp_path: Path
) -> None:
    if kube.get_or_none("crd", CRD_NAME) is not None:
        left = kube.get("ft", "--all-namespaces")["items"]
        assert not left, (
            f"the cluster still has trainings of other tests: {[t['metadata']['name'] for t in left]}"
        )
    # Where a 0.1.x user starts: Helm installed the CRD from crds/, outside the release.
    kube.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", timeout=120)
    # The previous chart's inference pod is not ready without a model: no --wait.
    previous = installed(
        kube, platform_images, image_values(), chart=previous_chart, wait=False, prefix="hr-upgrade"
    )
    with previous as platform:
        kube = platform.kube
        for component in COMPONENTS[:2]:
            kube.kubectl(
                "rollout", "status", f"deployment/{RELEASE}-{component}", "--timeout=5m", timeout=360
            )
        kube.apply(training(platform, MAIN, serve=True))
        entry = follow_run(kube, MAIN, 1).entry(1)
        assert (entry["result"], entry["promoted"]) == ("Succeeded", True), entry
        version = entry["version"]
        assert answers_with(platform, version)
        # What every 0.1.x operator put on its objects (the images here are this tree's, so
        # it is added by hand): the new operator removes it on sight.
        kube.patch(f"ft/{MAIN}", {"metadata": {"finalizers": [FINALIZER]}})
        wait_for(
            "the 0.1 finalizer to be removed",
            lambda: not kube.get("ft", MAIN)["metadata"].get("finalizers"),
            timeout=60,
        )

        values = tmp_path / "values.yaml"
        values.write_text(json.dumps(image_values()))
        upgrade = ("upgrade", RELEASE, str(CHART), "-f", str(values), "--wait", "--timeout", "10m")
        refused = kube.helm(*upgrade, timeout=700, check=False)
        assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr, refused.stderr
        started = time.monotonic()
        kube.helm(*upgrade, "--take-ownership", timeout=700)
        print(f"helm upgrade from {PREVIOUS_CHART_COMMIT}: {time.monotonic() - started:.0f}s; {uptime()}")

        # The previous chart rendered MODEL_VERSION in the container's env, so Helm removes the
        # operator's pin with it: the pods follow the alias, which names the same version,
        # until the next promotion pins one again.
        print(f"after the upgrade: pinned {pinned(platform)}")
        assert served_version(platform)[0] == version
        assert answers_with(platform, version)
        crd = kube.get("crd", CRD_NAME)
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-namespace"] == platform.namespace
        strategy = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "properties"
        ]["strategy"]
        assert strategy["properties"]["localEpochs"]["default"] == 2, "the CRD was upgraded (1 → 2)"
        # The object created under the old CRD keeps reconciling after the operator restarted.
        kube.patch(f"ft/{MAIN}", {"spec": {"suspend": True}})
        wait_for(
            "the training to be suspended",
            lambda: kube.get("ft", MAIN)["status"].get("phase") == "Suspended",
            timeout=120,
        )
        assert "ok /predict" in helm_test(platform)

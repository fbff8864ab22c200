"""The Helm chart helm/aicert: lint, rendering, and a real install, upgrade and uninstall against
the local control plane (real kube-apiserver; no kubelet, so the operator and agent pods never run).

The cluster tests share one release and run in file order: install (from a packaged 0.0.9 copy
standing for the previous version), what its ServiceAccounts may and may not do, upgrades, uninstall.
Waits poll with a deadline; nothing asserts on timing.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from aicert_localcluster import LocalCluster, free_port, helm
from aicert_operator.health import HealthState, Limits, serve

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "certifiedtrainings.aicert.dev.yaml"
CHART = helm.CHART_DIR
OPERATOR_IMAGE = "registry.local/aicert/operator@sha256:" + "0123456789abcdef" * 4
AGENT_IMAGE = "registry.local/aicert/agent@sha256:" + "fedcba9876543210" * 4
RELEASE = "team-aicert"  # not the default "aicert": names and identities must follow the release
NAMESPACE = "ml-platform"
OPERATOR_SA = f"{RELEASE}-operator"
AGENT_SA = f"{RELEASE}-agent"
DEADLINE = 90.0
T = TypeVar("T")


def image(reference: str) -> dict[str, str]:
    repository, _, digest = reference.partition("@")
    return {"repository": repository, "digest": digest}


VALUES: dict[str, object] = {"operator.image": image(OPERATOR_IMAGE), "agent.image": image(AGENT_IMAGE)}


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(helm_home: Path, values: dict[str, object] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    merged = {**VALUES, **(values or {})}
    return documents(helm.template(merged, release=RELEASE, namespace=NAMESPACE, home=helm_home, **kwargs))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (only,) = containers
    return only


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def eventually(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


# --- the chart alone -----------------------------------------------------------------------------


CRD_NAME = "certifiedtrainings.aicert.dev"
KEEP = {"helm.sh/resource-policy": "keep"}


def test_the_charts_crd_is_the_repositorys_one_file() -> None:
    """One source: the chart reads the repository's crds/ file through a symlink (Helm packages the
    file it points at), and has no crds/ directory of its own, which Helm would install untemplated."""
    link = CHART / "files" / CRD.name
    assert link.is_symlink() and link.resolve() == CRD.resolve()
    assert not (CHART / "crds").exists()


def rendered_crd(helm_home: Path, values: dict[str, object] | None = None) -> list[dict[str, Any]]:
    return [d for d in render(helm_home, values) if d["kind"] == "CustomResourceDefinition"]


def test_the_crd_is_rendered_as_the_repositorys_and_kept_on_uninstall_by_default(helm_home: Path) -> None:
    (crd_doc,) = rendered_crd(helm_home)
    source = yaml.safe_load(CRD.read_text())
    meta = crd_doc["metadata"]
    assert meta["name"] == CRD_NAME and meta["annotations"] == KEEP
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert {k: v for k, v in crd_doc.items() if k != "metadata"} == {
        k: v for k, v in source.items() if k != "metadata"
    }
    assert {k: v for k, v in meta.items() if k not in ("labels", "annotations")} == source["metadata"]


def test_the_crd_without_keep_is_deleted_with_the_release(helm_home: Path) -> None:
    (crd_doc,) = rendered_crd(helm_home, {"crds.keep": False})
    assert "annotations" not in crd_doc["metadata"]
    assert crd_doc["spec"] == yaml.safe_load(CRD.read_text())["spec"]


def test_the_crd_can_be_left_to_another_installer(helm_home: Path) -> None:
    assert rendered_crd(helm_home, {"crds.enabled": False}) == []
    assert rendered_crd(helm_home, {"crds.enabled": False, "crds.keep": False}) == []
    assert len(render(helm_home, {"crds.enabled": False})) == len(render(helm_home)) - 1


def test_lint_strict_passes_with_the_required_values(helm_home: Path) -> None:
    done = helm.run_helm(
        "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / "lint-values.yaml"), home=helm_home
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("agent.tpm.access=hostPath", "agent/tpm/access"),
        ("operator.maxDeadlineSeconds=0", "operator/maxDeadlineSeconds"),
        ("operator.maxDeadlineSeconds=2592001", "operator/maxDeadlineSeconds"),  # beyond the CRD's
    ],
)
def test_lint_strict_fails_on_a_value_the_schema_refuses(helm_home: Path, value: str, path: str) -> None:
    done = helm.run_helm(
        "lint",
        "--strict",
        str(CHART),
        "-f",
        str(CHART / "ci" / "lint-values.yaml"),
        "--set",
        value,
        home=helm_home,
        check=False,
    )
    assert done.returncode != 0
    assert path in done.stdout + done.stderr


def test_the_maximum_deadline_reaches_the_operator_and_the_admission_policy(helm_home: Path) -> None:
    docs = render(helm_home, {"operator.maxDeadlineSeconds": 86400})
    assert env(container(one(docs, "Deployment", OPERATOR_SA)))["AICERT_MAX_DEADLINE_SECONDS"] == "86400"
    (validation,) = one(docs, "ValidatingAdmissionPolicy", f"{RELEASE}-training-deadline")["spec"][
        "validations"
    ]
    assert "object.spec.activeDeadlineSeconds <= 86400" in validation["expression"]
    assert "at most 86400 seconds" in validation["messageExpression"]


OPERATOR = image(OPERATOR_IMAGE)
AGENT = image(AGENT_IMAGE)


def test_the_api_server_address_override_reaches_the_operator_and_the_agent(helm_home: Path) -> None:
    """kubernetesService: on a cluster without kube-proxy both reach the API server where it says;
    unset, neither container names one (the `kubernetes` Service, as on AKS)."""
    workloads = {"operator.deploy": True, "agent.deploy": True}
    default = render(helm_home, workloads)
    overridden = render(
        helm_home, {**workloads, "kubernetesService.host": "10.244.1.1", "kubernetesService.port": "6443"}
    )
    for kind in ("Deployment", "DaemonSet"):
        assert "KUBERNETES_SERVICE_HOST" not in env(container(one(default, kind)))
        found = env(container(one(overridden, kind)))
        assert (found["KUBERNETES_SERVICE_HOST"], found["KUBERNETES_SERVICE_PORT"]) == ("10.244.1.1", "6443")
    agent = env(container(one(default, "DaemonSet")))
    assert agent["AICERT_HOST_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "image.repository is required"),
        (
            {"operator.image": {**OPERATOR, "digest": ""}, "agent.image": AGENT},
            "operator.image.digest is required",
        ),
        (
            {"operator.image": OPERATOR, "agent.image": {**AGENT, "digest": ""}},
            "agent.image.digest is required",
        ),
        (
            {"operator.image": OPERATOR, "agent.image": {**AGENT, "repository": ""}},
            "agent.image.repository is required",
        ),
        # malformed: the schema refuses them before any template runs
        (
            {"operator.image": OPERATOR, "agent.image": {**AGENT, "digest": "sha256:" + "A" * 64}},
            "/agent/image/digest",
        ),
        (
            {"operator.image": {**OPERATOR, "digest": "latest"}, "agent.image": AGENT},
            "/operator/image/digest",
        ),
        (
            {
                "operator.image": {**OPERATOR, "repository": "ghcr.io/example/operator:v1"},
                "agent.image": AGENT,
            },
            "/operator/image/repository",
        ),
    ],
    ids=[
        "none",
        "no-operator-digest",
        "no-agent-digest",
        "no-agent-repository",
        "uppercase",
        "tag",
        "repo-tag",
    ],
)
def test_template_fails_clearly_without_images_by_digest(
    helm_home: Path, values: dict[str, object], message: str
) -> None:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(values)]
    done = helm.run_helm(*args, home=helm_home, check=False)
    assert done.returncode != 0, done.stdout
    assert message in done.stderr
    if not message.startswith("/"):
        assert "images are pinned by digest" in done.stderr or "required (e.g." in done.stderr


def test_without_workloads_no_image_is_needed(helm_home: Path) -> None:
    """What the e2e stack renders: identities, RBAC and policies only."""
    docs = documents(helm.policy_manifest(home=helm_home))
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }


def test_workloads_use_images_by_digest_and_the_same_gate_image(helm_home: Path) -> None:
    docs = render(helm_home)
    operator = one(docs, "Deployment", OPERATOR_SA)
    agent = one(docs, "DaemonSet", AGENT_SA)
    assert container(operator)["image"] == OPERATOR_IMAGE
    assert container(agent)["image"] == AGENT_IMAGE
    assert env(container(operator))["AICERT_AGENT_IMAGE"] == AGENT_IMAGE
    assert env(container(agent))["AICERT_AGENT_IMAGE"] == AGENT_IMAGE
    assert (
        env(container(operator))["AICERT_GATE_TIMEOUT_SECONDS"]
        == env(container(agent))["AICERT_GATE_TIMEOUT_SECONDS"]
    )
    for doc in docs:
        text = json.dumps(doc)
        for ref in re.findall(r'"image": "([^"]+)"', text):
            assert re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", ref), ref


PREVIOUS_AGENT_IMAGE = "registry.local/aicert/agent@sha256:" + "0f" * 32


def previous_images(docs: list[dict[str, Any]]) -> tuple[str, str]:
    """AICERT_PREVIOUS_AGENT_IMAGE of the operator and of the agent."""
    return (
        env(container(one(docs, "Deployment", OPERATOR_SA)))["AICERT_PREVIOUS_AGENT_IMAGE"],
        env(container(one(docs, "DaemonSet", AGENT_SA)))["AICERT_PREVIOUS_AGENT_IMAGE"],
    )


def test_the_previous_agent_image_reaches_the_operator_and_the_agent_alike(helm_home: Path) -> None:
    docs = render(helm_home, {"agent.previousImage": image(PREVIOUS_AGENT_IMAGE)})
    assert previous_images(docs) == (PREVIOUS_AGENT_IMAGE, PREVIOUS_AGENT_IMAGE)
    # helm template sees no cluster: without the value there is no previous release to accept
    assert previous_images(render(helm_home)) == ("", "")
    # the current image named as the previous one is no second release
    assert previous_images(render(helm_home, {"agent.previousImage": image(AGENT_IMAGE)})) == ("", "")


@pytest.mark.parametrize(
    ("previous", "message"),
    [
        (
            {"repository": "registry.local/aicert/agent", "digest": ""},
            "agent.previousImage.digest is required",
        ),
        ({"repository": "", "digest": "sha256:" + "0f" * 32}, "agent.previousImage.repository is required"),
    ],
)
def test_a_previous_agent_image_not_pinned_by_digest_is_refused(
    helm_home: Path, previous: dict[str, str], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(helm_home, {"agent.previousImage": previous})


@pytest.mark.parametrize(
    "previous",
    [
        {"repository": "registry.local/aicert/agent", "digest": "latest"},
        {"repository": "registry.local/aicert/agent:v1", "digest": "sha256:" + "0f" * 32},
        {"repository": "registry.local/aicert/agent", "digest": "sha256:" + "0f" * 32, "tag": "v1"},
    ],
)
def test_the_schema_refuses_a_malformed_previous_agent_image(
    helm_home: Path, previous: dict[str, str]
) -> None:
    with pytest.raises(helm.HelmError, match="previousImage"):
        render(helm_home, {"agent.previousImage": previous})


def test_the_agents_roll_node_by_node_by_default(helm_home: Path) -> None:
    strategy = one(render(helm_home), "DaemonSet", AGENT_SA)["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}


def test_a_gpu_pool_may_replace_its_agents_only_when_deleted(helm_home: Path) -> None:
    docs = render(helm_home, {"agent.updateStrategy": {"type": "OnDelete"}})
    assert one(docs, "DaemonSet", AGENT_SA)["spec"]["updateStrategy"] == {"type": "OnDelete"}
    # `--set agent.updateStrategy.type=OnDelete` merges with the default's rollingUpdate: not rendered
    merged = render(helm_home, {"agent.updateStrategy.type": "OnDelete"})
    assert one(merged, "DaemonSet", AGENT_SA)["spec"]["updateStrategy"] == {"type": "OnDelete"}


@pytest.mark.parametrize(
    "strategy",
    [
        {"type": "Recreate"},
        {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1.5}},
    ],
)
def test_the_schema_refuses_another_update_strategy(helm_home: Path, strategy: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match="updateStrategy"):
        render(helm_home, {"agent.updateStrategy": strategy})


def test_operator_runs_two_leader_elected_replicas_under_restricted(helm_home: Path) -> None:
    operator = one(render(helm_home), "Deployment", OPERATOR_SA)
    spec = operator["spec"]["template"]["spec"]
    c = container(operator)
    assert operator["spec"]["replicas"] == 2
    variables = env(c)
    assert variables["AICERT_LEASE_NAMESPACE"] == NAMESPACE
    assert variables["AICERT_LEASE_NAME"] == OPERATOR_SA
    assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert spec["serviceAccountName"] == OPERATOR_SA
    # PodSecurity restricted
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]


def _probe_status(c: dict[str, Any], probe: str, port: int) -> int:
    """GET the rendered probe's path on its (named) port, as kubelet would: the HTTP status."""
    get = c[probe]["httpGet"]
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named[get["port"]] == port  # the named port is the health port the operator serves
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_operator_probes_keep_a_standby_ready_and_restart_a_wedged_leader(helm_home: Path) -> None:
    """The rendered probes against the operator's own health server (aicert_operator.health): a
    standby that answers the API server is alive and Ready; a leader whose event loop stalled fails
    both."""
    port = free_port()
    c = container(
        one(render(helm_home, {"operator.healthPort": port, "operator.healthStallSeconds": 30}), "Deployment")
    )
    assert env(c)["AICERT_HEALTH_PORT"] == str(port)
    assert env(c)["AICERT_HEALTH_STALL_SECONDS"] == "30"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["periodSeconds"] > 0 and c[probe]["failureThreshold"] >= 3

    state = HealthState(Limits(stall_seconds=0.5, api_seconds=15))
    server = serve(state, port, host="127.0.0.1")
    try:
        state.lease_attempted(answered=True)  # a standby: the lease is another's
        assert _probe_status(c, "livenessProbe", port) == 200
        assert _probe_status(c, "readinessProbe", port) == 200
        state.became_leader()  # and kopf's event loop never beats
        eventually(
            lambda: _probe_status(c, "livenessProbe", port) == 503, "a wedged leader fails liveness", 10
        )
        assert _probe_status(c, "readinessProbe", port) == 503
    finally:
        server.shutdown()
        server.server_close()


def test_a_health_stall_shorter_than_the_lease_is_refused(helm_home: Path) -> None:
    with pytest.raises(helm.HelmError, match=r"healthStallSeconds must be at least operator\.leaseSeconds"):
        render(helm_home, {"operator.leaseSeconds": 15, "operator.healthStallSeconds": 10})


def test_agent_daemonset_reaches_tpm_kubelet_and_its_bound_token(helm_home: Path) -> None:
    docs = render(helm_home)
    agent = one(docs, "DaemonSet", AGENT_SA)
    spec = agent["spec"]["template"]["spec"]
    c = container(agent)
    assert spec["nodeSelector"] == {"aicert.dev/agent": "true"}
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["priorityClassName"] == one(docs, "PriorityClass")["metadata"]["name"]
    assert env(c)["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert c["securityContext"]["privileged"] is True  # the default agent.tpm.access
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["tpm"]["hostPath"] == {"path": "/dev/tpmrm0", "type": "CharDevice"}
    assert volumes["kubelet-pods"]["hostPath"]["path"] == "/var/lib/kubelet/pods"
    assert mounts["kubelet-pods"]["mountPropagation"] == "HostToContainer"
    assert volumes["state"]["hostPath"]["path"] == mounts["state"]["mountPath"] == "/run/aicert"
    # the token: projected (bound to the pod, and so to its node), not the automounted one
    assert spec["automountServiceAccountToken"] is False
    sources = volumes["token"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert mounts["token"]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    args = c["args"]
    assert args[args.index("--lease-namespace") + 1] == NAMESPACE
    assert args[args.index("--metrics-port") + 1] == "9484"
    assert args[args.index("--state-dir") + 1] == "/run/aicert"
    assert c["readinessProbe"]["httpGet"]["port"] == "metrics"
    # none of the chart's pods carries an aicert.dev/ label: admission reserves those for training pods
    for workload in (agent, one(docs, "Deployment")):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert not [k for k in labels if k.startswith("aicert.dev/")]


def test_the_agents_measurement_budgets_reach_it_as_settings_it_reads(helm_home: Path) -> None:
    from aicert_agent.measuring import MeasureLimits

    defaults = env(container(one(render(helm_home), "DaemonSet", AGENT_SA)))
    assert MeasureLimits.from_env(defaults) == MeasureLimits(1 << 40, 1 << 40, 100_000)
    # a number of bytes stays digits: YAML numbers reach the templates as floats (1.099511627776e+12)
    values = {"agent.maxOutputBytes": 3 * 10**12, "agent.maxInputBytes": "2Ti", "agent.maxFiles": 2_000_000}
    changed = env(container(one(render(helm_home, values), "DaemonSet", AGENT_SA)))
    assert [changed[f"AICERT_MAX_{n}"] for n in ("OUTPUT_BYTES", "INPUT_BYTES", "FILES")] == [
        "3000000000000",
        "2Ti",
        "2000000",
    ]
    assert MeasureLimits.from_env(changed) == MeasureLimits(3 * 10**12, 2 << 40, 2_000_000)
    refused = helm.run_helm(
        "template",
        str(CHART),
        *helm.set_args({**VALUES, "agent.maxOutputBytes": "lots"}),
        home=helm_home,
        check=False,
    )
    assert refused.returncode != 0 and "agent/maxOutputBytes" in refused.stderr


def test_the_agent_asks_the_runtime_through_its_socket_directory_unless_told_not_to(helm_home: Path) -> None:
    agent = one(render(helm_home), "DaemonSet", AGENT_SA)
    c = container(agent)
    assert c["args"][c["args"].index("--cri-socket") + 1] == "/run/containerd/containerd.sock"
    volumes = {v["name"]: v for v in agent["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["cri-socket"]["hostPath"] == {"path": "/run/containerd", "type": "Directory"}
    assert mounts["cri-socket"] == {"name": "cri-socket", "mountPath": "/run/containerd", "readOnly": True}

    elsewhere = container(one(render(helm_home, {"agent.criSocket": "/tmp/node-1/cri.sock"}), "DaemonSet"))
    assert elsewhere["args"][elsewhere["args"].index("--cri-socket") + 1] == "/tmp/node-1/cri.sock"
    assert {"name": "cri-socket", "mountPath": "/tmp/node-1", "readOnly": True} in elsewhere["volumeMounts"]

    off = one(render(helm_home, {"agent.criSocket": ""}), "DaemonSet")
    assert "--cri-socket" not in container(off)["args"]
    assert "cri-socket" not in {v["name"] for v in off["spec"]["template"]["spec"]["volumes"]}

    for bad in ("run/containerd.sock", "/containerd.sock", "/run/containerd/"):
        refused = helm.run_helm(
            "template",
            str(CHART),
            *helm.set_args({**VALUES, "agent.criSocket": bad}),
            home=helm_home,
            check=False,
        )
        assert refused.returncode != 0 and "agent/criSocket" in refused.stderr, bad


def test_agent_without_privilege_takes_the_tpm_from_a_device_plugin(helm_home: Path) -> None:
    agent = one(render(helm_home, {"agent.tpm.access": "devicePlugin"}), "DaemonSet")
    c = container(agent)
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
    assert c["resources"]["limits"]["squat.ai/tpmrm"] == 1
    assert "tpm" not in {v["name"] for v in agent["spec"]["template"]["spec"]["volumes"]}


def test_agent_reaches_a_software_tpm_through_a_tcti_without_privilege(helm_home: Path) -> None:
    tcti = "swtpm:host=10.0.0.5,port=2321"
    agent = one(render(helm_home, {"agent.tpm.access": "tcti", "agent.tpm.tcti": tcti}), "DaemonSet")
    c = container(agent)
    assert c["args"][c["args"].index("--tpm") + 1] == tcti
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}
    assert "squat.ai/tpmrm" not in (c["resources"].get("limits") or {})
    assert "tpm" not in {v["name"] for v in agent["spec"]["template"]["spec"]["volumes"]}


@pytest.mark.parametrize(
    ("tpm", "message"),
    [
        ({"access": "tcti"}, "agent.tpm.tcti is required with agent.tpm.access=tcti"),
        ({"access": "tcti", "tcti": "swtpm:host=a b"}, "/agent/tpm/tcti"),
        ({"access": "socket"}, "/agent/tpm/access"),
    ],
    ids=["tcti-missing", "tcti-malformed", "unknown-access"],
)
def test_template_refuses_a_tpm_access_it_cannot_render(
    helm_home: Path, tpm: dict[str, str], message: str
) -> None:
    values = {
        "operator.image": OPERATOR,
        "agent.image": AGENT,
        **{f"agent.tpm.{k}": v for k, v in tpm.items()},
    }
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(values)]
    done = helm.run_helm(*args, home=helm_home, check=False)
    assert done.returncode != 0, done.stdout
    assert message in done.stderr


def test_rbac_has_no_wildcards(helm_home: Path) -> None:
    roles = [d for d in render(helm_home) if d["kind"] in ("ClusterRole", "Role")]
    assert len(roles) == 6  # operator, agent, their lease roles, tenant edit and view
    for role in roles:
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, role["metadata"]["name"]
            for field in ("apiGroups", "resources", "verbs"):
                assert not [v for v in rule[field] if "*" in v], (role["metadata"]["name"], rule)


def test_policies_name_the_releases_service_accounts(helm_home: Path) -> None:
    docs = render(helm_home)
    text = json.dumps([d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"])
    assert set(re.findall(r"system:serviceaccount:[a-z0-9.-]+:[a-z0-9.-]+", text)) == {
        f"system:serviceaccount:{NAMESPACE}:{OPERATOR_SA}",
        f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}",
    }
    assert "aicert-system" not in text
    for binding in (d for d in docs if d["kind"].endswith("Binding") and "subjects" in d):
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in {
                (NAMESPACE, OPERATOR_SA),
                (NAMESPACE, AGENT_SA),
            }


def test_tenant_roles_are_optional(helm_home: Path) -> None:
    names = {d["metadata"]["name"] for d in render(helm_home, {"tenantRbac.enabled": False})}
    assert f"{RELEASE}-edit" not in names and f"{RELEASE}-view" not in names
    assert {f"{RELEASE}-edit", f"{RELEASE}-view"} <= {d["metadata"]["name"] for d in render(helm_home)}


def test_network_policies_open_only_metrics_health_api_server_and_dns(helm_home: Path) -> None:
    policies = {d["metadata"]["name"]: d for d in render(helm_home) if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {OPERATOR_SA, AGENT_SA}
    ports = {name: {p["port"] for p in p_["spec"]["ingress"][0]["ports"]} for name, p_ in policies.items()}
    assert ports == {OPERATOR_SA: {8080, 8081}, AGENT_SA: {9484}}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert len(policy["spec"]["ingress"]) == 1
        egress_ports = {
            (p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]
        }
        assert egress_ports == {("TCP", 443), ("TCP", 6443), ("UDP", 53), ("TCP", 53)}


def test_a_cvm_agent_may_reach_azure_imds_for_its_vcek_chain_and_nothing_else(helm_home: Path) -> None:
    def agent_egress(values: dict[str, object]) -> list[dict[str, Any]]:
        policy = one(render(helm_home, values), "NetworkPolicy", AGENT_SA)
        rules: list[dict[str, Any]] = policy["spec"]["egress"]
        return rules

    imds = {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}], "ports": [{"protocol": "TCP", "port": 80}]}
    assert imds in agent_egress({"agent.assurance": "cvm"})
    assert imds not in agent_egress({"agent.assurance": "vtpm"})
    elsewhere = {"agent.assurance": "cvm", "agent.thimUrl": "http://thim.example/amd"}
    assert imds not in agent_egress(elsewhere)  # then its egress is the user's, in extraEgress
    args = container(one(render(helm_home, elsewhere), "DaemonSet"))["args"]
    assert args[args.index("--thim-url") + 1] == "http://thim.example/amd"


def test_a_cvm_agent_reads_its_known_good_paravisor_list_from_a_config_map(helm_home: Path) -> None:
    """Without the list the agent never labels a node cvm (cvm-measurement); the chart mounts the
    operator's ConfigMap read-only and names the file with --paravisor-measurements."""
    bare = container(one(render(helm_home, {"agent.assurance": "cvm"}), "DaemonSet"))
    assert "--paravisor-measurements" not in bare["args"]
    values = {
        "agent.assurance": "cvm",
        "agent.paravisorMeasurements": {"configMap": "azure-hcl", "key": "list.txt"},
    }
    daemonset = one(render(helm_home, values), "DaemonSet")
    agent = container(daemonset)
    path = agent["args"][agent["args"].index("--paravisor-measurements") + 1]
    (mount,) = [m for m in agent["volumeMounts"] if m["name"] == "paravisor"]
    assert mount["readOnly"] is True and path == f"{mount['mountPath']}/measurements.txt"
    (volume,) = [v for v in daemonset["spec"]["template"]["spec"]["volumes"] if v["name"] == "paravisor"]
    assert volume["configMap"] == {
        "name": "azure-hcl",
        "items": [{"key": "list.txt", "path": "measurements.txt"}],
    }


def test_a_transparency_log_gives_the_agent_its_url_and_key_from_a_config_map(helm_home: Path) -> None:
    bare = container(one(render(helm_home), "DaemonSet"))
    assert "--tlog-url" not in bare["args"] and "--tlog-key" not in bare["args"]
    values = {
        "agent.transparencyLog": {
            "url": "http://rekor.log.svc:3000",
            "publicKey": {"configMap": "rekor-log-key", "key": "log.pem"},
        }
    }
    daemonset = one(render(helm_home, values), "DaemonSet")
    agent = container(daemonset)
    assert agent["args"][agent["args"].index("--tlog-url") + 1] == "http://rekor.log.svc:3000"
    path = agent["args"][agent["args"].index("--tlog-key") + 1]
    (mount,) = [m for m in agent["volumeMounts"] if m["name"] == "tlog-key"]
    assert mount["readOnly"] is True and path == f"{mount['mountPath']}/log.pem"
    (volume,) = [v for v in daemonset["spec"]["template"]["spec"]["volumes"] if v["name"] == "tlog-key"]
    assert volume["configMap"] == {"name": "rekor-log-key", "items": [{"key": "log.pem", "path": "log.pem"}]}
    assert "--tlog-read-url" not in agent["args"]  # the read API at the url
    values["agent.transparencyLog"]["readUrl"] = "http://rekor-tiles.log.svc"
    agent = container(one(render(helm_home, values), "DaemonSet"))
    assert agent["args"][agent["args"].index("--tlog-read-url") + 1] == "http://rekor-tiles.log.svc"
    alone = {"agent.transparencyLog": {"readUrl": "http://rekor-tiles.log.svc"}}  # no log: nothing
    assert "--tlog-read-url" not in container(one(render(helm_home, alone), "DaemonSet"))["args"]
    # a url without the log's key: the agent could keep no answer, so the schema refuses it
    with pytest.raises(helm.HelmError, match="publicKey"):
        render(helm_home, {"agent.transparencyLog": {"url": "http://rekor.log.svc:3000"}})


def test_monitoring_objects_need_the_prometheus_operator_api(helm_home: Path) -> None:
    enabled: dict[str, object] = {
        "monitoring.serviceMonitor.enabled": True,
        "monitoring.prometheusRule.enabled": True,
    }
    kinds = {d["kind"] for d in render(helm_home, enabled)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    with_api = render(helm_home, enabled, api_versions=["monitoring.coreos.com/v1"])
    assert {d["metadata"]["name"] for d in with_api if d["kind"] == "ServiceMonitor"} == {
        OPERATOR_SA,
        AGENT_SA,
    }
    rules = {r["alert"]: r for g in one(with_api, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert (
        "aicert_agent_ak_certificate_expiry_timestamp_seconds"
        in rules["AicertAkCertificateExpiresSoon"]["expr"]
    )
    assert rules["AicertAgentDown"]["expr"].startswith(f'up{{job="{AGENT_SA}-metrics"')
    off = render(helm_home, api_versions=["monitoring.coreos.com/v1"])
    assert not {d["kind"] for d in off} & {"ServiceMonitor", "PrometheusRule"}


# --- against the API server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("helm-cluster")) as running:
        running.kubectl("create", "namespace", NAMESPACE)
        yield running


def run(cluster: LocalCluster, helm_home: Path, *args: str) -> str:
    return helm.run_helm(*args, kubeconfig=cluster.admin_kubeconfig, home=helm_home).stdout


def history(cluster: LocalCluster, helm_home: Path) -> list[tuple[int, str, str]]:
    revisions = json.loads(
        run(cluster, helm_home, "history", RELEASE, "--namespace", NAMESPACE, "-o", "json")
    )
    return [(r["revision"], r["chart"], r["status"]) for r in revisions]


def test_server_side_dry_run_of_the_rendered_manifests(cluster: LocalCluster, helm_home: Path) -> None:
    manifest = helm.template(VALUES, release=RELEASE, namespace=NAMESPACE, home=helm_home)
    done = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=manifest)
    assert len([line for line in done.stdout.splitlines() if "(server dry run)" in line]) == len(
        documents(manifest)
    )


def packaged(work: Path, version: str, change: Callable[[Path], None], helm_home: Path) -> Path:
    """The chart copied (its CRD symlink resolved), changed, and packaged as `version`."""
    copy = work / "aicert"
    shutil.copytree(CHART, copy)
    change(copy)
    chart_yaml = copy / "Chart.yaml"
    chart_yaml.write_text(re.sub(r"(?m)^version: .*$", f"version: {version}", chart_yaml.read_text()))
    helm.run_helm("package", str(copy), "--destination", str(work), home=helm_home)
    return work / f"aicert-{version}.tgz"


def _as_0_0_9(copy: Path) -> None:
    """The release before this one carried the CRD in crds/ (installed once, never upgraded)."""
    (copy / "crds").mkdir()
    (copy / "files" / CRD.name).rename(copy / "crds" / CRD.name)
    (copy / "templates" / "crds.yaml").unlink()


@pytest.fixture(scope="module")
def previous_chart(tmp_path_factory: pytest.TempPathFactory, helm_home: Path) -> Path:
    """The chart as a packaged 0.0.9, standing for the release before this one."""
    package = packaged(tmp_path_factory.mktemp("previous"), "0.0.9", _as_0_0_9, helm_home)
    with tarfile.open(package) as tar:
        assert "aicert/crds/certifiedtrainings.aicert.dev.yaml" in tar.getnames()
        assert not [n for n in tar.getnames() if n.startswith("aicert/ci/")]  # .helmignore
    return package


TRAININGS = ("digits", "digits-retrained")


def training(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "image": "registry.local/aicert/digits-train@sha256:" + "ab" * 32,
            "inputs": [
                {
                    "name": "digits",
                    "persistentVolumeClaim": {"claimName": "digits-data"},
                    "mountPath": "/data",
                }
            ],
            "output": {
                "volumeClaimTemplate": {"storageClassName": "standard", "size": "1Gi"},
                "mountPath": "/model",
            },
        },
    }


def trainings(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    items = cluster.kubectl_json("get", "certifiedtrainings", "-n", "default")["items"]
    return {item["metadata"]["name"]: item for item in items}


def crd(cluster: LocalCluster) -> dict[str, Any]:
    found: dict[str, Any] = cluster.kubectl_json("get", "crd", "certifiedtrainings.aicert.dev")
    return found


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster, helm_home: Path, previous_chart: Path) -> dict[str, dict[str, Any]]:
    """`helm install` of the previous chart; two trainings whose status (with a certificate) the
    release's operator wrote. Returns the trainings as they were then."""
    run(
        cluster,
        helm_home,
        "install",
        RELEASE,
        str(previous_chart),
        "--namespace",
        NAMESPACE,
        *helm.set_args(VALUES),
    )
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/certifiedtrainings.aicert.dev", "--timeout=60s"
    )
    operator = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_SA}"
    for name in TRAININGS:
        cluster.kubectl("create", "-f", "-", input=json.dumps(training(name)))
        status = {
            "status": {
                "phase": "Succeeded",
                "reason": "Certified",
                "certificate": json.dumps({"statement": {"subject": [{"name": name}]}, "signature": "c2ln"}),
                "modelDigest": "sha256:" + "cd" * 32,
            }
        }

        def patched(name: str = name, status: dict[str, Any] = status) -> bool:
            # The release's status-writers policy lets only its operator (and agent) write status;
            # policies take a moment to load after install.
            done = cluster.kubectl(
                "patch",
                "certifiedtraining",
                name,
                "-n",
                "default",
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(status),
                f"--as={operator}",
                check=False,
            )
            return done.returncode == 0

        eventually(patched, f"the operator to write the status of {name}")
    before = trainings(cluster)
    assert {n: t["status"]["phase"] for n, t in before.items()} == dict.fromkeys(TRAININGS, "Succeeded")
    return before


def test_install_of_the_previous_version_creates_the_crd_and_the_release(
    cluster: LocalCluster, helm_home: Path, installed: dict[str, dict[str, Any]]
) -> None:
    assert history(cluster, helm_home) == [(1, "aicert-0.0.9", "deployed")]
    notes = run(cluster, helm_home, "get", "notes", RELEASE, "--namespace", NAMESPACE)
    assert f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}" in notes
    assert "kubectl label node <node> aicert.dev/agent=true" in notes
    assert crd(cluster)["spec"]["names"]["kind"] == "CertifiedTraining"
    for kind, name in (("deployment", OPERATOR_SA), ("daemonset", AGENT_SA), ("serviceaccount", AGENT_SA)):
        cluster.kubectl("get", kind, name, "-n", NAMESPACE)


def test_the_release_policies_type_check_and_trust_its_operator(
    cluster: LocalCluster, installed: dict[str, dict[str, Any]]
) -> None:
    def checked() -> list[dict[str, Any]] | None:
        policies = [
            p
            for p in cluster.kubectl_json("get", "validatingadmissionpolicies")["items"]
            if p["metadata"]["name"].startswith(f"{RELEASE}-")
        ]
        done = all(
            (p.get("status") or {}).get("observedGeneration") == p["metadata"]["generation"] for p in policies
        )
        return policies if done else None

    policies = eventually(checked, "the release's policies to be type-checked")
    assert len(policies) == 11
    warnings = [
        w
        for p in policies
        for w in ((p.get("status") or {}).get("typeChecking") or {}).get("expressionWarnings") or []
    ]
    assert warnings == []
    pod = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "namespace": "default", "labels": {"aicert.dev/training": "probe"}},
            "spec": {"containers": [{"name": "c", "image": "probe"}]},
        }
    )
    denied = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=pod, check=False)
    assert denied.returncode != 0
    assert "only the aicert operator may create pods with aicert.dev/ labels" in denied.stderr
    as_operator = f"--as=system:serviceaccount:{NAMESPACE}:{OPERATOR_SA}"
    cluster.kubectl("create", "--dry-run=server", as_operator, "-f", "-", input=pod)


OPERATOR_MAY = [
    ("create", "pods", "default"),
    ("delete", "pods", "default"),
    ("watch", "pods", ""),
    ("patch", "certifiedtrainings.aicert.dev/status", "default"),
    ("patch", "certifiedtrainings.aicert.dev", "default"),
    ("list", "certifiedtrainings.aicert.dev", ""),
    ("patch", "nodes", ""),
    ("watch", "nodes", ""),
    ("create", "networkpolicies.networking.k8s.io", "default"),
    ("create", "persistentvolumeclaims", "default"),
    ("create", "events.events.k8s.io", "default"),
    ("update", "leases.coordination.k8s.io", NAMESPACE),
    ("list", "leases.coordination.k8s.io", NAMESPACE),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ""),
]
OPERATOR_MAY_NOT = [
    ("get", "secrets", "default"),
    ("get", "secrets", NAMESPACE),
    ("create", "certifiedtrainings.aicert.dev", "default"),
    ("delete", "certifiedtrainings.aicert.dev", "default"),
    ("update", "pods", "default"),
    ("create", "pods/exec", "default"),
    ("delete", "nodes", ""),
    ("patch", "nodes/status", ""),
    ("delete", "networkpolicies.networking.k8s.io", "default"),
    ("update", "leases.coordination.k8s.io", "default"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("impersonate", "serviceaccounts", "default"),
]
AGENT_MAY = [
    ("patch", "certifiedtrainings.aicert.dev/status", "default"),
    ("get", "certifiedtrainings.aicert.dev", "default"),
    ("list", "pods", ""),
    ("watch", "pods", ""),
    ("get", "persistentvolumeclaims", "default"),
    ("list", "persistentvolumes", ""),
    ("list", "networkpolicies.networking.k8s.io", ""),
    ("watch", "networkpolicies.networking.k8s.io", ""),
    ("patch", "nodes", ""),
    ("patch", "nodes/status", ""),
    ("create", "events.events.k8s.io", "default"),
    ("create", "leases.coordination.k8s.io", NAMESPACE),
    ("update", "leases.coordination.k8s.io", NAMESPACE),
]
AGENT_MAY_NOT = [
    ("create", "pods", "default"),
    ("delete", "pods", "default"),
    ("create", "pods/exec", "default"),
    ("delete", "nodes", ""),
    ("get", "secrets", "default"),
    ("list", "certifiedtrainings.aicert.dev", "default"),
    ("patch", "certifiedtrainings.aicert.dev", "default"),
    ("list", "persistentvolumeclaims", "default"),
    ("list", "leases.coordination.k8s.io", NAMESPACE),
    ("update", "leases.coordination.k8s.io", "default"),
    ("create", "networkpolicies.networking.k8s.io", "default"),
    ("delete", "networkpolicies.networking.k8s.io", "default"),
    ("create", "ciliumnetworkpolicies.cilium.io", "default"),
]


def can(cluster: LocalCluster, account: str, verb: str, resource: str, namespace: str) -> bool:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{NAMESPACE}:{account}"]
    args += ["--subresource", subresource] if subresource else []
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    answer = cluster.kubectl(*args, check=False).stdout.strip()
    assert answer in ("yes", "no"), answer
    return answer == "yes"


@pytest.mark.parametrize(
    ("account", "verb", "resource", "namespace", "allowed"),
    [(OPERATOR_SA, *case, True) for case in OPERATOR_MAY]
    + [(OPERATOR_SA, *case, False) for case in OPERATOR_MAY_NOT]
    + [(AGENT_SA, *case, True) for case in AGENT_MAY]
    + [(AGENT_SA, *case, False) for case in AGENT_MAY_NOT],
    ids=[
        f"{account.removeprefix(RELEASE + '-')}-{'may' if allowed else 'may-not'}-{verb}-{resource.split('.')[0]}"
        f"{'/status' if resource.endswith('/status') else ''}-in-{namespace or 'all'}"
        for account, allowed, cases in (
            (OPERATOR_SA, True, OPERATOR_MAY),
            (OPERATOR_SA, False, OPERATOR_MAY_NOT),
            (AGENT_SA, True, AGENT_MAY),
            (AGENT_SA, False, AGENT_MAY_NOT),
        )
        for verb, resource, namespace in cases
    ],
)
def test_what_the_service_accounts_may_do(
    cluster: LocalCluster,
    installed: dict[str, dict[str, Any]],
    account: str,
    verb: str,
    resource: str,
    namespace: str,
    allowed: bool,
) -> None:
    assert can(cluster, account, verb, resource, namespace) is allowed


def test_tenants_with_edit_create_trainings_but_not_their_status(
    cluster: LocalCluster, installed: dict[str, dict[str, Any]]
) -> None:
    cluster.kubectl(
        "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", "default"
    )

    def may(verb: str, resource: str, *extra: str) -> bool:
        args = ["auth", "can-i", verb, resource, "--as=alice", "-n", "default", *extra]
        return cluster.kubectl(*args, check=False).stdout.strip() == "yes"

    eventually(lambda: may("create", "certifiedtrainings.aicert.dev"), "edit to aggregate the tenant role")
    assert may("delete", "certifiedtrainings.aicert.dev")
    assert not may("patch", "certifiedtrainings.aicert.dev")
    assert not may("patch", "certifiedtrainings.aicert.dev", "--subresource=status")


def assert_trainings_intact(cluster: LocalCluster, before: dict[str, dict[str, Any]]) -> None:
    now = trainings(cluster)
    assert set(now) == set(before)
    for name, item in now.items():
        assert item["metadata"]["uid"] == before[name]["metadata"]["uid"]
        assert item["status"] == before[name]["status"]
        assert json.loads(item["status"]["certificate"])["statement"]["subject"][0]["name"] == name
        assert not item["metadata"].get("finalizers")
        assert "deletionTimestamp" not in item["metadata"]


def test_upgrade_from_the_previous_version_adopts_the_crd_and_keeps_trainings(
    cluster: LocalCluster, helm_home: Path, installed: dict[str, dict[str, Any]]
) -> None:
    definition = crd(cluster)
    upgrade = ["upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(VALUES)]
    # The CRD that crds/ installed belongs to no release: Helm will not take it over unasked.
    refused = helm.run_helm(*upgrade, kubeconfig=cluster.admin_kubeconfig, home=helm_home, check=False)
    assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr, refused.stderr
    # docs/operations.md, "Upgrade and uninstall": adopt it into the release once.
    cluster.kubectl("label", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl(
        "annotate",
        "crd",
        CRD_NAME,
        f"meta.helm.sh/release-name={RELEASE}",
        f"meta.helm.sh/release-namespace={NAMESPACE}",
    )
    run(cluster, helm_home, *upgrade)
    assert history(cluster, helm_home)[-1][1:] == ("aicert-0.1.0", "deployed")
    after = crd(cluster)
    assert after["metadata"]["uid"] == definition["metadata"]["uid"]
    assert after["metadata"]["generation"] == definition["metadata"]["generation"]
    assert after["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert_trainings_intact(cluster, installed)


def _with_a_crd_column(copy: Path) -> None:
    target = copy / "files" / CRD.name
    text = target.read_text()
    column = "        - {name: Probe, type: string, jsonPath: .status.podName, priority: 1}\n"
    marker = "      additionalPrinterColumns:\n"
    assert marker in text
    target.write_text(text.replace(marker, marker + column, 1))


def test_upgrade_applies_a_changed_crd_and_keeps_trainings(
    cluster: LocalCluster,
    helm_home: Path,
    installed: dict[str, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    definition = crd(cluster)
    changed = packaged(tmp_path_factory.mktemp("next"), "0.1.1", _with_a_crd_column, helm_home)
    run(
        cluster, helm_home, "upgrade", RELEASE, str(changed), "--namespace", NAMESPACE, *helm.set_args(VALUES)
    )
    after = crd(cluster)
    assert after["metadata"]["uid"] == definition["metadata"]["uid"]
    assert after["metadata"]["generation"] > definition["metadata"]["generation"]
    [version] = after["spec"]["versions"]
    assert "Probe" in [c["name"] for c in version["additionalPrinterColumns"]]
    assert_trainings_intact(cluster, installed)


def test_upgrade_with_a_changed_value_keeps_crd_and_trainings(
    cluster: LocalCluster, helm_home: Path, installed: dict[str, dict[str, Any]]
) -> None:
    definition = crd(cluster)
    changed = {**VALUES, "operator.replicas": 3, "agent.leaseSeconds": 45}
    run(cluster, helm_home, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(changed))
    deployment = cluster.kubectl_json("get", "deployment", OPERATOR_SA, "-n", NAMESPACE)
    assert deployment["spec"]["replicas"] == 3
    args = cluster.kubectl_json("get", "daemonset", AGENT_SA, "-n", NAMESPACE)["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert args[args.index("--lease-seconds") + 1] == "45"
    assert crd(cluster)["metadata"]["uid"] == definition["metadata"]["uid"]
    assert_trainings_intact(cluster, installed)


def live_previous_images(cluster: LocalCluster) -> tuple[str, str]:
    """As previous_images; the API server stores `value: ""` as no value."""
    operator, agent = previous_images(
        [
            cluster.kubectl_json("get", "deployment", OPERATOR_SA, "-n", NAMESPACE),
            cluster.kubectl_json("get", "daemonset", AGENT_SA, "-n", NAMESPACE),
        ]
    )
    return operator or "", agent or ""


def test_an_upgrade_to_a_new_agent_image_accepts_the_previous_ones_pods(
    cluster: LocalCluster, helm_home: Path, installed: dict[str, dict[str, Any]]
) -> None:
    """`helm upgrade` reads the live release (`lookup`): the agent image it replaces becomes the
    previous one, for the operator and the agent alike; an upgrade that keeps the image keeps it."""
    assert live_previous_images(cluster) == ("", "")  # the upgrades so far kept the image
    newer = "registry.local/aicert/agent@sha256:" + "1e" * 32
    values = {**VALUES, "agent.image": image(newer)}
    run(cluster, helm_home, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(values))
    assert live_previous_images(cluster) == (AGENT_IMAGE, AGENT_IMAGE)
    changed = {**values, "agent.leaseSeconds": 40}
    run(cluster, helm_home, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(changed))
    assert live_previous_images(cluster) == (AGENT_IMAGE, AGENT_IMAGE)
    # the next image upgrade moves the window: the release two back is no longer accepted
    newest = "registry.local/aicert/agent@sha256:" + "2d" * 32
    latest = {**changed, "agent.image": image(newest)}
    run(cluster, helm_home, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(latest))
    assert live_previous_images(cluster) == (newer, newer)
    # an explicit value wins over the lookup; previousImageLookup=false with none accepts no other
    explicit = {**latest, "agent.previousImage": image(PREVIOUS_AGENT_IMAGE)}
    run(
        cluster, helm_home, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(explicit)
    )
    assert live_previous_images(cluster) == (PREVIOUS_AGENT_IMAGE, PREVIOUS_AGENT_IMAGE)
    closed = {**latest, "agent.previousImageLookup": False}
    run(cluster, helm_home, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, *helm.set_args(closed))
    assert live_previous_images(cluster) == ("", "")
    assert_trainings_intact(cluster, installed)


def test_uninstall_leaves_crd_and_trainings_and_nothing_stuck(
    cluster: LocalCluster, helm_home: Path, installed: dict[str, dict[str, Any]]
) -> None:
    manifest = run(cluster, helm_home, "get", "manifest", RELEASE, "--namespace", NAMESPACE)
    released = [
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in documents(manifest)
    ]
    assert len(released) > 30
    assert ("CustomResourceDefinition", CRD_NAME, None) in released
    run(cluster, helm_home, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "2m")
    for kind, name, namespace in released:
        if kind == "CustomResourceDefinition":
            continue  # helm.sh/resource-policy: keep
        where = ["-n", namespace] if namespace else []
        done = cluster.kubectl("get", kind, name, *where, "--ignore-not-found", "-o", "name")
        assert done.stdout.strip() == "", f"{kind} {name} is still there"
    assert crd(cluster)["metadata"].get("deletionTimestamp") is None
    assert_trainings_intact(cluster, installed)

    def settled() -> bool:
        # nothing the release made (pods of the Deployment included) is left terminating
        pods = cluster.kubectl_json("get", "pods", "-n", NAMESPACE)["items"]
        return not pods

    eventually(settled, "the operator's pods to go")
    # and no finalizer holds a training: deleting one after the uninstall completes
    cluster.kubectl(
        "delete", "certifiedtraining", TRAININGS[0], "-n", "default", "--wait=true", "--timeout=60s"
    )
    assert set(trainings(cluster)) == set(TRAININGS[1:])


def test_helm_reports_the_pinned_version(helm_home: Path) -> None:
    assert helm.run_helm("version", "--short", home=helm_home).stdout.startswith(helm.helm_version())

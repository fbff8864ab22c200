"""`aicert aks check` and `aicert aks create-nodepool` against a fake Azure Resource Manager.

The real azure-mgmt-containerservice client talks HTTPS to `tests/fake_arm.py` (its CA made here,
trusted through REQUESTS_CA_BUNDLE) with a fixed-token credential; the fake records every request,
so the tests pin the exact requests, the long-running operation's polls and ARM's error handling.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.policies import RetryPolicy
from azure.mgmt.containerservice import ContainerServiceClient
from tests.fake_arm import TOKEN, FakeArm, FixedToken, TlsFiles, issue_tls, vm_sku

from aicert.aks import arm
from aicert.cli import main

SUBSCRIPTION = "6f1c2f4e-0d4b-4c51-9a55-3b1c0c8f0a11"
GROUP, CLUSTER = "ml-rg", "aks1"
A100 = "Standard_NC24ads_A100_v4"
H100 = "Standard_NC40ads_H100_v5"
CONFIDENTIAL_H100 = "Standard_NCC40ads_H100_v5"
# What the SDK sends: the agent pool API version of this azure-mgmt-containerservice.
AKS_API_VERSION = ContainerServiceClient(FixedToken(), SUBSCRIPTION)._config.api_version

FIT_GPU_POOL: dict[str, Any] = {
    "vmSize": A100,
    "count": 1,
    "mode": "User",
    "osType": "Linux",
    "osSKU": "Ubuntu",
    "securityProfile": {"enableVTPM": True, "enableSecureBoot": True},
    "gpuProfile": {"driver": "None"},
    "nodeLabels": {"aicert.dev/agent": "true"},
    "nodeTaints": ["sku=gpu:NoSchedule"],
    "provisioningState": "Succeeded",
}
SYSTEM_POOL: dict[str, Any] = {"vmSize": "Standard_D4s_v5", "count": 3, "mode": "System", "osType": "Linux"}


REGION_SKUS = [
    vm_sku("Standard_D4s_v5", ("HyperVGenerations", "V1,V2")),
    vm_sku(A100, ("HyperVGenerations", "V1,V2"), ("GPUs", "1")),
    vm_sku(H100, ("HyperVGenerations", "V2"), ("GPUs", "1")),
    vm_sku(
        CONFIDENTIAL_H100, ("HyperVGenerations", "V2"), ("ConfidentialComputingType", "SNP"), ("GPUs", "1")
    ),
    vm_sku(CONFIDENTIAL_H100, ("ConfidentialComputingType", "SNP"), location="eastus2"),
]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return issue_tls(tmp_path_factory.mktemp("fake-arm-tls"))


@pytest.fixture
def credential(monkeypatch: pytest.MonkeyPatch) -> FixedToken:
    token = FixedToken()
    monkeypatch.setattr(arm, "default_credential", lambda: token)
    return token


@pytest.fixture
def fake(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch, credential: FixedToken) -> Iterator[FakeArm]:
    arm_fake = FakeArm(SUBSCRIPTION, GROUP, CLUSTER, skus=list(REGION_SKUS))
    arm_fake.pools = {"gpu1": copy.deepcopy(FIT_GPU_POOL), "nodepool1": copy.deepcopy(SYSTEM_POOL)}
    server = arm_fake.serve(tls)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))  # the SDK's requests transport trusts our CA
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    yield arm_fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def aicert(fake: FakeArm, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run `aicert aks ACTION …` against the fake, with the cluster options filled in."""

    def run(action: str, *argv: str, subscription: str | None = SUBSCRIPTION) -> Run:
        cluster = ["-g", GROUP, "--cluster", CLUSTER, "--arm-endpoint", fake.url, "--poll-seconds", "0"]
        if subscription:
            cluster += ["--subscription", subscription]
        code = main(["aks", action, *cluster, *argv])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


# -- check --------------------------------------------------------------------------------------


def test_check_reads_the_cluster_then_its_pools_signed_with_the_token(
    fake: FakeArm, aicert: Callable[..., Run], credential: FixedToken
) -> None:
    run = aicert("check")
    assert run.code == 0, run.err
    assert fake.calls() == [("GET", fake.cluster_path), ("GET", f"{fake.cluster_path}/agentPools")]
    assert {r.api_version for r in fake.requests} == {AKS_API_VERSION}
    assert {r.headers["authorization"] for r in fake.requests} == {f"Bearer {TOKEN}"}
    assert set(credential.scopes) == {(f"{fake.url}/.default",)}  # the scope follows the endpoint


def test_check_says_per_pool_what_it_supports_and_lacks(aicert: Callable[..., Run]) -> None:
    run = aicert("check")
    assert run.out.splitlines() == [
        "cluster aks1 (westeurope): a GPU pool for level vtpm trainings",
        f"gpu1  {A100}  supports vtpm  fit for vtpm",
        "nodepool1  Standard_D4s_v5  supports none  NOT fit for vtpm:",
        "    - no vTPM: securityProfile.enableVTPM is not true "
        "(az aks nodepool update --enable-vtpm, on a pool created with a Trusted Launch image)",
        "    - no Secure Boot: securityProfile.enableSecureBoot is not true "
        "(az aks nodepool update --enable-secure-boot)",
        "    - no GPU: Standard_D4s_v5 has none (check CPU pools with --no-gpu)",
        "    - no node label aicert.dev/agent=true, which the agent DaemonSet selects "
        "(az aks nodepool update --labels aicert.dev/agent=true)",
        "fit for vtpm: gpu1",
    ]


def test_check_json_and_one_pool(fake: FakeArm, aicert: Callable[..., Run]) -> None:
    run = aicert("check", "--nodepool", "nodepool1", "--json")
    assert run.code == 1
    assert fake.calls()[1:] == [("GET", f"{fake.cluster_path}/agentPools/nodepool1")]
    result = run.json()
    [pool] = result.pop("pools")
    assert result == {
        "cluster": CLUSTER,
        "resourceGroup": GROUP,
        "location": "westeurope",
        "level": "vtpm",
    } | {
        "gpu": True,
        "fit": False,
    }
    assert [m["item"] for m in pool.pop("missing")] == ["no-vtpm", "no-secure-boot", "no-gpu", "label"]
    assert pool == {"name": "nodepool1", "vmSize": "Standard_D4s_v5", "supports": None, "fit": False}


@pytest.mark.parametrize(
    ("change", "level", "item"),
    [
        ({"securityProfile": {"enableSecureBoot": True}}, "vtpm", "no-vtpm"),
        ({"securityProfile": {"enableVTPM": True}}, "vtpm", "no-secure-boot"),
        ({"vmSize": "Standard_NC6s_v3"}, "vtpm", "size"),  # not in AICert's catalogue
        ({}, "cvm", "size"),  # a Trusted Launch size is not confidential
        ({"vmSize": "Standard_D8s_v5"}, "vtpm", "no-gpu"),
        ({"gpuProfile": {"driver": "Install"}}, "vtpm", "gpu-driver"),
        ({"nodeLabels": {"team": "ml"}}, "vtpm", "label"),
        ({"nodeTaints": []}, "vtpm", "taint"),
        ({"osType": "Windows", "osSKU": "Windows2022"}, "vtpm", "os"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_check_names_the_one_thing_a_pool_lacks(
    fake: FakeArm, aicert: Callable[..., Run], change: dict[str, Any], level: str, item: str
) -> None:
    fake.pools["gpu1"].update(change)
    run = aicert("check", "--nodepool", "gpu1", "--level", level, "--json")
    assert run.code == 1
    [pool] = run.json()["pools"]
    assert [m["item"] for m in pool["missing"]] == [item]


def test_check_a_confidential_gpu_pool_is_fit_for_both_levels(
    fake: FakeArm, aicert: Callable[..., Run]
) -> None:
    fake.pools["cgpu"] = {**FIT_GPU_POOL, "vmSize": CONFIDENTIAL_H100, "securityProfile": {}}
    for level in ("cvm", "vtpm"):
        run = aicert("check", "--nodepool", "cgpu", "--level", level)
        assert run.code == 0
        assert f"cgpu  {CONFIDENTIAL_H100}  supports cvm  fit for {level}" in run.out


def test_check_when_no_pool_is_fit(aicert: Callable[..., Run]) -> None:
    run = aicert("check", "--level", "cvm")
    assert run.code == 1
    assert run.out.splitlines()[-1] == "no agent pool is fit for cvm"
    assert f"gpu1  {A100}  supports vtpm  NOT fit for cvm:" in run.out


def test_check_cpu_pools_with_no_gpu(fake: FakeArm, aicert: Callable[..., Run]) -> None:
    fake.pools["cpu"] = {**FIT_GPU_POOL, "vmSize": "Standard_D8s_v5", "nodeTaints": [], "gpuProfile": None}
    run = aicert("check", "--nodepool", "cpu")
    assert run.code == 1 and run.out.splitlines()[-1] == "agent pool cpu is not fit for vtpm"
    run = aicert("check", "--nodepool", "cpu", "--no-gpu")
    assert run.code == 0 and run.out.splitlines()[-1] == "fit for vtpm: cpu"


def test_check_an_unknown_cluster_is_an_arm_error(fake: FakeArm, aicert: Callable[..., Run]) -> None:
    fake.cluster = "other"  # ARM has no aks1 now
    run = aicert("check", "--json")
    assert run.code == 2
    message = f"ARM error ResourceNotFound (HTTP 404): the resource /subscriptions/{SUBSCRIPTION}/resourceGroups/ml-rg/providers/Microsoft.ContainerService/managedClusters/aks1 was not found"
    assert run.json() == {"fit": False, "error": "ResourceNotFound", "message": message}
    assert run.err == f"aicert aks check: {message}\n"


def test_the_subscription_comes_from_the_flag_or_the_environment(
    fake: FakeArm, aicert: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = aicert("check", subscription=None)
    assert (run.code, run.err) == (
        2,
        "aicert aks check: no subscription: give --subscription or set AZURE_SUBSCRIPTION_ID\n",
    )
    assert fake.requests == []
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
    assert aicert("check", subscription=None).code == 0


def test_the_arm_endpoint_can_come_from_the_environment(
    fake: FakeArm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AICERT_ARM_ENDPOINT", fake.url)
    assert main(["aks", "check", "--subscription", SUBSCRIPTION, "-g", GROUP, "--cluster", CLUSTER]) == 0
    assert fake.calls()[0] == ("GET", fake.cluster_path)


def test_a_rejected_token_is_an_arm_error(
    fake: FakeArm, aicert: Callable[..., Run], credential: FixedToken
) -> None:
    credential.token = "expired"
    run = aicert("check")
    assert run.code == 2
    assert (
        run.err
        == "aicert aks check: ARM error InvalidAuthenticationToken (HTTP 401): the access token is invalid\n"
    )


# -- create-nodepool ------------------------------------------------------------------------------


def skus_calls(fake: FakeArm) -> list[tuple[str, str]]:
    return [("GET", fake.skus_path())] * 2  # two pages joined by nextLink


def test_create_a_trusted_launch_gpu_pool_and_follow_the_async_operation(
    fake: FakeArm, aicert: Callable[..., Run]
) -> None:
    run = aicert("create-nodepool", "--nodepool", "h100", "--vm-size", H100, "--count", "2")
    assert run.code == 0, run.err
    pool = fake.pool_path("h100")
    operation = fake.operation_path("operations", "op-1-h100")
    assert fake.calls() == [
        ("GET", fake.cluster_path),
        *skus_calls(fake),
        ("GET", pool),  # 404: a new pool
        ("PUT", pool),
        ("GET", operation),  # InProgress
        ("GET", operation),  # InProgress
        ("GET", operation),  # Succeeded
        ("GET", pool),  # the final GET of the resource
    ]
    skus = fake.requests[1:3]
    assert [r.query.get("$filter") for r in skus] == ["location eq 'westeurope'"] * 2
    assert [r.api_version for r in skus] == ["2021-07-01"] * 2
    assert skus[1].query.get("$skiptoken") == "2"
    put = fake.requests[4]
    assert put.api_version == AKS_API_VERSION
    assert put.headers["content-type"] == "application/json"
    assert put.body == {
        "properties": {
            "type": "VirtualMachineScaleSets",
            "mode": "User",
            "osType": "Linux",
            "osSKU": "Ubuntu",
            "vmSize": H100,
            "count": 2,
            "nodeLabels": {"aicert.dev/agent": "true"},
            "nodeTaints": ["sku=gpu:NoSchedule"],
            "gpuProfile": {"driver": "None"},
            "securityProfile": {"enableVTPM": True, "enableSecureBoot": True},
        }
    }
    assert [r.api_version for r in fake.requests[5:8]] == ["2016-03-30"] * 3  # the operation URL's own
    assert run.err.splitlines() == [
        f"aicert aks: creating agent pool h100 ({H100} x2) in westeurope",
        "aicert aks: agent pool h100: InProgress (accepted)",
        "aicert aks: agent pool h100: InProgress (poll 1)",
        "aicert aks: agent pool h100: InProgress (poll 2)",
        "aicert aks: agent pool h100: Succeeded (poll 3)",
    ]
    assert run.out.splitlines() == [
        "agent pool h100 created: provisioningState Succeeded",
        f"h100  {H100}  supports vtpm  fit for vtpm",
    ]


def test_create_a_confidential_gpu_pool_with_location_polling(
    fake: FakeArm, aicert: Callable[..., Run]
) -> None:
    fake.lro, fake.in_progress_polls = "Location", 1
    run = aicert("create-nodepool", "--nodepool", "cgpu", "--level", "cvm", "--vm-size", CONFIDENTIAL_H100)
    assert run.code == 0, run.err
    pool = fake.pool_path("cgpu")
    result = fake.operation_path("operationresults", "op-1-cgpu")
    # Location polling: 202 while in progress, then 200 with the pool; no final GET of the resource.
    assert fake.calls()[-3:] == [("PUT", pool), ("GET", result), ("GET", result)]
    put_body = fake.requests[4].body["properties"]
    assert "securityProfile" not in put_body  # AKS refuses Trusted Launch flags on a confidential VM
    assert (put_body["vmSize"], put_body["gpuProfile"], put_body["nodeTaints"]) == (
        CONFIDENTIAL_H100,
        {"driver": "None"},
        ["sku=gpu:NoSchedule"],
    )
    assert f"cgpu  {CONFIDENTIAL_H100}  supports cvm  fit for cvm" in run.out


def test_update_an_existing_pool_keeps_its_settings(fake: FakeArm, aicert: Callable[..., Run]) -> None:
    fake.pools["gpu1"].update(
        nodeLabels={"team": "ml"},
        nodeTaints=[],
        gpuProfile=None,
        maxPods=50,
        currentOrchestratorVersion="1.33.2",
    )
    run = aicert("create-nodepool", "--nodepool", "gpu1", "--vm-size", A100, "--count", "3")
    assert run.code == 0, run.err
    [put] = [r for r in fake.requests if r.method == "PUT"]
    props = put.body["properties"]
    assert props["nodeLabels"] == {"team": "ml", "aicert.dev/agent": "true"}
    assert (props["nodeTaints"], props["gpuProfile"], props["maxPods"], props["count"]) == (
        ["sku=gpu:NoSchedule"],
        {"driver": "None"},
        50,
        3,
    )
    assert "provisioningState" not in props and "currentOrchestratorVersion" not in props
    assert run.out.startswith("agent pool gpu1 updated: provisioningState Succeeded\n")


def test_dry_run_prints_the_body_a_real_run_puts_and_puts_nothing(
    fake: FakeArm, aicert: Callable[..., Run]
) -> None:
    dry = aicert("create-nodepool", "--nodepool", "a100", "--vm-size", A100, "--dry-run")
    assert dry.code == 0
    assert fake.calls() == []  # offline: not even the cluster is read
    assert dry.err.startswith("aicert aks: dry run, offline (no Azure credentials used, cluster")
    assert aicert("create-nodepool", "--nodepool", "a100", "--vm-size", A100).code == 0
    [put] = [r for r in fake.requests if r.method == "PUT"]
    assert dry.json() == put.body


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "QuotaExceeded", "Operation results in exceeding quota limits of Core. Maximum allowed: 0"),
        (400, "SkuNotAvailable", "The requested VM size Standard_NC40ads_H100_v5 is currently not available"),
        (409, "OperationNotAllowed", "Another operation (Updating) is in progress on agent pool h100"),
    ],
)
def test_arm_refusing_the_put_exits_2_with_its_code_and_message(
    fake: FakeArm, aicert: Callable[..., Run], status: int, code: str, message: str
) -> None:
    fake.put_error = (status, code, message)
    run = aicert("create-nodepool", "--nodepool", "h100", "--vm-size", H100)
    assert run.code == 2
    assert (
        run.err.splitlines()[-1] == f"aicert aks create-nodepool: ARM error {code} (HTTP {status}): {message}"
    )
    assert fake.calls()[-1] == ("PUT", fake.pool_path("h100"))  # nothing polled after a refused PUT


def test_an_operation_ending_failed_exits_2_with_its_error(fake: FakeArm, aicert: Callable[..., Run]) -> None:
    fake.operation_error = {
        "code": "ReconcileVMSSAgentPoolFailed",
        "message": "Allocation failed. Retry later.",
    }
    run = aicert("create-nodepool", "--nodepool", "h100", "--vm-size", H100)
    assert run.code == 2
    operation = fake.operation_path("operations", "op-1-h100")
    assert fake.calls()[-3:] == [("GET", operation)] * 3  # no final GET after Failed
    assert run.err.splitlines()[-2:] == [
        "aicert aks: agent pool h100: Failed (poll 3)",
        "aicert aks create-nodepool: the ARM operation failed: ReconcileVMSSAgentPoolFailed: "
        "Allocation failed. Retry later.",
    ]
    assert run.out == ""


def test_a_region_without_the_size_is_refused_before_the_put(
    fake: FakeArm, aicert: Callable[..., Run]
) -> None:
    fake.location = "northeurope"
    run = aicert("create-nodepool", "--nodepool", "cgpu", "--level", "cvm", "--vm-size", CONFIDENTIAL_H100)
    assert run.code == 2
    assert run.err.splitlines() == [
        "aicert aks create-nodepool: refused: agent pool cgpu for level cvm:",
        f"  - {CONFIDENTIAL_H100} is not offered in northeurope (Compute resource SKUs)",
    ]
    assert fake.calls() == [("GET", fake.cluster_path), *skus_calls(fake)]


def test_a_size_restricted_for_the_subscription_is_refused(fake: FakeArm, aicert: Callable[..., Run]) -> None:
    restricted = vm_sku(H100, ("HyperVGenerations", "V2"))
    restricted["restrictions"] = [
        {"type": "Location", "values": ["westeurope"], "reasonCode": "NotAvailableForSubscription"}
    ]
    fake.skus = [restricted, *REGION_SKUS[:1]]
    run = aicert("create-nodepool", "--nodepool", "h100", "--vm-size", H100)
    assert run.code == 2
    assert (
        f"{H100} is not available to this subscription in westeurope (NotAvailableForSubscription)" in run.err
    )
    assert "PUT" not in {method for method, _ in fake.calls()}


def test_skip_region_check_lists_no_skus(fake: FakeArm, aicert: Callable[..., Run]) -> None:
    fake.skus = []
    run = aicert("create-nodepool", "--nodepool", "h100", "--vm-size", H100, "--skip-region-check")
    assert run.code == 0, run.err
    assert ("GET", fake.skus_path()) not in fake.calls()


def test_the_ca_is_required_to_talk_to_the_fake(
    fake: FakeArm, aicert: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = issue_tls(tmp_path)  # a CA that did not sign the fake's certificate
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.ca))
    # azure-core retries a failed connection three times, backing off seconds; skip the waits.
    monkeypatch.setattr(RetryPolicy, "_sleep_backoff", lambda *args, **kwargs: None)
    run = aicert("check", "--json")
    assert run.code == 2
    assert run.json()["error"] == "ServiceRequestError"
    assert "CERTIFICATE_VERIFY_FAILED" in run.err
    assert fake.requests == []

"""Exclusivity by backing storage, not by claim name (`aicert_agent.storage`).

Second red-team round: two static PVs on one NFS export (or one on a subdirectory of the other's),
or on one node directory, were invisible to a check by claim name; the other PV's claim can live in
another namespace.
"""

from __future__ import annotations

from typing import Any

import pytest

from aicert_agent.storage import Backing, backing, shared_storage_problem
from aicert_contract.status import Reason


def pv(
    name: str, source: dict[str, Any], modes: tuple[str, ...] = ("ReadWriteOnce",), claim: str = ""
) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(modes), **source}
    if claim:
        namespace, _, claim_name = claim.partition("/")
        spec["claimRef"] = {"namespace": namespace, "name": claim_name}
    return {"metadata": {"name": name}, "spec": spec}


def pvc(volume: str, modes: tuple[str, ...]) -> dict[str, Any]:
    return {"spec": {"volumeName": volume, "accessModes": list(modes)}}


def nfs(path: str, server: str = "10.0.0.4") -> dict[str, Any]:
    return {"nfs": {"server": server, "path": path}}


DATA = pv("pv-data", nfs("/exports/data"), ("ReadOnlyMany",), "ml/data")
MODEL = pv("pv-model", nfs("/exports/models/run-1"), ("ReadWriteOncePod",), "ml/model")
CLAIMS = {"data": pvc("pv-data", ("ReadOnlyMany",)), "model": pvc("pv-model", ("ReadWriteOncePod",))}


def problem(*others: dict[str, Any]) -> Any:
    return shared_storage_problem(CLAIMS, [DATA, MODEL, *others], inputs=["data"], output_claim="model")


def test_claims_on_storage_of_their_own_pass() -> None:
    unrelated = pv("pv-other", nfs("/exports/other"), ("ReadWriteMany",), "team-b/other")
    assert problem(unrelated) is None


def test_a_second_pv_on_the_outputs_export_is_refused_whoever_holds_it() -> None:
    found = problem(pv("pv-twin", nfs("/exports/models/run-1/"), ("ReadOnlyMany",), "team-b/twin"))
    assert found is not None and found.reason is Reason.OUTPUT_NOT_EXCLUSIVE
    assert found.message.startswith(
        "PV pv-twin (claim team-b/twin) is backed by the storage of output claim model"
    )


@pytest.mark.parametrize("path", ["/exports/models", "/exports", "/exports/models/run-1/checkpoints", "/"])
def test_a_pv_above_or_below_the_output_shares_it(path: str) -> None:
    found = problem(pv("pv-near", nfs(path)))
    assert found is not None and found.reason is Reason.OUTPUT_NOT_EXCLUSIVE


def test_a_writable_pv_on_an_inputs_storage_is_refused() -> None:
    found = problem(pv("pv-writer", nfs("/exports/data/train"), ("ReadWriteMany",), "team-b/prep"))
    assert found is not None and found.reason is Reason.INPUT_NOT_EXCLUSIVE
    assert "PV pv-writer (claim team-b/prep)" in found.message and "ReadWriteMany" in found.message


def test_a_read_only_pv_on_an_inputs_storage_is_fine() -> None:
    assert problem(pv("pv-reader", nfs("/exports/data"), ("ReadOnlyMany",), "team-b/eval")) is None


def test_another_server_is_other_storage() -> None:
    assert problem(pv("pv-elsewhere", nfs("/exports/data", server="10.0.0.5"))) is None


def test_an_output_inside_an_input_is_refused() -> None:
    claims = {"data": pvc("pv-data", ("ReadOnlyMany",)), "model": pvc("pv-inside", ("ReadWriteOncePod",))}
    inside = pv("pv-inside", nfs("/exports/data/out"), ("ReadWriteOncePod",))
    found = shared_storage_problem(claims, [DATA, inside], inputs=["data"], output_claim="model")
    assert found is not None and found.reason is Reason.OUTPUT_NOT_EXCLUSIVE
    assert "output claim model and claim data are backed by the same storage" in found.message


def test_local_and_host_path_volumes_on_one_directory_are_one_storage() -> None:
    local = backing(pv("a", {"local": {"path": "/mnt/disks/ssd0"}}))
    host = backing(pv("b", {"hostPath": {"path": "/mnt/disks/ssd0/"}}))
    assert local.overlaps(host) and host.overlaps(local)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"csi": {"driver": "disk.csi.azure.com", "volumeHandle": "/subscriptions/s/disks/d"}},
            Backing("csi disk.csi.azure.com", "/subscriptions/s/disks/d"),
        ),
        (
            {"azureDisk": {"diskURI": "/Subscriptions/S/Disks/D", "diskName": "d"}},
            Backing("azureDisk", "/subscriptions/s/disks/d"),
        ),
        ({"azureFile": {"shareName": "models", "secretName": "s"}}, Backing("azureFile", "models")),
        ({"nfs": {"server": "nfs", "path": "/a/./b/../c"}}, Backing("nfs nfs", "/a/c", tree=True)),
        ({"flexVolume": {"driver": "x"}}, Backing("pv", "p")),
    ],
)
def test_what_backs_a_pv(source: dict[str, Any], expected: Backing) -> None:
    assert backing(pv("p", source)) == expected


def test_two_csi_volumes_with_one_handle_are_one_storage() -> None:
    a = backing(pv("a", {"csi": {"driver": "file.csi.azure.com", "volumeHandle": "rg#acct#share"}}))
    b = backing(pv("b", {"csi": {"driver": "file.csi.azure.com", "volumeHandle": "rg#acct#share"}}))
    c = backing(pv("c", {"csi": {"driver": "file.csi.azure.com", "volumeHandle": "rg#acct#share2"}}))
    assert a.overlaps(b) and not a.overlaps(c)


def test_unknown_sources_are_only_themselves() -> None:
    assert not backing(pv("a", {"flexVolume": {}})).overlaps(backing(pv("b", {"flexVolume": {}})))

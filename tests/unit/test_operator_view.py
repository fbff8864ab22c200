"""The operator's watch view: it never moves back, and says when it cannot be trusted."""

from __future__ import annotations

from typing import Any

from aicert_contract.training import LABEL_TRAINING_UID
from aicert_operator.observe import PodView
from aicert_operator.view import WatchView, needs_pod_list


def pod(uid: str, version: int, phase: str = "Running", owner: str = "t-1") -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "resourceVersion": str(version), "labels": {LABEL_TRAINING_UID: owner}},
        "status": {"phase": phase},
    }


def view(attempt: int) -> PodView:
    return PodView(f"run-{attempt}", attempt, "gpu-1", "Running", False, "", "", None, {})


def test_an_older_event_never_replaces_a_newer_pod() -> None:
    v = WatchView()
    v.see_pod(pod("p", 10, "Succeeded"))
    v.see_pod(pod("p", 9, "Running"))
    assert [p["status"]["phase"] for p in v.pods("t-1")] == ["Succeeded"]


def test_a_deleted_pod_leaves_the_view() -> None:
    v = WatchView()
    v.see_pod(pod("p", 10))
    v.see_pod(pod("p", 11), deleted=True)
    assert v.pods("t-1") == []


def test_pods_are_kept_per_training() -> None:
    v = WatchView()
    v.see_pod(pod("a", 1, owner="t-1"))
    v.see_pod(pod("b", 2, owner="t-2"))
    assert [p["metadata"]["uid"] for p in v.pods("t-2")] == ["b"]


def test_a_pod_without_the_training_label_is_ignored() -> None:
    v = WatchView()
    unlabelled = pod("p", 1)
    unlabelled["metadata"]["labels"] = {}
    v.see_pod(unlabelled)
    assert v.pods("t-1") == []


def test_a_consistent_list_is_the_truth_for_what_exists_but_keeps_newer_copies() -> None:
    v = WatchView()
    v.see_pod(pod("gone", 5))
    v.see_pod(pod("ahead", 20, "Succeeded"))
    v.merge_pods("t-1", [pod("ahead", 18, "Running"), pod("new", 19)])
    phases = {p["metadata"]["uid"]: p["status"]["phase"] for p in v.pods("t-1")}
    assert phases == {"ahead": "Succeeded", "new": "Running"}


def test_a_training_copy_is_replaced_only_by_a_newer_one() -> None:
    v = WatchView()
    v.see_training("ml/run", {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Training"}})
    v.see_training("ml/run", {"metadata": {"resourceVersion": "6"}, "status": {"phase": "Pending"}})
    body = v.training("ml/run")
    assert body is not None and body["status"]["phase"] == "Training"


def test_a_stale_training_must_be_read_until_a_fresh_read_arrives() -> None:
    v = WatchView()
    v.see_training("ml/run", {"metadata": {"resourceVersion": "7"}})
    v.mark_stale("ml/run")
    assert v.training("ml/run") is None
    v.see_training("ml/run", {"metadata": {"resourceVersion": "8"}})  # a watch event is not enough
    assert v.training("ml/run") is None
    v.read("ml/run", {"metadata": {"resourceVersion": "9"}})
    body = v.training("ml/run")
    assert body is not None and body["metadata"]["resourceVersion"] == "9"


def test_the_view_keeps_its_own_copy() -> None:
    v = WatchView()
    body: dict[str, Any] = {"metadata": {"resourceVersion": "1"}, "status": {"phase": "Pending"}}
    v.see_training("ml/run", body)
    body["status"]["phase"] = "Failed"
    kept = v.training("ml/run")
    assert kept is not None and kept["status"]["phase"] == "Pending"


def test_a_named_attempt_missing_from_the_view_needs_a_consistent_list() -> None:
    assert needs_pod_list({"attempt": 2}, [view(1)])
    assert not needs_pod_list({"attempt": 2}, [view(1), view(2)])
    assert not needs_pod_list({}, [])  # nothing created yet: a 409 on create finds an existing pod

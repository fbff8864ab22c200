"""How a run's events become its statement (shared by the agent and the verifier)."""

from __future__ import annotations

from typing import Any

import pytest

from aicert.events import EventError, statement_from_events

SALT = "ab" * 16
BOOT = {i: bytes([i]) * 32 for i in range(8)}


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": f"aicert.{kind}", "run": "r1", "salt": SALT, **fields}


def run_events() -> list[dict[str, Any]]:
    return [
        ev(
            "run",
            node="n1",
            startedOn="2026-01-01T00:00:00Z",
            name="train",
            namespace="ml",
            uid="u-1",
            attempt=2,
            spec={"image": "x"},
        ),
        ev("image", ref="reg/x@sha256:" + "1" * 64, digest="sha256:" + "2" * 64),
        ev("input", name="data", root="3" * 64, files=2, bytes=10),
        ev("output", name="model", root="4" * 64, files=1, bytes=5, finishedOn="2026-01-01T01:00:00Z"),
    ]


def test_statement_from_events() -> None:
    statement = statement_from_events(run_events(), assurance="vtpm", boot_pcrs=BOOT).to_json()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": "model", "digest": {"sha256": "4" * 64}}]
    predicate = statement["predicate"]
    assert predicate["run"] == {
        "id": "r1",
        "name": "train",
        "namespace": "ml",
        "uid": "u-1",
        "attempt": 2,
        "spec": {"image": "x"},
    }
    assert predicate["inputs"] == [{"name": "data", "root": "3" * 64, "files": 2, "bytes": 10}]
    assert predicate["node"]["bootPcrs"]["7"] == "07" * 32
    assert (predicate["startedOn"], predicate["finishedOn"]) == (
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00Z",
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.pop(0), "must start with its aicert.run"),
        (lambda e: e.pop(), "one aicert.output"),
        (lambda e: e.insert(0, e.pop(3)), "must start with its aicert.run"),
        (lambda e: e.append(e.pop(2)), "then one aicert.output"),
        (lambda e: e.insert(3, dict(e[2])), "same name"),
        (lambda e: e[2].update(run="r2"), "another run"),
        (lambda e: e[2].update(root="XYZ"), "aicert.input event: root"),
        (lambda e: e[1].update(type="aicert.nope"), "unknown event type"),
        (lambda e: e[2].update(extra=1), "extra"),
    ],
    ids=[
        "no-run",
        "no-output",
        "output-first",
        "output-not-last",
        "dup-input",
        "mixed-run",
        "bad-root",
        "unknown-type",
        "extra-field",
    ],
)
def test_malformed_runs_are_refused(edit: Any, message: str) -> None:
    events = run_events()
    edit(events)
    with pytest.raises(EventError, match=message):
        statement_from_events(events, assurance="dev", boot_pcrs=BOOT)


def test_image_may_be_recorded_after_the_inputs() -> None:
    events = run_events()
    events.insert(2, events.pop(1))  # run, input, image, output: the order the Kubernetes agent logs
    assert statement_from_events(events, assurance="dev", boot_pcrs=BOOT) == statement_from_events(
        run_events(), assurance="dev", boot_pcrs=BOOT
    )

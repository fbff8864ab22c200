"""What the agent asks the API server for, and when it may ask less (docs/performance.md, the
request budget): the node label is written again at most once a minute, not after every renewal."""

from __future__ import annotations

from typing import Any, cast

import pytest

from aicert_agent import node_agent
from aicert_agent.node_agent import RELABEL_SECONDS, NodeAgent, relabel_due


def test_the_label_is_due_when_never_written_or_once_a_minute() -> None:
    assert relabel_due(None, 5.0)
    assert not relabel_due(100.0, 100.0 + RELABEL_SECONDS - 0.5)
    assert relabel_due(100.0, 100.0 + RELABEL_SECONDS)


class Labels:
    def __init__(self) -> None:
        self.written: list[str | None] = []

    def label_node(self, level: str | None) -> None:
        self.written.append(level)


def test_renewals_write_the_label_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease is renewed every 10 s (a third of 30 s): six renewals, one label write."""
    kube = Labels()
    agent = NodeAgent.__new__(NodeAgent)  # only what relabel uses
    agent.kube = cast(Any, kube)
    agent.config = cast(Any, type("Config", (), {"assurance": "vtpm"}))
    agent._labelled_at = 1000.0  # start() labelled the node
    clock = [1000.0]
    monkeypatch.setattr(node_agent.time, "monotonic", lambda: clock[0])
    for _ in range(6):
        clock[0] += 10.0
        agent.relabel()
    assert kube.written == ["vtpm"]  # at 1060 s
    clock[0] += 10.0
    agent.relabel()
    assert kube.written == ["vtpm"]

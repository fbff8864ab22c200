"""Every metric of the operator and the agent follows the Prometheus naming conventions."""

from __future__ import annotations

import re

import pytest
from prometheus_client.metrics import MetricWrapperBase

from aicert_agent import metrics as agent_metrics
from aicert_operator import metrics as operator_metrics

UNITS = ("_seconds", "_bytes", "_timestamp_seconds", "_ratio")


def declared() -> list[tuple[str, MetricWrapperBase]]:
    found = []
    for prefix, module in (("aicert_agent_", agent_metrics), ("aicert_operator_", operator_metrics)):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                found.append((prefix, value))
    return found


def test_both_components_declare_metrics() -> None:
    prefixes = {prefix for prefix, _ in declared()}
    assert prefixes == {"aicert_agent_", "aicert_operator_"}


@pytest.mark.parametrize(("prefix", "metric"), declared(), ids=lambda m: getattr(m, "_name", m))
def test_metric_name_follows_the_conventions(prefix: str, metric: MetricWrapperBase) -> None:
    name = metric._name  # the name without the _total a Counter adds
    kind = metric._type
    assert name.startswith(prefix), name
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    if kind == "counter":
        assert not name.endswith("_total"), f"{name}: prometheus_client adds _total to counters"
        assert not any(name.endswith(u) for u in ("_seconds_count", "_count")), name
    elif kind == "histogram":
        assert name.endswith(UNITS), f"{name}: a histogram measures in a base unit"
    elif kind == "gauge":
        assert name.endswith(UNITS) or name.endswith(("_info", "_pods", "_nodes")), name
    assert not re.search(r"_(milliseconds|ms|kilobytes|mb|minutes)(_|$)", name), f"{name}: use base units"
    for unit in ("bytes", "seconds"):
        if f"_{unit}" in name:  # a unit is the last word of the name (before _total)
            assert name.endswith(f"_{unit}"), f"{name}: the unit {unit} goes last"


def test_the_agent_does_not_take_node_exporters_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from aicert_agent.cli import build_parser

    monkeypatch.delenv("AICERT_METRICS_PORT", raising=False)
    args = build_parser().parse_args(["serve", "--node", "gpu-1"])
    assert args.metrics_port not in (
        9100,
        9090,
        9091,
        9093,
    )  # node_exporter, Prometheus, its gateway, Alertmanager

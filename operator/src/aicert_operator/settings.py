"""Typed operator settings, from environment variables (the chart sets them)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from aicert_contract.pod import PodSettings

DEFAULT_DEADLINE_SECONDS = 7 * 24 * 3600  # a run that sets no activeDeadlineSeconds ends after a week


@dataclass(frozen=True)
class Settings:
    pod: PodSettings  # shared with the node agent: it checks pods against the same contract
    default_deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    # the longest a run may take, whatever its spec says (admission refuses more; None: no cap)
    max_deadline_seconds: int | None = None
    namespace: str | None = None  # None: all namespaces
    metrics_port: int = 8080
    health_port: int = 8081
    # a replica whose lease loop, or (leader) kopf's event loop, is silent this long is not alive
    health_stall_seconds: float = 30.0
    lease_namespace: str = "aicert-system"
    lease_name: str = "aicert-operator"
    lease_seconds: float = 15.0
    agent_check_seconds: float = 10.0  # how often nodes whose agent lease expired lose their label
    coalesce_seconds: float = 0.5  # events of one training within this window make one reconcile
    identity: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        # the standby polls the lease every third of its duration: a stall shorter than the
        # lease would call a healthy replica wedged between two polls
        if self.health_stall_seconds < self.lease_seconds:
            raise ValueError(
                f"AICERT_HEALTH_STALL_SECONDS ({self.health_stall_seconds:g}) must be at least "
                f"AICERT_LEASE_SECONDS ({self.lease_seconds:g})"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        base = cls(pod=PodSettings.from_env(e))
        return cls(
            pod=base.pod,
            default_deadline_seconds=int(
                e.get("AICERT_DEFAULT_DEADLINE_SECONDS", base.default_deadline_seconds)
            ),
            max_deadline_seconds=_positive(e, "AICERT_MAX_DEADLINE_SECONDS"),
            namespace=e.get("AICERT_WATCH_NAMESPACE") or None,
            metrics_port=int(e.get("AICERT_METRICS_PORT", base.metrics_port)),
            health_port=int(e.get("AICERT_HEALTH_PORT", base.health_port)),
            health_stall_seconds=float(e.get("AICERT_HEALTH_STALL_SECONDS", base.health_stall_seconds)),
            lease_namespace=e.get("AICERT_LEASE_NAMESPACE", base.lease_namespace),
            lease_name=e.get("AICERT_LEASE_NAME", base.lease_name),
            lease_seconds=float(e.get("AICERT_LEASE_SECONDS", base.lease_seconds)),
            agent_check_seconds=float(e.get("AICERT_AGENT_CHECK_SECONDS", base.agent_check_seconds)),
            coalesce_seconds=float(e.get("AICERT_COALESCE_SECONDS", base.coalesce_seconds)),
            identity=e.get("POD_NAME") or base.identity,
        )


def _positive(env: Mapping[str, str], name: str) -> int | None:
    """A whole number of seconds, at least 1; unset or empty: None."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be at least 1 second, not {raw}")
    return value

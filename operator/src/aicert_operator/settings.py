"""Typed operator settings, from environment variables (the chart sets them)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

DEFAULT_GPU_TOLERATIONS: tuple[dict[str, Any], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},  # AKS GPU node pools
)


@dataclass(frozen=True)
class Settings:
    agent_image: str = "aicert-agent:dev"
    gpu_tolerations: tuple[dict[str, Any], ...] = DEFAULT_GPU_TOLERATIONS
    namespace: str | None = None  # None: all namespaces
    metrics_port: int = 8080
    health_port: int = 8081
    lease_namespace: str = "aicert-system"
    lease_name: str = "aicert-operator"
    lease_seconds: float = 15.0
    identity: str = field(default_factory=socket.gethostname)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        base = cls()
        return cls(
            agent_image=e.get("AICERT_AGENT_IMAGE", base.agent_image),
            namespace=e.get("AICERT_WATCH_NAMESPACE") or None,
            metrics_port=int(e.get("AICERT_METRICS_PORT", base.metrics_port)),
            health_port=int(e.get("AICERT_HEALTH_PORT", base.health_port)),
            lease_namespace=e.get("AICERT_LEASE_NAMESPACE", base.lease_namespace),
            lease_name=e.get("AICERT_LEASE_NAME", base.lease_name),
            lease_seconds=float(e.get("AICERT_LEASE_SECONDS", base.lease_seconds)),
            identity=e.get("POD_NAME") or base.identity,
        )

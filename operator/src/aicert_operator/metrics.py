"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("aicert_operator_reconciles_total", "Reconciliations of CertifiedTrainings", ["result"])
PODS_CREATED = Counter("aicert_operator_pods_created_total", "Training pods created")
PHASES = Counter("aicert_operator_phase_transitions_total", "CertifiedTraining phase transitions", ["phase"])
NODES_UNLABELLED = Counter(
    "aicert_operator_nodes_unlabelled_total",
    "Nodes taken out of scheduling because their agent's lease expired",
)
RECONCILE_SECONDS = Histogram("aicert_operator_reconcile_seconds", "Time to reconcile one CertifiedTraining")

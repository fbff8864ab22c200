"""Kubernetes calls that the operator and the node agent both make (the edge shared by both).

The decisions and the bodies live in `aicert_contract`; this package only sends them. The operator
and the agent import it; it imports neither of them.
"""

from aicert_kube.trainings import TrainingClient, raw_json

__all__ = ["TrainingClient", "raw_json"]

"""The contract between the operator, the node agent and the cluster. Pure: no Kubernetes library.

- `pod`: the exact Pod of one attempt, derived from the CertifiedTraining; the operator builds it,
  the agent checks the live pod against it.
- `network`: the per-pod NetworkPolicy and how a policy selects and isolates a pod.
- `status`: condition types and reasons, `set_condition`, the status-apply and Event bodies.
"""

"""Transitional: benchmarks/bench_scale.py still imports `KubeClient` from here. The node double that
this module used to re-export is gone; the REST client lives in `aicert_localcluster.rest_client`.
Delete this module once bench_scale.py imports it from there."""

from .rest_client import KubeClient as KubeClient

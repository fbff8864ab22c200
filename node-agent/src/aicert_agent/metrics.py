"""Prometheus metrics of the node agent."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BYTES_HASHED = Counter("aicert_agent_hashed_bytes_total", "Bytes hashed while measuring volumes")
HASH_SECONDS = Histogram(
    "aicert_agent_hash_seconds", "Time to hash one volume", buckets=(0.01, 0.1, 1, 10, 60, 600, 3600)
)
VOLUMES_TOO_LARGE = Counter(
    "aicert_agent_volumes_too_large",
    "Volumes refused unhashed over their budget (OutputTooLarge, InputTooLarge), by the limit that refused",
    ["volume", "limit"],
)
MEASURE_LIMIT = Gauge(
    "aicert_agent_measure_limit_bytes",
    "The agent's budget of apparent bytes per run: output, or all inputs together",
    ["volume"],
)
MEASUREMENTS_CANCELLED = Counter(
    "aicert_agent_measurements_cancelled",
    "Hashing stopped early: the run's pod went away or the agent stopped",
)
QUOTE_SECONDS = Histogram(
    "aicert_agent_seal_seconds", "Time to seal a run: statement, seal event, quote, certificate"
)
SEAL_FAILURES = Counter(
    "aicert_agent_seal_failures", "Seals that failed and were tried again later (or refused as SealFailed)"
)
TLOG_SUBMISSIONS = Counter(
    "aicert_agent_tlog_submissions_total",
    "Bundles submitted to the transparency log: logged, or failed (published without a log entry)",
    ["result"],
)
CERTIFICATES = Counter("aicert_agent_certificates_total", "Certificates issued or refused", ["result"])
LOG_REBASES = Counter("aicert_agent_log_rebases_total", "New measurement epochs", ["why"])
AK_CERTIFICATE_EXPIRY = Gauge(
    "aicert_agent_ak_certificate_expiry_timestamp_seconds",
    "When the AK certificate stops being valid (Unix time): certificates sealed later fail verification",
)

"""AICert node agent: measures training runs into a TPM PCR and certifies them with TPM quotes.

Runs as a DaemonSet on TPM nodes (`python -m aicert_agent`) or standalone (`aicert-agent run`).
TPM access lives in `aicert_agent.tpm`; everything else stays pure and testable.
"""

"""AICert: certify AI training runs with TPM quotes and verify the certificates offline.

`pip install aicert-k8s` gives this package alone: the verifier, hashing and the certificate models.
It never imports Kubernetes or TPM libraries (a test enforces the layering).
"""

__version__ = "0.1.0"

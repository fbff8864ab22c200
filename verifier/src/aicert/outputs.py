"""The files aicert writes next to a run's outputs, by name: the manifest, the certificate, the
certificate as a Sigstore bundle, and the weights' OpenSSF Model Signing signature.

They are never part of the root they describe (aicert.digest leaves them out of an output's root,
and a training that writes either is refused). A module of its own so that a command that only
names them (`kubectl aicert get`) does not load the hashing code.
"""

from __future__ import annotations

from typing import Final

MANIFEST_FILE: Final = "manifest.json"
CERTIFICATE_FILE: Final = (
    "aicert-certificate.json"  # the run's certificate, so that it travels with the weights
)
BUNDLE_FILE: Final = "aicert.sigstore.json"  # the certificate as a Sigstore bundle (aicert.bundle)
MODEL_SIGNATURE_FILE: Final = "model.sig"  # OMS v1.0 signature of the weights (aicert.model_signature)

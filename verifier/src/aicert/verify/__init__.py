"""Offline verification of training certificates and old AICert proofs."""

from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.policy import Policy
from aicert.verify.result import VerifiedTraining
from aicert.verify.verifier import Document, Verifier, load_document

__all__ = [
    "Check",
    "Document",
    "MalformedError",
    "Policy",
    "VerificationError",
    "VerifiedTraining",
    "Verifier",
    "load_document",
]

"""Offline verification of training certificates and old AICert proofs."""

from aicert.verify.binding import BindingCheck, BindingFailure, TrainingResource, check_binding
from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.policy import Policy
from aicert.verify.result import VerifiedTraining
from aicert.verify.verifier import Document, Verifier, load_document

__all__ = [
    "BindingCheck",
    "BindingFailure",
    "Check",
    "Document",
    "MalformedError",
    "Policy",
    "TrainingResource",
    "VerificationError",
    "VerifiedTraining",
    "Verifier",
    "check_binding",
    "load_document",
]

"""Offline verification of training certificates and old AICert proofs.

The names below load on first use (PEP 562), so that importing one part, `aicert.verify.errors`
say, does not load the verifier and everything it uses: the parsers of `aicert.cvm` raise these
errors and the verifier uses those parsers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aicert.verify.binding import BindingFailure, TrainingResource, check_binding
    from aicert.verify.checklog import CheckLog
    from aicert.verify.document import Document, load_document
    from aicert.verify.errors import (
        BindingCheck,
        Check,
        IncompleteVerification,
        MalformedError,
        VerificationError,
    )
    from aicert.verify.policy import Policy
    from aicert.verify.result import IgnoredFiles, VerifiedTraining
    from aicert.verify.verifier import Verifier

_WHERE = {
    "BindingFailure": "binding",
    "TrainingResource": "binding",
    "check_binding": "binding",
    "CheckLog": "checklog",
    "Document": "document",
    "load_document": "document",
    "BindingCheck": "errors",
    "Check": "errors",
    "IncompleteVerification": "errors",
    "MalformedError": "errors",
    "VerificationError": "errors",
    "Policy": "policy",
    "IgnoredFiles": "result",
    "VerifiedTraining": "result",
    "Verifier": "verifier",
}

__all__ = [
    "BindingCheck",
    "BindingFailure",
    "Check",
    "CheckLog",
    "Document",
    "IgnoredFiles",
    "IncompleteVerification",
    "MalformedError",
    "Policy",
    "TrainingResource",
    "VerificationError",
    "VerifiedTraining",
    "Verifier",
    "check_binding",
    "load_document",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value

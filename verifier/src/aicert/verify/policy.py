"""What a verifier requires beyond a valid quote (step 8), loaded from `--policy FILE` (JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from aicert.certificate import Assurance, ImageDigest, Model, PcrValues
from aicert.verify.errors import MalformedError


class Policy(Model):
    """minAssurance: lowest acceptable level (the trust root caps what can be claimed anyway).
    allowedImages: runtime image digests accepted; absent means any.
    bootPcrs: PCR index -> expected sha256 value, for PCRs 0-7 of the node's boot.
    egress: "none" requires that the agent found the training pod with no network egress."""

    minAssurance: Assurance = "dev"
    allowedImages: list[ImageDigest] | None = None
    bootPcrs: PcrValues | None = None
    egress: Literal["none"] | None = None

    @classmethod
    def from_file(cls, path: Path) -> Policy:
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise MalformedError("--policy", f"cannot read {path}: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedError("--policy", f"{path} is not JSON: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise MalformedError(f"policy.{where}", first["msg"]) from None

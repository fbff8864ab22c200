"""Write docs/certificate.schema.json from the certificate models (`make schema`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from aicert.certificate import TrainingCertificate

TARGET = Path(__file__).resolve().parents[1] / "docs" / "certificate.schema.json"


def schema_text() -> str:
    generated: dict[str, Any] = msgspec.json.schema(TrainingCertificate)
    definitions: dict[str, Any] = generated["$defs"]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://aicert.dev/schemas/training-certificate-v1alpha1.json",
        **definitions.pop("TrainingCertificate"),
        "$defs": definitions,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(schema_text())
    print(f"wrote {TARGET}", file=sys.stderr)

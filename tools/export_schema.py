"""Write docs/certificate.schema.json from the pydantic models (`make schema`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aicert.certificate import TrainingCertificate

TARGET = Path(__file__).resolve().parents[1] / "docs" / "certificate.schema.json"


def schema_text() -> str:
    schema = TrainingCertificate.model_json_schema(by_alias=True, mode="validation")
    schema["$id"] = "https://aicert.dev/schemas/training-certificate-v1alpha1.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(schema_text())
    print(f"wrote {TARGET}", file=sys.stderr)

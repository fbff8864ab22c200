from __future__ import annotations

import json

from tools.export_schema import TARGET, schema_text


def test_published_schema_is_current() -> None:
    assert TARGET.read_text() == schema_text(), "run `make schema` and commit docs/certificate.schema.json"


def test_schema_names_the_required_parts() -> None:
    schema = json.loads(schema_text())
    assert set(schema["required"]) == {"apiVersion", "kind", "statement", "evidence"}
    assert schema["additionalProperties"] is False

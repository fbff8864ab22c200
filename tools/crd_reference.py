"""Write the field tables of docs/crd-reference.md from the CRD (`make crd-reference`).

The CRD in crds/ is the one source of the CertifiedTraining API: the API server enforces its schema,
`kubectl explain` shows its descriptions, and the tables between the markers in docs/crd-reference.md
are generated from it (tests/unit/test_crd_reference.py fails when they differ). The models that read
the resource (aicert_contract.training.TrainingSpec, aicert_contract.status.TrainingStatus) are compared with
it field by field (tests/unit/test_crd_models.py).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "certifiedtrainings.aicert.dev.yaml"
TARGET = ROOT / "docs" / "crd-reference.md"

# Each generated table sits between these two lines; the text around them is written by hand.
BEGIN = "<!-- generated from crds/certifiedtrainings.aicert.dev.yaml by `make crd-reference`: {part} -->"
END = "<!-- end of generated {part} -->"


def crd_schema(path: Path = CRD) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD's one version."""
    crd = yaml.safe_load(path.read_text())
    [version] = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@dataclass(frozen=True)
class SchemaField:
    path: str  # relative to the table's object: "output.volumeClaimTemplate.size", "env[].name"
    schema: dict[str, Any]
    required: bool


def schema_fields(node: dict[str, Any], prefix: str = "") -> Iterator[SchemaField]:
    """Every named field under `node`, depth first in the CRD's order. A list's items are named
    `list[]`; a map's values have no name of their own and are described by the map."""
    required = set(node.get("required", []))
    for name, child in (node.get("properties") or {}).items():
        path = f"{prefix}{name}"
        yield SchemaField(path, child, name in required)
        yield from schema_fields(child, f"{path}.")
        if "items" in child:
            yield from schema_fields(child["items"], f"{path}[].")


def type_text(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "quantity (int or string)"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "")
    if kind == "array":
        return f"[]{type_text(schema['items'])}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{type_text(schema['additionalProperties'])}"
    if schema.get("format") == "date-time":
        return "string (RFC 3339 time)"
    return str(kind)


def _number(value: int) -> str:
    return f"{value:,}"


def limits_text(schema: dict[str, Any]) -> str:
    parts = []
    if "minimum" in schema and "maximum" in schema:
        parts.append(f"{_number(schema['minimum'])} to {_number(schema['maximum'])}")
    elif "minimum" in schema:
        parts.append(f"≥ {_number(schema['minimum'])}")
    if "maxLength" in schema:
        parts.append(f"≤ {_number(schema['maxLength'])} chars")
    if "maxItems" in schema:
        parts.append(f"≤ {schema['maxItems']} items")
    if "maxProperties" in schema:
        parts.append(f"≤ {schema['maxProperties']} entries")
    for inner, named in (("items", "each"), ("additionalProperties", "values")):
        if isinstance(schema.get(inner), dict) and "maxLength" in schema[inner]:
            parts.append(f"{named} ≤ {_number(schema[inner]['maxLength'])} chars")
    if "pattern" in schema and "x-kubernetes-int-or-string" not in schema:
        parts.append("pattern `" + schema["pattern"].replace("|", "\\|") + "`")
    return ", ".join(parts) or "—"


def default_text(field: SchemaField) -> str:
    if field.required:
        return "required"
    if "default" in field.schema:
        return f"`{json.dumps(field.schema['default'])}`"
    return "—"


def _cell(text: str) -> str:
    """Text in a Markdown table cell: one line, a literal |, and <name> shown rather than read as HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "\\<")


def table(node: dict[str, Any], *, with_default: bool) -> str:
    head = ["field", "type", *(["default"] if with_default else []), "limits", "description"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for field in schema_fields(node):
        cells = [
            f"`{field.path}`",
            type_text(field.schema),
            *([default_text(field)] if with_default else []),
            limits_text(field.schema),
            _cell(field.schema.get("description", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def generated_tables(schema: dict[str, Any]) -> dict[str, str]:
    properties = schema["properties"]
    return {
        "spec": table(properties["spec"], with_default=True),
        "status": table(properties["status"], with_default=False),
    }


def rendered(document: str, schema: dict[str, Any]) -> str:
    """`document` with each generated part replaced by the table the CRD gives."""
    for part, text in generated_tables(schema).items():
        begin, end = BEGIN.format(part=part), END.format(part=part)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        found = pattern.search(document)
        if found is None or len(pattern.findall(document)) != 1:
            raise ValueError(f"{TARGET.name} needs exactly one pair of markers for {part}: {begin} … {end}")
        document = f"{document[: found.start()]}{begin}\n{text}{end}{document[found.end() :]}"
    return document


if __name__ == "__main__":
    TARGET.write_text(rendered(TARGET.read_text(), crd_schema()))
    print(f"wrote {TARGET}", file=sys.stderr)

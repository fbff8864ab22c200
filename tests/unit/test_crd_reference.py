"""docs/crd-reference.md's field tables are the CRD's, and the CRD explains every field.

`kubectl explain ct.status.phase` prints the CRD's description; the tables are generated from the
same descriptions (`make crd-reference`), so the two cannot say different things.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from tools.crd_reference import TARGET, crd_schema, rendered, schema_fields


def test_the_committed_reference_is_generated_from_the_crd() -> None:
    document = TARGET.read_text()
    assert document == rendered(document, crd_schema()), (
        "run `make crd-reference` and commit docs/crd-reference.md"
    )


def test_every_field_of_the_crd_has_a_description() -> None:
    schema = crd_schema()
    assert schema.get("description")
    # metadata is ObjectMeta: the API server forbids anything in it but name and generateName
    # (a description too) and publishes ObjectMeta's own documentation.
    undescribed = [
        field.path
        for field in schema_fields(schema)
        if field.path != "metadata" and not str(field.schema.get("description", "")).strip()
    ]
    assert undescribed == []
    assert "description" not in schema["properties"]["metadata"]


def test_every_default_is_named_in_its_description() -> None:
    """`kubectl explain` shows no default of its own: the description names it, and names the
    CRD's."""
    defaulted = [field for field in schema_fields(crd_schema()) if "default" in field.schema]
    assert defaulted
    for field in defaulted:
        named = re.findall(r"Default: ([^ ]+)\.(?: |$)", field.schema["description"])
        assert named == [str(field.schema["default"])], field.path


def _changed(edit: str) -> dict[str, Any]:
    schema = copy.deepcopy(crd_schema())
    spec = schema["properties"]["spec"]["properties"]
    status = schema["properties"]["status"]["properties"]
    if edit == "description":
        status["phase"]["description"] = "Something else."
    elif edit == "enum":
        spec["minAssurance"]["enum"] = ["vtpm", "cvm"]
    elif edit == "default":
        spec["gpus"]["default"] = 2
    elif edit == "type":
        status["attempt"]["type"] = "string"
    elif edit == "bound":
        spec["backoffLimit"]["maximum"] = 11
    elif edit == "field":
        spec["priority"] = {"type": "integer", "description": "New."}
    return schema


@pytest.mark.parametrize("edit", ["description", "enum", "default", "type", "bound", "field"])
def test_any_change_to_the_crd_changes_the_tables(edit: str) -> None:
    document = TARGET.read_text()
    assert rendered(document, _changed(edit)) != document


def test_the_tables_need_their_markers() -> None:
    with pytest.raises(ValueError, match="markers for status"):
        rendered(TARGET.read_text().replace("<!-- end of generated status -->", ""), crd_schema())


def test_a_bar_or_an_angle_bracket_in_a_description_keeps_the_table_a_table() -> None:
    schema = copy.deepcopy(crd_schema())
    schema["properties"]["status"]["properties"]["phase"]["description"] = "a | b, <name>\n  next line"
    row = next(
        line for line in rendered(TARGET.read_text(), schema).splitlines() if line.startswith("| `phase`")
    )
    assert row.endswith("| a \\| b, \\<name> next line |")

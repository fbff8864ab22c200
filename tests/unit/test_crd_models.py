"""The CRD and the models that read it describe the same API, field by field.

crds/ is the one source: the API server enforces its schema and `kubectl explain` shows its
descriptions. aicert_contract.training.TrainingSpec reads the spec it admitted and aicert_contract.status's
TrainingStatus and Condition type the status the operator and the agent write; a field added,
renamed, retyped, given another enum, default, requiredness or bound on one side only fails here,
naming the field.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

import annotated_types
import pytest
from pydantic import BaseModel, create_model
from pydantic.fields import FieldInfo
from tools.crd_reference import crd_schema, schema_fields

from aicert_contract.status import Condition, ConditionType, Reason, TrainingStatus, set_condition
from aicert_contract.training import TrainingSpec

ABSENT = "absent"  # no default: the field is left out, or an empty list, map or object


@dataclass(frozen=True)
class Facts:
    """What both sides say of one field."""

    shape: tuple[Any, ...]  # ("string", enum values) | ("integer",) | ("array", item) | ("map", value) | ...
    required: bool
    default: Any
    minimum: int | None = None
    maximum: int | None = None


# --- the CRD's side -------------------------------------------------------------------------------


def crd_shape(schema: dict[str, Any]) -> tuple[Any, ...]:
    if schema.get("x-kubernetes-int-or-string"):
        return ("int-or-string",)
    kind = schema["type"]
    if kind == "string":
        return ("string", tuple(sorted(schema.get("enum", []))))
    if kind == "array":
        return ("array", crd_shape(schema["items"]))
    if kind == "object" and "additionalProperties" in schema:
        return ("map", crd_shape(schema["additionalProperties"]))
    return (kind,)


def crd_facts(part: str) -> dict[str, Facts]:
    facts = {}
    for field in schema_fields(crd_schema()["properties"][part]):
        facts[field.path] = Facts(
            shape=crd_shape(field.schema),
            required=field.required,
            default=field.schema.get("default", ABSENT),
            minimum=field.schema.get("minimum"),
            maximum=field.schema.get("maximum"),
        )
    return facts


# --- the models' side -----------------------------------------------------------------------------


@dataclass
class _Read:
    shape: tuple[Any, ...]
    minimum: int | None = None
    maximum: int | None = None


def _bounds(metadata: list[Any], read: _Read) -> None:
    for item in metadata:
        if isinstance(item, FieldInfo):
            _bounds(list(item.metadata), read)
        elif isinstance(item, annotated_types.Ge):
            read.minimum = int(item.ge)  # type: ignore[call-overload]
        elif isinstance(item, annotated_types.Le):
            read.maximum = int(item.le)  # type: ignore[call-overload]


def model_shape(annotation: Any, metadata: list[Any] | None = None) -> _Read:
    """The shape of a Python annotation as the CRD would write it; None in a union only makes the
    field optional, which `required` says."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (NotRequired, Required):  # a TypedDict's; its requiredness is read from the class
        return model_shape(args[0], metadata)
    if origin is Annotated:
        inner, *extra = args
        read = model_shape(inner, [*(metadata or []), *extra])
        kinds = [m for m in extra if isinstance(m, type) and issubclass(m, enum.Enum)]
        if kinds:
            read.shape = ("string", tuple(sorted(str(v.value) for v in kinds[0])))
        return read
    if origin in (Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        if sorted(present, key=str) == sorted([int, str], key=str):
            read = _Read(("int-or-string",))
        else:
            [only] = present
            read = model_shape(only)
        _bounds(metadata or [], read)
        return read
    read = _Read(_plain_shape(annotation, origin, args))
    _bounds(metadata or [], read)
    return read


def _plain_shape(annotation: Any, origin: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if origin is Literal:
        return ("string", tuple(sorted(args)))
    if origin is list:
        return ("array", model_shape(args[0]).shape)
    if origin is dict:
        assert args[0] is str, annotation
        return ("map", model_shape(args[1]).shape)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ("string", tuple(sorted(str(v.value) for v in annotation)))
    if annotation is str:
        return ("string", ())
    if annotation is int:
        return ("integer",)
    if annotation is bool:
        return ("boolean",)
    if is_typeddict(annotation) or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return ("object",)
    raise AssertionError(f"no CRD type for {annotation!r}")


def _nested(annotation: Any) -> tuple[Any, str] | None:
    """The model inside a field (an object, or a list's items), and the path suffix to reach it."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Annotated, NotRequired, Required):
        return _nested(args[0])
    if origin in (Union, types.UnionType):
        found = [n for n in (_nested(a) for a in args) if n is not None]
        return found[0] if found else None
    if origin is list:
        inner = _nested(args[0])
        return (inner[0], "[]") if inner else None
    if is_typeddict(annotation) or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return (annotation, "")
    return None


def _default(info: FieldInfo) -> Any:
    if info.is_required():
        return ABSENT
    value = info.get_default(call_default_factory=True)
    if value is None or value == [] or value == {}:
        return ABSENT
    if isinstance(value, BaseModel) and value == type(value).model_validate({}):
        return ABSENT  # an absent object reads as an empty one: its own fields' defaults apply
    return value


def _typed_dict_requires(model: Any, hint: Any) -> bool:
    """Read from the annotation: under `from __future__ import annotations` the class's own
    __required_keys__ does not see NotRequired."""
    if get_origin(hint) is NotRequired:
        return False
    return get_origin(hint) is Required or bool(model.__total__)


def model_facts(model: Any, prefix: str = "") -> dict[str, Facts]:
    facts: dict[str, Facts] = {}
    if is_typeddict(model):
        hints = get_type_hints(model, include_extras=True)
        fields = [(name, hint, [], _typed_dict_requires(model, hint), ABSENT) for name, hint in hints.items()]
    else:
        fields = [
            (name, info.annotation, list(info.metadata), info.is_required(), _default(info))
            for name, info in model.model_fields.items()
        ]
    for name, annotation, metadata, required, default in fields:
        read = model_shape(annotation, metadata)
        path = f"{prefix}{name}"
        facts[path] = Facts(read.shape, required, default, read.minimum, read.maximum)
        nested = _nested(annotation)
        if nested is not None:
            inner, suffix = nested
            facts.update(model_facts(inner, f"{path}{suffix}."))
    return facts


# --- compared -------------------------------------------------------------------------------------

PARTS = {"spec": TrainingSpec, "status": TrainingStatus}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for part, model in PARTS.items():
        paths = [*crd_facts(part)]
        paths += [p for p in model_facts(model) if p not in paths]
        cases += [(part, path) for path in paths]
    return cases


CRD_FACTS = {part: crd_facts(part) for part in PARTS}
MODEL_FACTS = {part: model_facts(model) for part, model in PARTS.items()}


def disagreement(theirs: Facts | None, mine: Facts | None) -> str | None:
    """How the model's field differs from the CRD's, or None when they agree."""
    if theirs is None:
        return "the CRD has no such field"
    if mine is None:
        return "the model has no such field"
    for fact in ("shape", "required", "default"):
        if getattr(mine, fact) != getattr(theirs, fact):
            return f"{fact} differs: the CRD's {getattr(theirs, fact)!r}, the model's {getattr(mine, fact)!r}"
    for bound in ("minimum", "maximum"):  # a bound the model states is the CRD's
        stated = getattr(mine, bound)
        if stated is not None and stated != getattr(theirs, bound):
            return f"{bound} differs: the CRD's {getattr(theirs, bound)!r}, the model's {stated!r}"
    return None


@pytest.mark.parametrize(("part", "path"), _cases())
def test_the_crd_and_the_model_agree_on(part: str, path: str) -> None:
    found = disagreement(CRD_FACTS[part].get(path), MODEL_FACTS[part].get(path))
    assert found is None, f"{part}.{path} ({PARTS[part].__name__}): {found}"


def test_every_field_of_the_crd_is_compared() -> None:
    compared = {(part, path) for part, path in _cases()}
    assert {("spec", p) for p in crd_facts("spec")} <= compared
    assert {("status", p) for p in crd_facts("status")} <= compared
    assert len(compared) == len(crd_facts("spec")) + len(crd_facts("status"))


# --- the comparison itself can fail ---------------------------------------------------------------


def _differing(part: str, model: Any) -> set[str]:
    theirs, mine = CRD_FACTS[part], model_facts(model)
    return {path for path in theirs.keys() | mine.keys() if disagreement(theirs.get(path), mine.get(path))}


def _drifted_spec(edit: str) -> Any:
    changed: dict[str, Any] = {
        "default": {"gpus": (int, TrainingSpec.model_fields["gpus"].default + 1)},
        "enum": {"minAssurance": (Literal["vtpm", "cvm"], "vtpm")},
        "type": {"backoffLimit": (str, "0")},
        "required": {"image": (str, "")},
        "new field": {"priority": (int, 0)},
    }[edit]
    return create_model("DriftedSpec", __base__=TrainingSpec, **changed)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        ("default", "gpus"),
        ("enum", "minAssurance"),
        ("type", "backoffLimit"),
        ("required", "image"),
        ("new field", "priority"),
    ],
)
def test_a_spec_model_that_drifted_is_seen_at_that_field(edit: str, path: str) -> None:
    assert _differing("spec", TrainingSpec) == set()
    assert _differing("spec", _drifted_spec(edit)) == {path}


def test_a_status_model_that_drifted_is_seen_at_that_field() -> None:
    hints = get_type_hints(TrainingStatus, include_extras=True)
    retyped = TypedDict("Retyped", {**hints, "attempt": str}, total=False)  # type: ignore[misc]
    narrowed = TypedDict("Narrowed", {**hints, "phase": Literal["Pending", "Failed"]}, total=False)  # type: ignore[misc]
    assert _differing("status", TrainingStatus) == set()
    assert _differing("status", retyped) == {"attempt"}
    assert _differing("status", narrowed) == {"phase"}


def test_the_condition_model_is_what_set_condition_writes() -> None:
    import datetime as dt

    written = set_condition(
        None,
        ConditionType.CERTIFIED,
        "False",
        Reason.SEAL_FAILED,
        "the TSA did not answer",
        generation=3,
        now=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )
    assert set(written) == set(get_type_hints(Condition))

"""Measurement events: what the agent extends into the PCR, and the statement they imply.

Every event's content is a JSON object carrying its `type`, the `run` id and the run's random
`salt` (so a redacted digest reveals nothing about a foreign run). The digest extended into the
PCR is `sha256(JCS(content))`. `statement_from_events` is the single definition of how a run's
events become its in-toto statement: the agent calls it to build the certificate and the verifier
calls it to check one.
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from msgspec import Meta

from aicert.certificate import (
    IN_TOTO_STATEMENT,
    MAX_PARENTS,
    PREDICATE_TYPE,
    Assurance,
    Count,
    DigestSet,
    FormatError,
    Hex64,
    ImageDigest,
    ImageRecord,
    InputRecord,
    JsonObject,
    Model,
    Name,
    NetworkRecord,
    NodeRecord,
    OutputRecord,
    ParentRecord,
    PinnedImage,
    RunIdentity,
    Statement,
    Subject,
    Timestamp,
    TrainingPredicate,
    convert,
)
from aicert.jcs import sha256_jcs

RUN = "aicert.run"
IMAGE = "aicert.image"
INPUT = "aicert.input"
OUTPUT = "aicert.output"
SEAL = "aicert.seal"
EVENT_TYPES = (RUN, IMAGE, INPUT, OUTPUT, SEAL)


class EventError(ValueError):
    """The events of a run are not a well-formed run."""


class _Event(Model, frozen=True, kw_only=True):
    run: Name
    salt: Annotated[str, Meta(pattern=r"^[0-9a-f]{32,64}$(?!\n)")]


class RunEvent(_Event, frozen=True, kw_only=True):
    type: Literal["aicert.run"]
    node: Name
    startedOn: Timestamp
    name: Name
    namespace: Name | None = None
    uid: Name | None = None
    attempt: Count
    spec: JsonObject
    network: NetworkRecord | None = None
    agentImage: PinnedImage | None = None  # the pod's gate and seal image (Kubernetes runs)


class ImageEvent(_Event, frozen=True, kw_only=True):
    type: Literal["aicert.image"]
    ref: Name
    digest: ImageDigest


class InputEvent(_Event, frozen=True, kw_only=True):
    type: Literal["aicert.input"]
    name: Name
    root: Hex64
    files: Count
    bytes: Count
    parent: ParentRecord | None = None  # an earlier certified run's output (aicert.lineage)


class OutputEvent(_Event, frozen=True, kw_only=True):
    type: Literal["aicert.output"]
    name: Name
    root: Hex64
    files: Count
    bytes: Count
    finishedOn: Timestamp
    network: NetworkRecord | None = None  # the pod's network from gate to seal (Kubernetes runs)


class SealEvent(_Event, frozen=True, kw_only=True):
    type: Literal["aicert.seal"]
    statement: Hex64


RunEvents = RunEvent | ImageEvent | InputEvent | OutputEvent | SealEvent
_MODELS: dict[str, type[RunEvents]] = {
    RUN: RunEvent,
    IMAGE: ImageEvent,
    INPUT: InputEvent,
    OUTPUT: OutputEvent,
    SEAL: SealEvent,
}


def event_digest(content: Mapping[str, Any]) -> bytes:
    return sha256_jcs(dict(content))


def parse_event(content: Mapping[str, Any]) -> RunEvents:
    kind = content.get("type")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise EventError(f"unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
    try:
        return convert(dict(content), model)
    except FormatError as exc:
        raise EventError(f"{kind} event: {exc}") from None


def statement_from_events(
    contents: Sequence[Mapping[str, Any]], *, assurance: Assurance, boot_pcrs: Mapping[int, bytes]
) -> Statement:
    """The statement a run's events (run, image?, input*, output; no seal) certify.

    Raises EventError when the sequence is not exactly that shape or mixes runs.
    """
    events = [parse_event(c) for c in contents]
    if not events or not isinstance(events[0], RunEvent):
        raise EventError("a run's events must start with its aicert.run event")
    run = events[0]
    if any(e.run != run.run or e.salt != run.salt for e in events):
        raise EventError(f"events of another run are mixed into run {run.run}")
    image = [e for e in events if isinstance(e, ImageEvent)]
    inputs = [e for e in events if isinstance(e, InputEvent)]
    outputs = [e for e in events if isinstance(e, OutputEvent)]
    middle = events[1:-1]
    # The image digest is known once the runtime started the train container, after the inputs
    # were measured; so image and inputs may come in either order, between run and output.
    if (
        len(image) > 1
        or len(outputs) != 1
        or events[-1] is not outputs[0]
        or any(not isinstance(e, ImageEvent | InputEvent) for e in middle)
    ):
        raise EventError(
            "a run's events must be: aicert.run, then aicert.input… and at most one aicert.image, then one "
            f"aicert.output (got {', '.join(e.type for e in events)})"
        )
    if len({i.name for i in inputs}) != len(inputs):
        raise EventError("two aicert.input events have the same name")
    if sum(i.parent is not None for i in inputs) > MAX_PARENTS:
        raise EventError(f"more than {MAX_PARENTS} aicert.input events name a parent certificate")
    output = outputs[0]
    predicate = TrainingPredicate(
        run=RunIdentity(
            id=run.run,
            name=run.name,
            namespace=run.namespace,
            uid=run.uid,
            attempt=run.attempt,
            spec=run.spec,
            network=output.network or run.network,  # the whole run's record when there is one
            agentImage=run.agentImage,
        ),
        image=ImageRecord(ref=image[0].ref, digest=image[0].digest) if image else None,
        inputs=[
            InputRecord(name=i.name, root=i.root, files=i.files, bytes=i.bytes, parent=i.parent)
            for i in inputs
        ],
        outputs=OutputRecord(name=output.name, root=output.root, files=output.files, bytes=output.bytes),
        node=NodeRecord(
            name=run.node,
            assurance=assurance,
            bootPcrs={str(i): v.hex() for i, v in sorted(boot_pcrs.items())},
        ),
        startedOn=run.startedOn,
        finishedOn=output.finishedOn,
    )
    return Statement(
        type=IN_TOTO_STATEMENT,
        subject=[Subject(name=output.name, digest=DigestSet(sha256=output.root))],
        predicateType=PREDICATE_TYPE,
        predicate=predicate,
    )

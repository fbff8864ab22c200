"""The `TrainingCertificate` document (docs/certificate-format.md) as strict msgspec models.

Parsing (`convert`) validates everything that can be checked without cryptography: shapes,
enumerations, hex and base64 encodings, PCR indices. Unknown fields are refused so that nothing a
verifier did not look at can ride along in a certificate. msgspec rather than pydantic because
`aicert verify` is a command people run in loops: these models build in about a millisecond
instead of a tenth of a second.
"""

# No `from __future__ import annotations` in the model modules (certificate, events, legacy):
# msgspec would compile and evaluate every string annotation at the first parse, a few
# milliseconds of each `aicert verify`.
import re
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct, field

API_VERSION = "aicert.dev/v1alpha1"
KIND = "TrainingCertificate"
IN_TOTO_STATEMENT: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://aicert.dev/training/v1"
EVIDENCE_TYPE = "tpm2-quote"
REDACTED = "redacted"
BOOT_PCRS = tuple(range(8))
DEFAULT_MEASUREMENT_PCR = 23

# The levels a node runs at, a training spec requires and a certificate claims.
Assurance = Literal["dev", "vtpm", "cvm"]
# What a verification establishes: those, or `legacy` for an old AICert proof (a genuine vTPM quote
# with no statement binding, over a PCR anything on the VM may extend). `legacy` is the verifier's
# alone: no spec, node or certificate may name it. It ranks lowest, so any policy minimum above it
# (`dev` and up) refuses old proofs (docs/security.md).
VerifiedAssurance = Literal["legacy", "dev", "vtpm", "cvm"]
ASSURANCE_ORDER: dict[str, int] = {"legacy": 0, "dev": 1, "vtpm": 2, "cvm": 3}


def root_level(claimed: Assurance) -> Assurance:
    """The level the AK's root must vouch for when a certificate (or node) claims `claimed`: the
    level itself, but `vtpm` for `cvm`, whose rest the confidential-VM evidence proves."""
    return "vtpm" if claimed == "cvm" else claimed


# Every string format is a regular expression, so that parsing alone checks it and the published
# JSON schema states it. msgspec searches with Python's `re`, whose `$` also matches before a final
# newline: `$(?!\n)` ends each anchored pattern in a way both Python and JSON Schema read alike.
_HEX64: Final = r"^[0-9a-f]{64}$(?!\n)"
_BASE64: Final = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$(?!\n)"
_RFC3339_UTC: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$(?!\n)"
_PCR_INDEX: Final = r"^(?:[0-9]|1[0-9]|2[0-3])$(?!\n)"
_IMAGE_DIGEST: Final = r"^sha256:[0-9a-f]{64}$(?!\n)"
_PINNED_IMAGE: Final = r"^[^@\s]{1,400}@sha256:[0-9a-f]{64}$(?!\n)"
_PEM_CERTIFICATE: Final = r"-----BEGIN CERTIFICATE-----"
_PEM_PUBLIC_KEY: Final = r"-----BEGIN PUBLIC KEY-----"
# What each pattern means, for error messages a person reads.
FORMATS: Final[dict[str, str]] = {
    _HEX64: "64 lowercase hexadecimal digits",
    _BASE64: "valid base64",
    _RFC3339_UTC: "an RFC 3339 UTC timestamp like 2026-01-31T12:00:00Z",
    _PCR_INDEX: "a PCR index, a decimal number from 0 to 23",
    _PEM_CERTIFICATE: "a PEM certificate",
    _PEM_PUBLIC_KEY: "a PEM public key (SubjectPublicKeyInfo)",
    _IMAGE_DIGEST: "sha256: and 64 lowercase hexadecimal digits",
    _PINNED_IMAGE: "an image reference pinned by digest, repository@sha256:<64 lowercase hex>",
}

Hex64 = Annotated[str, Meta(pattern=_HEX64)]
ImageDigest = Annotated[str, Meta(pattern=_IMAGE_DIGEST)]
PinnedImage = Annotated[str, Meta(pattern=_PINNED_IMAGE)]
Name = Annotated[str, Meta(min_length=1, max_length=253)]
Count = Annotated[int, Meta(ge=0)]
Timestamp = Annotated[str, Meta(pattern=_RFC3339_UTC)]
Base64 = Annotated[str, Meta(pattern=_BASE64, extra_json_schema={"contentEncoding": "base64"})]
PemCertificate = Annotated[str, Meta(pattern=_PEM_CERTIFICATE)]
PemPublicKey = Annotated[str, Meta(pattern=_PEM_PUBLIC_KEY)]
PcrValues = dict[Annotated[str, Meta(pattern=_PCR_INDEX)], Hex64]
JsonObject = dict[str, Any]  # any JSON object (the strict loader already refused what JSON cannot hold)


class FormatError(ValueError):
    """A document does not have the format; `field` is the dotted path of the first problem."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class Model(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """A strict, immutable part of a document. Absent optional fields are left out of its JSON."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object form: field names as in the document, absent optional fields left out."""
        built: dict[str, Any] = msgspec.to_builtins(self)
        return built


M = TypeVar("M", bound=Model)

_AT = re.compile(r"^(?P<message>.*) - at `\$?(?P<path>[^`]*)`(?: in `\$(?P<outer>[^`]*)`)?$", re.DOTALL)
# msgspec names a pattern by its repr (a backslash doubled)
_FORMAT_BY_REPR: Final = {repr(pattern)[1:-1]: meaning for pattern, meaning in FORMATS.items()}
_PATTERN = re.compile(r"Expected `str` matching regex '(?P<pattern>.*)'$", re.DOTALL)
_OWN_FIELD = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*): (?P<reason>.*)$", re.DOTALL)
_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<field>[^`]*)`$")


def _problem(message: str, prefix: str) -> FormatError:
    """msgspec's "<message> - at `$.a.b[0]`" as the field `prefix` + a.b[0] and a readable reason."""
    path, where = "", _AT.match(message)
    if where:
        message = where["message"]
        if where["outer"] is not None:  # "at `key` in `$.pcrs`": a mapping key is wrong
            path, message = where["outer"], f"a key: {message}"
        else:
            path = where["path"]
    field_name: str | None = None
    if named := _NAMED_FIELD.match(message):
        field_name = named["field"]
        message = "is required" if "missing" in message else "is not a field of this format"
    elif own := _OWN_FIELD.match(message):  # raised by a model's __post_init__ about one of its fields
        field_name, message = own["field"], own["reason"]
    if pattern := _PATTERN.search(message):
        message = (
            message[: pattern.start()]
            + f"must be {_FORMAT_BY_REPR.get(pattern['pattern'], pattern['pattern'])}"
        )
    elif message.startswith("Expected "):
        message = message[0].lower() + message[1:]
    dotted = (prefix + path.lstrip(".")) if path else prefix.rstrip(".")
    if field_name is not None:
        dotted = f"{dotted}.{field_name}" if dotted else field_name
    return FormatError(dotted, message)


def convert(data: Any, model: type[M], *, prefix: str = "") -> M:
    """`data` (parsed JSON) as `model`, every field checked; raises FormatError naming the first
    field that is wrong, as `prefix` + its path."""
    try:
        return msgspec.convert(data, model, strict=True)
    except msgspec.ValidationError as exc:
        raise _problem(str(exc), prefix) from None
    except UnicodeEncodeError:  # msgspec encodes field names and enumeration values to compare them
        where = _unencodable(data)
        raise FormatError(f"{prefix}{where}".rstrip("."), "is not valid Unicode (a lone surrogate)") from None


def _unencodable(data: Any) -> str:
    """The path of the first string (value or key) in `data` that UTF-8 cannot encode."""
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                shown = str(key).encode("utf-8", "backslashreplace").decode()  # printable, always
                key_path = f"{path}.{shown}" if path else shown
                pending.append((key_path, key))
                pending.append((key_path, item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return ""


# --- statement -------------------------------------------------------------------------------


class DigestSet(Model, frozen=True, kw_only=True):
    sha256: Hex64


class Subject(Model, frozen=True, kw_only=True):
    name: Name
    digest: DigestSet


class NetworkPolicyRecord(Model, frozen=True, kw_only=True):
    name: Name
    spec: Hex64  # sha256(JCS(the NetworkPolicy's spec))


class NetworkRecord(Model, frozen=True, kw_only=True):
    """The pod's network as the agent watched it, from its gate to its seal (the run event carries
    it as it stood at the gate). `egress` is `none` only when, at every moment, the NetworkPolicies
    selecting the pod (every state of them is listed) left it no egress at all; `unknown` when the
    agent could not tell (a policy kind it cannot evaluate could select the pod, or it could not
    watch the whole run: `unknown` says why); `allowed` when some moment left it egress."""

    egress: Literal["none", "allowed", "unknown"]
    policies: Annotated[list[NetworkPolicyRecord], Meta(max_length=256)]
    unknown: Annotated[list[Annotated[str, Meta(max_length=512)]], Meta(max_length=16)] | None = None


class RunIdentity(Model, frozen=True, kw_only=True):
    """Which run this is: the resource (or CLI invocation) and what it asked for."""

    id: Name
    name: Name
    namespace: Name | None = None
    uid: Name | None = None
    attempt: Count
    spec: JsonObject
    network: NetworkRecord | None = None  # absent for `aicert-agent run` (no Kubernetes)
    # the image of the pod's aicert-gate and aicert-seal containers (absent for `aicert-agent run`,
    # and from agents before it was recorded): which release's agent gated and sealed the run
    agentImage: PinnedImage | None = None


class ImageRecord(Model, frozen=True, kw_only=True):
    ref: Name
    digest: ImageDigest


# At most this many of a run's inputs are recorded as earlier certified runs' outputs: a statement
# with more is not one the agent writes (the verifier refuses it), and the lineage a verifier walks
# stays bounded (aicert.verify.lineage).
MAX_PARENTS: Final = 16


class ParentRecord(Model, frozen=True, kw_only=True):
    """An input that is the output of an earlier certified run (aicert.lineage): `certificate` is
    sha256 of the exact bytes of the `aicert-certificate.json` found in the input, `subject` the
    earlier run's subject (its output root), which the input's files, less the files aicert writes
    beside weights, hash to."""

    certificate: Hex64
    subject: Hex64


class InputRecord(Model, frozen=True, kw_only=True):
    name: Name
    root: Hex64
    files: Count
    bytes: Count
    parent: ParentRecord | None = None  # the input holds an earlier certified run's output


class OutputRecord(Model, frozen=True, kw_only=True):
    name: Name
    root: Hex64
    files: Count
    bytes: Count


class NodeRecord(Model, frozen=True, kw_only=True):
    name: Name
    assurance: Assurance
    bootPcrs: PcrValues


class TrainingPredicate(Model, frozen=True, kw_only=True):
    run: RunIdentity
    image: ImageRecord | None = None
    inputs: list[InputRecord]
    outputs: OutputRecord
    node: NodeRecord
    startedOn: Timestamp
    finishedOn: Timestamp


class Statement(Model, frozen=True, kw_only=True):
    """An in-toto Statement v1 whose predicate describes one training run."""

    type: Literal["https://in-toto.io/Statement/v1"] = field(name="_type")
    subject: Annotated[list[Subject], Meta(min_length=1)]
    predicateType: Literal["https://aicert.dev/training/v1"]
    predicate: TrainingPredicate


# --- evidence --------------------------------------------------------------------------------


class QuoteRecord(Model, frozen=True, kw_only=True):
    attest: Base64
    signature: Base64
    pcrs: PcrValues


class EntryQuote(Model, frozen=True, kw_only=True):
    """A checkpoint: the quote of the measurement PCR alone the agent took right after extending an
    entry, with extraData = the entry's digest. Its PCR value is not listed: it is
    `sha256(pcrBefore || digest)`, which the quote's pcrDigest must cover."""

    attest: Base64
    signature: Base64


class LogEntry(Model, frozen=True, kw_only=True):
    """One measurement. `digest = sha256(JCS(content))`; foreign runs' entries carry no content.

    In a checkpointed log (`evidence.eventLogFormat`) every entry also carries `pcrBefore`, the
    measurement PCR just before it was extended, and every entry but the last (the seal, which
    `evidence.quote` checkpoints) its `quote`."""

    seq: Count
    digest: Hex64
    type: Name
    content: JsonObject | None = None
    pcrBefore: Hex64 | None = None
    quote: EntryQuote | None = None


class AkRecord(Model, frozen=True, kw_only=True):
    public: PemPublicKey
    certificateChain: Annotated[list[PemCertificate], Meta(min_length=1, max_length=8)]


class PlatformRecord(Model, frozen=True, kw_only=True):
    """Confidential-VM evidence (level `cvm`): Azure's HCL report as read from TPM NV index
    0x01400001, and the AMD certificates of the chip that signed its SEV-SNP report (VCEK, ASK,
    and optionally ARK) in PEM (docs/confidential-vm.md)."""

    hclReport: Base64
    certificateChain: Annotated[list[PemCertificate], Meta(min_length=1, max_length=4)]


class Evidence(Model, frozen=True, kw_only=True):
    type: Literal["tpm2-quote"]
    pcrBank: Literal["sha256"]
    pcr: Annotated[int, Meta(ge=0, le=23)]
    assurance: Assurance
    quote: QuoteRecord
    # `epoch`: every entry since the PCR was last reset, foreign runs' redacted, replayed from zero.
    # `checkpointed`: the run's own entries alone, each checked against its own quote.
    eventLogFormat: Literal["epoch", "checkpointed"] = "epoch"
    eventLog: Annotated[list[LogEntry], Meta(min_length=1)]
    ak: AkRecord
    platform: PlatformRecord | None = None  # present for level cvm
    # RFC 3161 TimeStampResp (DER, base64) over sha256 of quote.signature's bytes, from the TSA the
    # agent is configured with; absent when it has none.
    timestamp: Base64 | None = None

    def __post_init__(self) -> None:
        if self.pcr in (8, 14):
            raise ValueError("pcr: PCR 8 and 14 are extended by firmware, shim and other tools; use PCR 23")
        problem = log_shape_problem(self.eventLogFormat, self.eventLog)
        if problem:
            raise ValueError(f"eventLog: {problem}")


def log_shape_problem(log_format: str, log: list[LogEntry]) -> str | None:
    """Which entry lacks, or carries, what its log format says it must (None: the shape is right)."""
    last = len(log) - 1
    for index, entry in enumerate(log):
        where = f"entry {index} (seq {entry.seq})"
        if log_format != "checkpointed":
            if entry.pcrBefore is not None or entry.quote is not None:
                return (
                    f"{where} carries pcrBefore or quote, which only a checkpointed log has (eventLogFormat)"
                )
            continue
        if entry.type == REDACTED or entry.content is None:
            return f"{where} is redacted or has no content: a checkpointed log carries the run's own entries only, in full"
        if entry.pcrBefore is None:
            return f"{where} has no pcrBefore: every entry of a checkpointed log has one"
        if index < last and entry.quote is None:
            return f"{where} has no quote: every entry of a checkpointed log but the last (the seal) has one"
        if index == last and entry.quote is not None:
            return f"{where} is the last (the seal) and carries a quote: evidence.quote is its checkpoint"
    return None


class TrainingCertificate(Model, frozen=True, kw_only=True):
    apiVersion: Literal["aicert.dev/v1alpha1"]
    kind: Literal["TrainingCertificate"]
    statement: Statement
    evidence: Evidence

"""`aicert verify FILE|-`: check a training certificate or an old AICert proof, offline."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aicert.trust import TrustError, TrustStore, load_trust_store, load_tsa_store
from aicert.trust.measurements import load_paravisor_measurements
from aicert.verify import MalformedError, Policy, VerificationError, VerifiedTraining, Verifier
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES, read_bounded_file, read_bounded_stream

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from aicert.verify.lineage import Lineage  # loaded with --lineage only

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], *, oci: bool = True) -> None:
    """`oci`: FILE may be an oci:// reference (not for `kubectl aicert verify`, whose input is a resource)."""
    p = sub.add_parser(
        "verify",
        help="verify a training certificate offline",
        description="Verify a training certificate (or an old AICert proof) against trusted roots. "
        "Exit 0: verified; 1: a check failed; 2: unusable input or usage error.",
    )
    p.add_argument(
        "certificate",
        metavar="FILE",
        help="certificate JSON file (a regular file of at most 16 MiB), - for standard input, or "
        "oci://REGISTRY/REPO@sha256:… for a model in a registry with its certificate attached",
    )
    add_trust_flags(p)
    p.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="re-hash these weights and compare with the certified output",
    )
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="re-hash this input directory and compare with the certified input NAME (repeatable)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave extra local files matching this glob (README.md, .git/**) out of --model and --data; "
        "a certified file is never left out (repeatable)",
    )
    p.add_argument(
        "--lineage",
        action="append",
        default=[],
        metavar="DIR|oci://REGISTRY/REPO",
        help="follow the certificate's parents (inputs that were earlier certified runs' outputs) to the "
        "certificates in DIR, any file names, or in a registry repository (fetched by the digest each "
        "child records), verify each and its link, back to the first run (repeatable, DIRs looked in first)",
    )
    p.add_argument(
        "--lineage-partial",
        action="store_true",
        help="with --lineage: a parent certificate in no DIR or repository leaves the lineage incomplete "
        "(reported) instead of failing the verification",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    if oci:
        from aicert.cli.registry_flags import add_registry_flags

        add_registry_flags(p)
    p.set_defaults(func=run)


def add_trust_flags(p: argparse.ArgumentParser) -> None:
    """The flags `verifier_from_args` reads (trust roots, TSA roots, time, policy, log keys), shared
    by every command that verifies a certificate (`aicert verify`, `aicert pull`, `kubectl aicert verify`)."""
    p.add_argument(
        "--trust",
        action="append",
        choices=["azure", "dev"],
        default=[],
        help="trust a named store installed with `aicert trust install` (repeatable)",
    )
    p.add_argument(
        "--trust-bundle",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help="trust the roots in this PEM file; its other certificates serve as intermediates (repeatable)",
    )
    p.add_argument(
        "--tsa-bundle",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="trust the time-stamping authorities whose roots are in this PEM or DER file, and check the "
        "certificate's RFC 3161 timestamp (repeatable; default: the `tsa` store, if installed)",
    )
    p.add_argument(
        "--at",
        metavar="RFC3339",
        help="check certificate validity at this time (default: a trusted timestamp's time, else now)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="JSON policy (at most 1 MiB): minAssurance, allowedImages, bootPcrs, egress",
    )
    p.add_argument(
        "--tlog-key",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help="check the bundle's transparency log entry against this pinned Rekor v2 log key "
        "(Ed25519 or ECDSA public key, PEM; repeatable)",
    )
    p.add_argument(
        "--require-tlog",
        action="store_true",
        help="fail tlog-inclusion when the bundle has no log entry checked against a pinned key",
    )


TLOG_KEY_MAX_BYTES = 16 * 1024


def load_tlog_keys(paths: list[Path]) -> list[PublicKeyTypes]:
    """The pinned log keys of `--tlog-key`: Ed25519 or ECDSA public keys, PEM."""
    if not paths:
        return []
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    keys: list[PublicKeyTypes] = []
    for path in paths:
        data = read_bounded_file(path, limit=TLOG_KEY_MAX_BYTES, field="--tlog-key")
        try:
            key = load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise MalformedError("--tlog-key", f"{path} is not a PEM public key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise MalformedError(
                "--tlog-key", f"{path} is not an Ed25519 or ECDSA key, as a Rekor v2 log signs with"
            )
        keys.append(key)
    return keys


def parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedError("--at", f"{text!r} is not an RFC 3339 time like 2024-06-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise MalformedError("--at", f"{text!r} has no time zone; add Z for UTC")
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise MalformedError("--at", f"{text!r} is outside years 1 to 9999 in UTC") from None


def trust_store(named: list[str], bundles: list[Path]) -> TrustStore:
    """Only what the flags name is trusted; with neither flag, the `azure` store."""
    return load_trust_store(named, bundles)


def parse_data(items: list[str]) -> dict[str, Path]:
    result: dict[str, Path] = {}
    for item in items:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise MalformedError("--data", f"{item!r} is not NAME=DIR")
        if name in result:
            raise MalformedError("--data", f"input {name!r} is given twice")
        result[name] = Path(directory)
    return result


def read_input(name: str) -> bytes:
    """The certificate: standard input, or a regular file (a FIFO or a device is refused), read
    up to the 16 MiB cap."""
    if name == "-":
        return read_bounded_stream(
            sys.stdin.buffer, limit=CERTIFICATE_MAX_BYTES, field="FILE", name="standard input"
        )
    return read_bounded_file(Path(name), limit=CERTIFICATE_MAX_BYTES, field="FILE")


# C0 and C1 controls, the line and paragraph separators (str.splitlines breaks on them) and the
# bidirectional overrides: text from a certificate or a file name must not move the cursor, clear the
# terminal or reorder what is shown, nor add a line to a report.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` on one line, with control characters shown as escapes."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def skipped_line(result: VerifiedTraining) -> str | None:
    """`check, check: reason; check: reason`, the checks grouped by why they did not run."""
    reasons: dict[str, list[str]] = {}
    for check, reason in result.skipped:
        reasons.setdefault(reason, []).append(str(check))
    return "; ".join(f"{', '.join(checks)}: {reason}" for reason, checks in reasons.items()) or None


IGNORED_SHOWN_IN_TEXT = 5  # file names per directory on the `ignored` line (--json lists more)


def ignored_lines(result: VerifiedTraining) -> list[str]:
    """`check DIR: a, b, … (N files left out by --ignore)`, one line per directory."""
    lines = []
    for entry in result.ignored:
        shown = ", ".join(entry.files[:IGNORED_SHOWN_IN_TEXT])
        more = " …" if entry.count > IGNORED_SHOWN_IN_TEXT else ""
        files = "file" if entry.count == 1 else "files"
        lines.append(
            f"{entry.check} {entry.directory}: {shown}{more} ({entry.count} {files} left out by --ignore)"
        )
    return lines


def summary(result: VerifiedTraining) -> str:
    lines = [f"VERIFIED  assurance: {result.assurance}  ({result.format})"]
    if result.statement is not None:
        p = result.statement.predicate
        run = p.run
        where = f"{run.namespace}/{run.name}" if run.namespace else run.name
        lines += [
            f"  model    {p.outputs.name}: sha256 {p.outputs.root}  ({p.outputs.files} files, {p.outputs.bytes} bytes)",
            f"  run      {where}  attempt {run.attempt}" + (f"  uid {run.uid}" if run.uid else ""),
            f"  image    {p.image.ref} ({p.image.digest})"
            if p.image
            else "  image    (none recorded: run outside a container)",
        ]
        for i in p.inputs:
            lines.append(f"  input    {i.name}: sha256 {i.root}  ({i.files} files, {i.bytes} bytes)")
            if i.parent is not None:
                lines.append(
                    f"           the output of model sha256 {i.parent.subject}, certificate sha256 {i.parent.certificate}"
                )
        lines.append(f"  node     {p.node.name}")
        if run.network is not None:
            policies = ", ".join(dict.fromkeys(n.name for n in run.network.policies)) or "no NetworkPolicy"
            lines.append(f"  network  egress {run.network.egress}  ({policies})")
            lines.extend(f"           unknown: {why}" for why in run.network.unknown or [])
        lines.append(f"  trained  {p.startedOn} → {p.finishedOn}")
    else:
        for event in result.events:
            lines.append(f"  event    {event.get('event_type')}: {json.dumps(event.get('content'))[:100]}")
    lines += [
        f"  AK       {result.ak_subject}",
        f"  root     {result.trust_root}  [{result.trust_source}]",
        f"  checks   {', '.join(result.passed)}",
    ]
    skipped = skipped_line(result)
    if skipped:
        lines.append(f"  skipped  {skipped}")
    lines += [f"  ignored  {line}" for line in ignored_lines(result)]
    lines += [f"  note     {note}" for note in result.notes]
    return "\n".join(printable(line) for line in lines)


def lineage_of(
    args: argparse.Namespace,
    verifier: Verifier,
    data: bytes,
    result: VerifiedTraining,
    *,
    source: str | None = None,
) -> Lineage:
    """--lineage: the parents, each verified with the same trust roots, TSA roots and time, without
    the policy (it speaks of the run given: its image, its level; the weakest level is reported)."""
    from aicert.verify.lineage import CertificateDirectories, walk_lineage

    parents = Verifier(
        trust=verifier.trust,
        tsa=verifier.tsa,
        ark_fingerprints=verifier.ark_fingerprints,
        paravisor_measurements=verifier.paravisor_measurements,
    )
    at = parse_time(args.at) if args.at else None
    directories = CertificateDirectories.index([Path(s) for s in args.lineage if not s.startswith("oci://")])
    finders = [directories.find, *registry_finders(args)]

    def find(digest: str) -> tuple[bytes, str] | None:
        for finder in finders:
            found = finder(digest)
            if found is not None:
                return found
        return None

    return walk_lineage(
        hashlib.sha256(data).hexdigest(),
        result,
        find,
        lambda parent: parents.verify(parent, at=at),
        source=source or args.certificate,
        partial=args.lineage_partial,
    )


def registry_finders(args: argparse.Namespace) -> list[Callable[[str], tuple[bytes, str] | None]]:
    """A finder for each `--lineage oci://REGISTRY/REPO`, in order (the registry client loads only then)."""
    references = [s for s in args.lineage if s.startswith("oci://")]
    if not references:
        return []
    from aicert.cli.registry_flags import connect
    from aicert.oci.errors import OciError
    from aicert.oci.lineage import RegistryCertificates, lineage_repository
    from aicert.oci.reference import parse_reference

    finders: list[Callable[[str], tuple[bytes, str] | None]] = []
    for text in references:
        try:
            reference = lineage_repository(parse_reference(text))
            finders.append(RegistryCertificates(connect(reference, args), reference).find)
        except OciError as exc:
            raise MalformedError("--lineage", exc.reason) from None
    return finders


def lineage_lines(lineage: Lineage) -> list[str]:
    state = "complete" if lineage.complete else "INCOMPLETE"
    runs = "run" if len(lineage.links) == 1 else "runs"
    lines = [f"  lineage  {state}: {len(lineage.links)} {runs}, weakest level {lineage.weakest}"]
    for link in lineage.links:
        statement = link.result.statement
        name = "(old AICert proof)"
        if statement is not None:
            run = statement.predicate.run
            name = f"{run.namespace}/{run.name}" if run.namespace else run.name
        via = "the certificate given" if link.child is None else f"input {link.input} of {link.child[:12]}"
        lines.append(
            f"           {'  ' * link.depth}{link.certificate[:12]}  {name}  {link.result.assurance}  ({via}; {link.source})"
        )
    lines += [f"  missing  {m.describe()}" for m in lineage.missing]
    return lines


def verifier_from_args(args: argparse.Namespace) -> Verifier:
    """The Verifier the flags every verify command shares ask for (`aicert verify` of a file or an
    oci:// reference, `kubectl aicert verify`): trust roots, policy, TSA roots, known paravisor
    measurements, pinned log keys. Raises MalformedError or TrustError naming the flag's input."""
    return Verifier(
        trust=trust_store(args.trust, args.trust_bundle),
        policy=Policy.from_file(args.policy) if args.policy else None,
        tsa=load_tsa_store(args.tsa_bundle),
        paravisor_measurements=load_paravisor_measurements(),
        tlog_keys=load_tlog_keys(args.tlog_key),
        require_tlog=args.require_tlog,
    )


def run(args: argparse.Namespace) -> int:
    if args.certificate.startswith("oci://"):
        from aicert.cli import verify_oci  # the registry client loads only for a registry

        return verify_oci.run(args)
    lineage: Lineage | None = None
    try:
        if args.lineage_partial and not args.lineage:
            raise MalformedError("--lineage-partial", "is only for --lineage")
        data = read_input(args.certificate)
        verifier = verifier_from_args(args)
        result = verifier.verify(
            data,
            model_dir=args.model,
            data_dirs=parse_data(args.data),
            ignore=args.ignore,
            at=parse_time(args.at) if args.at else None,
        )
        if args.lineage:
            lineage = lineage_of(args, verifier, data, result)
    except (MalformedError, TrustError) as exc:
        where = f"{exc.field}: " if isinstance(exc, MalformedError) and exc.field else ""
        reason = exc.reason if isinstance(exc, MalformedError) else str(exc)
        if args.json:
            print(
                json.dumps(
                    {
                        "verified": False,
                        "error": "unusable-input",
                        "field": getattr(exc, "field", None),
                        "reason": reason,
                    }
                )
            )
        print(printable(f"aicert verify: unusable input: {where}{reason}"), file=sys.stderr)
        return EXIT_UNUSABLE
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"verified": False, "check": str(exc.check), "reason": exc.reason}))
        print(printable(f"NOT VERIFIED  check {exc.check} failed: {exc.reason}"), file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        document = result.to_json()
        if lineage is not None:
            document["lineage"] = lineage.to_json()
        print(json.dumps(document, indent=2))
    else:
        print(summary(result))
        if lineage is not None:
            print("\n".join(printable(line) for line in lineage_lines(lineage)))
    return EXIT_OK

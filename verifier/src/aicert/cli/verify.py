"""`aicert verify FILE|-`: check a training certificate or an old AICert proof, offline."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from aicert.trust import TrustError, TrustStore, load_named
from aicert.verify import MalformedError, Policy, VerificationError, VerifiedTraining, Verifier

EXIT_OK, EXIT_FAILED, EXIT_UNUSABLE = 0, 1, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="verify a training certificate offline",
        description="Verify a training certificate (or an old AICert proof) against trusted roots. "
        "Exit 0: verified; 1: a check failed; 2: unusable input or usage error.",
    )
    p.add_argument("certificate", metavar="FILE", help="certificate JSON file, or - for standard input")
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
    p.add_argument("--at", metavar="RFC3339", help="check certificate validity at this time (default: now)")
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
        "--policy", type=Path, metavar="FILE", help="JSON policy: minAssurance, allowedImages, bootPcrs"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedError("--at", f"{text!r} is not an RFC 3339 time like 2024-06-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise MalformedError("--at", f"{text!r} has no time zone; add Z for UTC")
    return moment.astimezone(dt.UTC)


def trust_store(named: list[str], bundles: list[Path]) -> TrustStore:
    """Only what the flags name is trusted; with neither flag, the `azure` store."""
    store = TrustStore()
    for name in named or ([] if bundles else ["azure"]):
        store = store + load_named(name)
    for bundle in bundles:
        store = store + TrustStore.from_pem_file(bundle)
    return store


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
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise MalformedError("FILE", f"cannot read {name}: {exc.strerror}") from None


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
        lines += [
            f"  input    {i.name}: sha256 {i.root}  ({i.files} files, {i.bytes} bytes)" for i in p.inputs
        ]
        lines.append(f"  node     {p.node.name}")
        if run.network is not None:
            policies = ", ".join(n.name for n in run.network.policies) or "no NetworkPolicy"
            lines.append(f"  network  egress {run.network.egress}  ({policies})")
        lines.append(f"  trained  {p.startedOn} → {p.finishedOn}")
    else:
        for event in result.events:
            lines.append(f"  event    {event.get('event_type')}: {json.dumps(event.get('content'))[:100]}")
    lines += [
        f"  AK       {result.ak_subject}",
        f"  root     {result.trust_root}  [{result.trust_source}]",
        f"  checks   {', '.join(result.passed)}",
    ]
    lines += [f"  note     {note}" for note in result.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        data = read_input(args.certificate)
        verifier = Verifier(
            trust=trust_store(args.trust, args.trust_bundle),
            policy=Policy.from_file(args.policy) if args.policy else None,
        )
        result = verifier.verify(
            data,
            model_dir=args.model,
            data_dirs=parse_data(args.data),
            at=parse_time(args.at) if args.at else None,
        )
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
        print(f"aicert verify: unusable input: {where}{reason}", file=sys.stderr)
        return EXIT_UNUSABLE
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"verified": False, "check": str(exc.check), "reason": exc.reason}))
        print(f"NOT VERIFIED  check {exc.check} failed: {exc.reason}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result.to_json(), indent=2) if args.json else summary(result))
    return EXIT_OK

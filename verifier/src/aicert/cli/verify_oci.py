"""`aicert verify oci://REGISTRY/REPO@sha256:…`: pull a model and its certificates, verify offline.

The model manifest is fetched by digest (a tag is resolved to one first, and the digest shown), its
layers are pulled into a temporary directory (each checked against its digest while it streams),
the referrers of the manifest that are certificates are fetched (each by digest, each naming this
manifest as its subject), and each certificate is verified exactly as `aicert verify CERT --model
DIR` verifies it, the weights re-hashed against the certified root. The first that verifies is
the result, and the result names it; when none does, each one's failure is printed. With
--lineage (DIRs or oci:// repositories) the parents of the certificate that verified are followed as
for a certificate in a file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aicert.cli import verify as verify_cmd
from aicert.cli.registry_flags import connect
from aicert.oci.documents import ARTIFACT_CERTIFICATE
from aicert.oci.errors import OciContentError, OciError
from aicert.oci.reference import OciReference, parse_reference
from aicert.oci.transfer import Referrer, attachments_of, model_manifest, pull_model
from aicert.oci.verified import first_verified
from aicert.trust import TrustError
from aicert.verify import MalformedError, VerificationError, VerifiedTraining, Verifier
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES

if TYPE_CHECKING:
    from aicert.verify.lineage import Lineage  # loaded with --lineage only

CONTENT_CHECK = "oci-content"  # the registry served other bytes than the digest names


def unusable(
    args: argparse.Namespace,
    field: str | None,
    reason: str,
    *,
    command: str = "verify",
    key: str = "verified",
) -> int:
    """Exit 2: the input or the registry could not be used (`command` says whose, `key` is the
    JSON result's flag)."""
    if args.json:
        print(json.dumps({key: False, "error": "unusable-input", "field": field, "reason": reason}))
    where = f"{field}: " if field else ""
    print(verify_cmd.printable(f"aicert {command}: unusable input: {where}{reason}"), file=sys.stderr)
    return verify_cmd.EXIT_UNUSABLE


def failed(
    args: argparse.Namespace,
    failures: list[dict[str, str]],
    *,
    key: str = "verified",
    afterwards: str | None = None,
) -> int:
    """Exit 1: no certificate verified; each failure's check and reason (`afterwards`: a last line
    on stderr, e.g. what was not written)."""
    for failure in failures:
        line = f"NOT VERIFIED  check {failure['check']} failed: {failure['reason']}"
        if "referrer" in failure:
            line += f" (certificate {failure['referrer']})"
        print(verify_cmd.printable(line), file=sys.stderr)
    if afterwards:
        print(afterwards, file=sys.stderr)
    if args.json:
        doc: dict[str, Any] = {
            key: False,
            "check": failures[0]["check"],
            "reason": failures[0]["reason"],
        }
        if len(failures) > 1 or "referrer" in failures[0]:
            doc["failures"] = failures
        print(json.dumps(doc))
    return verify_cmd.EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    try:
        if args.model is not None:
            raise MalformedError(
                "--model",
                "the weights come from the registry with an oci:// reference; --model is for a file",
            )
        if args.lineage_partial and not args.lineage:
            raise MalformedError("--lineage-partial", "is only for --lineage")
        verifier = verify_cmd.verifier_from_args(args)
        data_dirs = verify_cmd.parse_data(args.data)
        at = verify_cmd.parse_time(args.at) if args.at else None
        reference = parse_reference(args.certificate)
        client = connect(reference, args)
    except MalformedError as exc:
        return unusable(args, exc.field, exc.reason)
    except TrustError as exc:
        return unusable(args, None, str(exc))
    except OciError as exc:
        return unusable(args, "oci", exc.reason)
    tag_note = None
    try:
        digest = reference.digest
        if digest is None:  # the tag only picks the digest; what is verified is the digest's content
            digest = client.resolve(reference.repository, reference.tag or "latest")
            tag_note = (
                f"tag {reference.tag or 'latest'} resolved to {digest}: a tag can move, verify "
                f"{reference.with_digest(digest)} to pin this model"
            )
        pinned = reference.with_digest(digest)
        manifest = model_manifest(client, reference.repository, digest)
        found = attachments_of(
            client, reference.repository, digest, ARTIFACT_CERTIFICATE, max_bytes=CERTIFICATE_MAX_BYTES
        )
        if not found.referrers:
            passed = "; ".join(found.passed_over)
            return unusable(
                args,
                "referrers",
                f"no certificate ({ARTIFACT_CERTIFICATE}) is attached to {pinned}"
                + (f" (passed over: {passed})" if passed else ""),
            )
        with tempfile.TemporaryDirectory(prefix="aicert-oci-") as tmp:
            model_dir = Path(tmp) / "model"
            model_dir.mkdir()
            pull_model(client, manifest, reference.repository, model_dir)
            return _verify_each(
                args, verifier, found.referrers, found.passed_over, model_dir, data_dirs, at, pinned, tag_note
            )
    except OciContentError as exc:
        return failed(args, [{"check": CONTENT_CHECK, "reason": exc.reason}])
    except OciError as exc:
        return unusable(args, "oci", exc.reason)
    except OSError as exc:
        return unusable(args, "oci", f"cannot write the pulled model: {exc}")


def _verify_each(
    args: argparse.Namespace,
    verifier: Verifier,
    referrers: list[Referrer],
    passed_over: list[str],
    model_dir: Path,
    data_dirs: dict[str, Path],
    at: dt.datetime | None,
    pinned: OciReference,
    tag_note: str | None,
) -> int:
    try:
        attempts = first_verified(
            verifier,
            referrers,
            model_dir,
            shown_as=f"{pinned}'s weights (pulled)",
            data_dirs=data_dirs,
            at=at,
            ignore=args.ignore,
        )
    except MalformedError as exc:  # a flag that does not fit: the same for every certificate
        return unusable(args, exc.field, exc.reason)
    if attempts.verified is not None:
        referrer, result = attempts.verified
        lineage = None
        if args.lineage:  # the parents of the certificate that verified, in DIRs or registries
            try:
                lineage = verify_cmd.lineage_of(
                    args, verifier, referrer.data, result, source=f"{pinned} (certificate {referrer.digest})"
                )
            except MalformedError as exc:
                return unusable(args, exc.field, exc.reason)
            except VerificationError as exc:
                return failed(args, [{"check": str(exc.check), "reason": exc.reason}])
        _print_verified(args, result, pinned, referrer, tag_note, attempts.not_used() + passed_over, lineage)
        return verify_cmd.EXIT_OK
    if attempts.failed:
        return failed(
            args, [{"check": f.check, "reason": f.reason, "referrer": f.referrer} for f in attempts.failed]
        )
    first_digest, problem = attempts.unusable[0]
    return unusable(args, f"referrer {first_digest}: {problem.field}".rstrip(": "), problem.reason)


def _print_verified(
    args: argparse.Namespace,
    result: VerifiedTraining,
    pinned: OciReference,
    referrer: Referrer,
    tag_note: str | None,
    not_used: list[str],
    lineage: Lineage | None = None,
) -> None:
    if args.json:
        doc = result.to_json()
        if lineage is not None:
            doc["lineage"] = lineage.to_json()
        doc["oci"] = {
            "model": str(pinned),
            "referrer": referrer.digest,
            "artifactType": referrer.artifact_type,
            "notUsed": not_used,
        }
        if tag_note:
            doc["oci"]["tag"] = tag_note
        print(json.dumps(doc, indent=2))
        return
    lines = [
        f"  oci      {pinned}",
        f"  referrer {referrer.digest}  ({referrer.artifact_type}), the certificate verified",
    ]
    lines += [f"  not used {line}" for line in not_used]
    if tag_note:
        lines.append(f"  note     {tag_note}")
    if lineage is not None:
        lines += verify_cmd.lineage_lines(lineage)
    print(verify_cmd.summary(result))
    print("\n".join(verify_cmd.printable(line) for line in lines))

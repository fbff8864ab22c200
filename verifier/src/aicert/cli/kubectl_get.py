"""`kubectl aicert get NAME`: write a CertifiedTraining's certificate to a file, to keep it.

The certificate lives in the resource's status, which goes when the resource is deleted (or pruned
by GitOps). The node agent also writes it beside the weights in the output volume; this command
fetches the copy in the status, for example to put it next to weights downloaded elsewhere. It
writes `DIR/aicert-certificate.json` (the name the agent uses, which `aicert verify --model DIR`
leaves out of the weights' root) exactly as the status holds it, and never overwrites a different
file unless told to. It checks nothing cryptographic: run `aicert verify` on the file.

When the status also holds the bundle's signature (`status.envelopeSignature`, from agents that
write `aicert.sigstore.json`), it writes `DIR/aicert.sigstore.json` too: the certificate as a
Sigstore bundle, rebuilt from the certificate and that signature, the bytes the agent wrote; with
the bundle's transparency log entry when the status holds one (`status.transparencyLogEntry`,
from agents with a Rekor v2 log), so that `aicert verify --tlog-key` checks its inclusion proof.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from aicert.outputs import BUNDLE_FILE, CERTIFICATE_FILE
from aicert.verify import MalformedError, TrainingResource

EXIT_OK, EXIT_UNUSABLE = 0, 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "get",
        help="write a CertifiedTraining's certificate (and its Sigstore bundle) to files",
        description="Write the certificate in a CertifiedTraining's status to DIR/" + CERTIFICATE_FILE + ", "
        "and, when the status holds its signature, the certificate as a Sigstore bundle to DIR/"
        + BUNDLE_FILE
        + ". Exit 0: written (or already there, identical); 2: no certificate, kubectl failed, or a "
        "different file is in the way.",
    )
    p.add_argument("name", metavar="NAME", help="the CertifiedTraining's name")
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where to write it, e.g. beside the weights (default: the current directory)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace different certificate or bundle files in DIR"
    )
    p.add_argument("-n", "--namespace", help="the CertifiedTraining's namespace (default: the context's)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--kubeconfig", help="kubeconfig file")
    p.set_defaults(json=False)  # failures are reported as `verify` reports them, without --json


def write_certificate(directory: Path, text: str, *, force: bool, name: str = CERTIFICATE_FILE) -> Path:
    """Write `text` to DIR/`name` (aicert-certificate.json), whole or not at all. Raises
    FileExistsError when a different file is there and not `force`, OSError when it cannot be written."""
    target = directory / name
    data = text.encode() + b"\n"
    if not force and os.path.lexists(target):
        if not target.is_file() or target.is_symlink() or target.read_bytes() != data:
            raise FileExistsError(f"{target} exists and holds something else; --force replaces it")
        return target
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(target)
    return target


def run(args: argparse.Namespace, resource: TrainingResource) -> int:
    """`resource`: the CertifiedTraining as read from the cluster (by the caller)."""
    if resource.certificate is None:
        print(
            f"kubectl aicert: CertifiedTraining {resource.namespace}/{resource.name} has no certificate "
            f"(phase {resource.phase or 'not set'})",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    bundle = None
    if resource.envelope_signature is not None:
        from aicert.bundle import bundle_bytes, rebuild_bundle

        try:
            rebuilt = rebuild_bundle(
                resource.certificate, resource.envelope_signature, resource.transparency_log_entry
            )
        except MalformedError as exc:
            print(f"kubectl aicert: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE
        bundle = bundle_bytes(rebuilt).decode().removesuffix("\n")  # write_certificate adds it
    try:
        target = write_certificate(args.dir, resource.certificate, force=args.force)
        if bundle is not None:
            print(write_certificate(args.dir, bundle, force=args.force, name=BUNDLE_FILE))
    except OSError as exc:  # FileExistsError included
        print(f"kubectl aicert: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if bundle is None:
        print(
            "kubectl aicert: the status holds no envelopeSignature (an agent before Sigstore bundles): "
            f"no {BUNDLE_FILE} written",
            file=sys.stderr,
        )
    print(target)
    print(
        f"verify it with: aicert verify {target} --model DIR (the weights, with the manifest.json the "
        "agent wrote beside them)",
        file=sys.stderr,
    )
    return EXIT_OK

"""`aicert-agent run`: the original AICert use, without Kubernetes.

Measure the inputs, run the training command, measure the outputs, check the inputs did not
change, seal, quote, and write the certificate and manifests. One run at a time per state
directory: the run owns the measurement PCR's epoch, so it re-bases the log when it starts.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aicert.bundle import bundle_bytes
from aicert.certificate import Assurance
from aicert.digest import (
    BUNDLE_FILE,
    CERTIFICATE_FILE,
    INPUT_EXCLUDED,
    MANIFEST_FILE,
    MODEL_SIGNATURE_FILE,
    OUTPUT_EXCLUDED,
    DigestError,
    Manifest,
    hash_tree,
)
from aicert.trust.pem import load_certificates
from aicert_agent.bundling import BundleError, sign_bundle, sign_model
from aicert_agent.markers import write_atomic
from aicert_agent.measurement_log import LogError, MeasurementLog
from aicert_agent.parents import input_parent
from aicert_agent.platform import THIM_URL, PlatformError, platform_evidence
from aicert_agent.recorder import AkIdentity, RunRecorder, SealError, new_salt
from aicert_agent.timestamping import TimestampError, add_timestamp
from aicert_agent.tpm.client import Tpm, TpmError
from aicert_agent.transparency import TransparencyLog, TransparencyLogError, log_entry, with_log_entry

EXIT_OK, EXIT_COMMAND_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
LOG_FILE = "measurements.log"


class RunRefused(Exception):
    """No certificate: the message says why."""


@dataclass(frozen=True)
class LocalRun:
    tpm: str
    state_dir: Path
    inputs: dict[str, Path]
    outputs: Path
    command: list[str]
    certificate: Path
    name: str = "local-run"
    output_name: str = "model"
    image_ref: str | None = None
    image_digest: str | None = None
    assurance: Assurance = "dev"
    pcr: int = 23
    extra_chain: tuple[Path, ...] = field(default=())
    node: str = field(default_factory=socket.gethostname)
    tsa_url: str | None = None  # an RFC 3161 TSA to date the quote's signature
    tlog: TransparencyLog | None = None  # a Rekor v2 log the bundle is submitted to
    thim_url: str = THIM_URL  # level cvm: where the chip's VCEK chain is served (Azure IMDS)


@contextmanager
def exclusive_run(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "run.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunRefused(f"another `aicert-agent run` is using {state_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_json_atomic(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ak_identity(
    tpm: Tpm, extra_chain: tuple[Path, ...], *, assurance: Assurance = "dev", thim_url: str = THIM_URL
) -> AkIdentity:
    """The AK's key and certificates; at level cvm also the confidential VM's evidence (the HCL
    report from the TPM, the VCEK chain from `thim_url`), read once: it binds the AK, which does
    not change while the VM runs. Raises PlatformError when a cvm node has none."""
    leaf = x509.load_der_x509_certificate(tpm.ak_certificate_der())
    chain = [leaf.public_bytes(Encoding.PEM).decode()]
    for path in extra_chain:
        chain += [c.public_bytes(Encoding.PEM).decode() for c in load_certificates(path.read_bytes())]
    platform = platform_evidence(tpm, thim_url=thim_url) if assurance == "cvm" else None
    return AkIdentity(tpm.ak_public_pem(), tuple(chain), platform)


def hash_dir(path: Path, what: str, *, exclude: frozenset[str]) -> Manifest:
    """`exclude`: INPUT_EXCLUDED (an input is measured whole) or OUTPUT_EXCLUDED."""
    try:
        return hash_tree(path, exclude=exclude)
    except DigestError as exc:
        raise RunRefused(f"cannot measure {what}: {exc}") from None


def run_spec(run: LocalRun) -> dict[str, Any]:
    command: list[Any] = [*run.command]
    inputs: list[Any] = [*sorted(run.inputs)]
    spec: dict[str, Any] = {
        "command": command,
        "inputs": inputs,
        "output": run.output_name,
    }
    if run.image_ref:
        spec["image"] = run.image_ref
    return spec


def execute(run: LocalRun) -> int:
    """Run and certify; returns the process exit code. Messages go to stderr."""
    from tpm2_pytss import TSS2_Exception

    try:
        return _execute(run)
    except (RunRefused, LogError, SealError, TpmError, BundleError) as exc:
        print(f"aicert-agent run: refused, no certificate: {exc}", file=sys.stderr)
    except TSS2_Exception as exc:
        print(f"aicert-agent run: refused, no certificate: the TPM failed: {exc}", file=sys.stderr)
    return EXIT_REFUSED


def _execute(run: LocalRun) -> int:
    for name, path in run.inputs.items():
        if not path.is_dir():
            raise RunRefused(f"input {name}: {path} is not a directory")
    for reserved in sorted(OUTPUT_EXCLUDED):
        if os.path.lexists(run.outputs / reserved):
            raise RunRefused(
                f"{run.outputs / reserved} exists; aicert writes that file, start from an empty output"
            )
    try:
        run.outputs.mkdir(parents=True, exist_ok=True)
        run.certificate.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunRefused(f"cannot create {exc.filename}: {exc.strerror}") from None
    with exclusive_run(run.state_dir), Tpm(run.tpm) as tpm:
        try:
            ak = ak_identity(tpm, run.extra_chain, assurance=run.assurance, thim_url=run.thim_url)
        except PlatformError as exc:
            raise RunRefused(f"cannot certify at level cvm: {exc}") from None
        log = MeasurementLog(run.state_dir / LOG_FILE, run.pcr)
        log.rebase(tpm)
        recorder = RunRecorder(log, tpm, run_id=uuid.uuid4().hex, salt=new_salt())
        recorder.begin(node=run.node, name=run.name, attempt=0, spec=run_spec(run))
        if run.image_ref and run.image_digest:
            recorder.image(run.image_ref, run.image_digest)
        inputs = {
            name: hash_dir(path, f"input {name}", exclude=INPUT_EXCLUDED)
            for name, path in sorted(run.inputs.items())
        }
        parents = 0
        for name, manifest in inputs.items():
            parent = input_parent(run.inputs[name], manifest, f"input {name}", recorded=parents).parent
            recorder.input(name, manifest, parent=parent)
            if parent is not None:
                print(
                    f"aicert-agent: input {name} is the output of a certified run "
                    f"(certificate sha256 {parent.certificate})",
                    file=sys.stderr,
                )
            parents += parent is not None
        print(
            f"aicert-agent: measured {len(inputs)} input(s); running {' '.join(run.command)}", file=sys.stderr
        )
        code = subprocess.run(run.command, check=False).returncode
        if code != 0:
            print(f"aicert-agent run: the command exited with {code}; no certificate", file=sys.stderr)
            return EXIT_COMMAND_FAILED
        for reserved in sorted(OUTPUT_EXCLUDED):
            if os.path.lexists(run.outputs / reserved):
                raise RunRefused(f"the command wrote {run.outputs / reserved}, a name aicert reserves")
        output = hash_dir(run.outputs, "the outputs", exclude=OUTPUT_EXCLUDED)
        for name, before in inputs.items():
            after = hash_dir(run.inputs[name], f"input {name}", exclude=INPUT_EXCLUDED)
            if after.root != before.root:
                raise RunRefused(
                    f"input {name} changed during training (root {before.root} became {after.root})"
                )
        recorder.output(run.output_name, output)
        certificate = recorder.seal(assurance=run.assurance, ak=ak)
    if run.tsa_url:
        try:
            add_timestamp(certificate, run.tsa_url)
        except TimestampError as exc:
            raise RunRefused(str(exc)) from None
    with Tpm(run.tpm) as tpm:  # the AK signs the bundle, which carries the timestamp, and model.sig
        bundle = sign_bundle(certificate, tpm)
        model_signature = sign_model(certificate, output, tpm)
    if run.tlog is not None:  # a log that fails costs the certificate nothing but the entry
        try:
            entry = log_entry(
                bundle,
                certificate["evidence"]["ak"]["public"],
                run.tlog.url,
                run.tlog.key,
                read_url=run.tlog.read_url,
            )
            bundle = with_log_entry(bundle, entry)
            print(f"aicert-agent: logged at index {entry['logIndex']} of {run.tlog.url}", file=sys.stderr)
        except TransparencyLogError as exc:
            print(
                f"aicert-agent: the transparency log submission failed; the bundle has no log entry: {exc}",
                file=sys.stderr,
            )
    output.write(run.outputs / MANIFEST_FILE)
    for name, manifest in inputs.items():
        manifest.write(run.certificate.parent / f"input-{name}.manifest.json")
    write_json_atomic(run.certificate, certificate)
    write_json_atomic(run.outputs / CERTIFICATE_FILE, certificate)  # it travels with the weights
    write_atomic(run.certificate.parent / BUNDLE_FILE, bundle_bytes(bundle))  # the same, as a Sigstore bundle
    write_atomic(run.outputs / BUNDLE_FILE, bundle_bytes(bundle))
    write_json_atomic(run.outputs / MODEL_SIGNATURE_FILE, model_signature)  # OpenSSF Model Signing
    print(
        f"aicert-agent: certified {run.output_name} sha256 {output.root} ({output.file_count} files) -> {run.certificate}",
        file=sys.stderr,
    )
    return EXIT_OK

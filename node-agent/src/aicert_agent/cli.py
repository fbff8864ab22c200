"""`aicert-agent`: the node agent's command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aicert.certificate import DEFAULT_MEASUREMENT_PCR
from aicert_agent.local_run import EXIT_REFUSED, EXIT_USAGE, LOG_FILE, LocalRun, execute
from aicert_agent.markers import WAITERS, add_waiter_arguments, wait
from aicert_agent.platform import THIM_URL
from aicert_agent.tpm.tcti import parse_tpm_spec

DEFAULT_TPM = os.environ.get("AICERT_TPM", "device:/dev/tpmrm0")
DEFAULT_STATE = Path(os.environ.get("AICERT_STATE_DIR", "/run/aicert"))


def _named_dir(item: str) -> tuple[str, Path]:
    name, sep, directory = item.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"{item!r} is not NAME=DIR")
    return name, Path(directory)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aicert-agent", description="Measure and certify training runs with a TPM."
    )
    parser.add_argument(
        "--tpm", default=DEFAULT_TPM, help="device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE, help="where the measurement log lives"
    )
    parser.add_argument(
        "--pcr", type=int, default=DEFAULT_MEASUREMENT_PCR, help="measurement PCR (sha256 bank)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="measure inputs, run a command, measure outputs, write a certificate")
    run.add_argument("--inputs", type=_named_dir, nargs="+", default=[], metavar="NAME=DIR")
    run.add_argument("--outputs", type=Path, required=True, metavar="DIR")
    run.add_argument("--output-name", default="model")
    run.add_argument("--name", default="local-run", help="the run's name in the certificate")
    run.add_argument("--certificate", type=Path, default=Path("certificate.json"), metavar="FILE")
    run.add_argument("--image-ref")
    run.add_argument("--image-digest", metavar="sha256:HEX")
    run.add_argument("--assurance", choices=["dev", "vtpm", "cvm"], default="dev")
    run.add_argument(
        "--ak-chain",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="CA certificates to ship after the AK certificate (repeatable)",
    )
    _tsa_url_argument(run)
    _tlog_arguments(run)
    _thim_url_argument(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD …")
    run.set_defaults(func=_run)

    provision = sub.add_parser(
        "dev-provision", help="make a swtpm look like an Azure vTPM (dev CA, AK, NV cert)"
    )
    provision.add_argument("--ca-dir", type=Path, required=True)
    provision.add_argument("--key-type", choices=["ecc", "rsa"], default="ecc")
    provision.add_argument("--force", action="store_true", help="replace an existing AK and certificate")
    provision.set_defaults(func=_provision)

    rebase = sub.add_parser(
        "rebase", help="start a new log epoch and reset the PCR (no run may be in flight)"
    )
    rebase.set_defaults(func=_rebase)

    for action, text in WAITERS.items():
        waiter = sub.add_parser(action, help=text)
        add_waiter_arguments(waiter, action)
        waiter.set_defaults(func=_wait)

    serve = sub.add_parser("serve", help="run as the Kubernetes node agent (DaemonSet)")
    serve.add_argument("--node", default=os.environ.get("NODE_NAME"), help="this node's name (env NODE_NAME)")
    serve.add_argument("--kubelet-root", type=Path, default=Path("/var/lib/kubelet"))
    serve.add_argument(
        "--assurance", choices=["dev", "vtpm", "cvm"], default=os.environ.get("AICERT_ASSURANCE", "vtpm")
    )
    serve.add_argument("--trust", action="append", choices=["azure", "dev"], default=[])
    serve.add_argument("--trust-bundle", type=Path, action="append", default=[], metavar="PEM")
    serve.add_argument(
        "--ak-chain",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="intermediate CA certificates offered for the AK chain, beside the shipped ones (repeatable)",
    )
    serve.add_argument(
        "--no-aia-fetch",
        dest="aia_fetch",
        action="store_false",
        help="do not fetch missing AK intermediates from their caIssuers (AIA) URLs at start",
    )
    serve.add_argument(
        "--paravisor-measurements",
        type=Path,
        metavar="FILE",
        help="level cvm: the known-good launch measurements of Azure's paravisor, one per line "
        "(96 hex digits, then `# source`); default: the `paravisor` store `aicert trust install` "
        "installed. Without one the node is not labelled cvm",
    )
    _tsa_url_argument(serve)
    _thim_url_argument(serve)
    serve.add_argument("--metrics-port", type=int, default=int(os.environ.get("AICERT_METRICS_PORT", "9484")))
    serve.add_argument(
        "--lease-namespace",
        default=os.environ.get("AICERT_LEASE_NAMESPACE", "aicert-system"),
        help="where the agent renews its Lease aicert-agent-<node>",
    )
    serve.add_argument(
        "--lease-seconds",
        type=float,
        default=float(os.environ.get("AICERT_AGENT_LEASE_SECONDS", "30")),
        help="the Lease's duration: a node whose agent (or TPM) is silent this long takes no new runs",
    )
    serve.add_argument(
        "--seal-attempts",
        type=_at_least_one,
        default=os.environ.get("AICERT_SEAL_ATTEMPTS", "8"),
        metavar="N",
        help="a run whose seal failed N times (a TSA or the API server not answering, a write failing) "
        "is refused as SealFailed; tries are spaced 5 s, 10 s, 20 s … up to 5 min apart (env "
        "AICERT_SEAL_ATTEMPTS, default 8)",
    )
    serve.add_argument(
        "--cri-socket",
        type=Path,
        default=os.environ.get("AICERT_CRI_SOCKET") or None,
        metavar="PATH",
        help="the container runtime's CRI socket (containerd: /run/containerd/containerd.sock): at the "
        "seal the agent asks the runtime, read-only, which image the train container ran and refuses "
        "a pod status it contradicts. Default none: kubelet's pod status alone, as the log says at "
        "start (env AICERT_CRI_SOCKET)",
    )
    _tlog_arguments(serve)
    serve.set_defaults(func=_serve)
    return parser


def _tsa_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tsa-url",
        default=os.environ.get("AICERT_TSA_URL") or None,
        metavar="URL",
        help="date each quote's signature with this RFC 3161 time-stamping authority (default: none, "
        "env AICERT_TSA_URL)",
    )


def _tlog_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tlog-url",
        default=os.environ.get("AICERT_TLOG_URL") or None,
        metavar="URL",
        help="submit each certificate's Sigstore bundle to this Rekor v2 transparency log and keep its "
        "inclusion proof in the bundle (default: none, env AICERT_TLOG_URL); needs --tlog-key",
    )
    parser.add_argument(
        "--tlog-key",
        type=Path,
        default=Path(os.environ["AICERT_TLOG_KEY"]) if os.environ.get("AICERT_TLOG_KEY") else None,
        metavar="PEM",
        help="the transparency log's public key (PEM): an answer whose checkpoint it did not sign is not "
        "kept (env AICERT_TLOG_KEY)",
    )
    parser.add_argument(
        "--tlog-read-url",
        default=os.environ.get("AICERT_TLOG_READ_URL") or None,
        metavar="URL",
        help="the log's read API (C2SP tlog-tiles: checkpoint, tiles), where the entry of a seal tried "
        "again, which the log already holds, is recovered from (default: --tlog-url, env "
        "AICERT_TLOG_READ_URL)",
    )


def _thim_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--thim-url",
        default=os.environ.get("AICERT_THIM_URL") or THIM_URL,
        metavar="URL",
        help="level cvm: where this VM's VCEK certificate chain is served (default: Azure IMDS, "
        "env AICERT_THIM_URL)",
    )


def _run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("aicert-agent run: give the training command after --", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.image_ref) != bool(args.image_digest):
        print("aicert-agent run: --image-ref and --image-digest go together", file=sys.stderr)
        return EXIT_USAGE
    from aicert_agent.transparency import TransparencyLogError, transparency_log

    try:
        tlog = transparency_log(args.tlog_url, args.tlog_key, args.tlog_read_url)
    except TransparencyLogError as exc:
        print(f"aicert-agent run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    names = [name for name, _ in args.inputs]
    if len(set(names)) != len(names):
        print("aicert-agent run: two --inputs have the same name", file=sys.stderr)
        return EXIT_USAGE
    return execute(
        LocalRun(
            tpm=args.tpm,
            state_dir=args.state_dir,
            inputs=dict(args.inputs),
            outputs=args.outputs,
            command=argv,
            certificate=args.certificate,
            name=args.name,
            output_name=args.output_name,
            image_ref=args.image_ref,
            image_digest=args.image_digest,
            assurance=args.assurance,
            pcr=args.pcr,
            extra_chain=tuple(args.ak_chain),
            tsa_url=args.tsa_url,
            thim_url=args.thim_url,
            tlog=tlog,
        )
    )


def _provision(args: argparse.Namespace) -> int:
    from aicert_agent.tpm.client import Tpm, TpmError
    from aicert_agent.tpm.devca import DevCA
    from aicert_agent.tpm.provision import dev_provision

    ca = DevCA.load_or_create(args.ca_dir)
    try:
        with Tpm(args.tpm) as tpm:
            result = dev_provision(tpm, ca, key_type=args.key_type, force=args.force)
    except TpmError as exc:
        print(f"aicert-agent dev-provision: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    state = "created" if result.created_ak else "kept"
    print(
        f"AK {state} at {result.ak_handle:#x} ({result.key_type}); certificate from {args.ca_dir / 'dev-ca.pem'}"
    )
    return 0


def _rebase(args: argparse.Namespace) -> int:
    from aicert_agent.measurement_log import LogError, MeasurementLog
    from aicert_agent.tpm.client import Tpm, TpmError

    try:
        with Tpm(args.tpm) as tpm:
            epoch = MeasurementLog(args.state_dir / LOG_FILE, args.pcr).rebase(tpm)
    except (LogError, TpmError) as exc:
        print(f"aicert-agent rebase: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"new epoch {epoch}; PCR {args.pcr} reset")
    return 0


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _wait(args: argparse.Namespace) -> int:
    return wait(args.command, args)


def _serve(args: argparse.Namespace) -> int:
    from aicert_agent.serve import serve

    if not args.node:
        print("aicert-agent serve: --node (or NODE_NAME) is required", file=sys.stderr)
        return EXIT_USAGE
    return serve(args)


USES_TPM = (_run, _provision, _rebase, _serve)  # the waiters run in the training pod, without one


def main(argv: Sequence[str] | None = None) -> int:
    # Our errors say what failed; the TSS library's own log lines stay off unless asked for.
    os.environ.setdefault("TSS2_LOG", "all+none")
    args = build_parser().parse_args(argv)
    if args.func in USES_TPM:
        try:  # a bad --tpm (or AICERT_TPM) is a usage error, said before anything is touched
            parse_tpm_spec(args.tpm)
        except ValueError as exc:
            print(f"aicert-agent: --tpm: {exc}", file=sys.stderr)
            return EXIT_USAGE
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

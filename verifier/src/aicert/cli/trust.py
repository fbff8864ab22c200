"""`aicert trust install NAME --from FILE|URL` and `aicert trust show`."""

from __future__ import annotations

import argparse
import sys

from aicert.trust import AZURE_ROOT_SHA256, TrustError, default_trust_dir, install_named, load_named
from aicert.trust.measurements import (
    PARAVISOR_STORE,
    fetch_paravisor_measurements,
    load_paravisor_measurements,
)
from aicert.trust.pem import colon_hex, fingerprint
from aicert.trust.store import NAMED_STORES, read_source


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trust", help="manage the named trust stores (azure, dev, tsa, paravisor)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install",
        help="install a named trust store",
        description="Install a named trust store from a PEM or DER file or URL (Microsoft publishes the "
        "Azure root as a DER .crt file). `azure` is installed only if the "
        f"file holds the Azure Virtual TPM Root CA 2023 (SHA-256 {colon_hex(AZURE_ROOT_SHA256)}). "
        "`tsa` holds the roots of the time-stamping authorities trusted to date certificates. "
        "`paravisor` is a text file of the known-good launch measurements of Azure's paravisor that "
        "level cvm requires, one per line: 96 hex digits, then `# source`; it replaces the "
        "installed list.",
    )
    install.add_argument("name", choices=(*NAMED_STORES, PARAVISOR_STORE))
    install.add_argument("--from", dest="source", required=True, metavar="FILE|URL")
    install.set_defaults(func=run_install)
    show = actions.add_parser("show", help="list the installed trust stores")
    show.set_defaults(func=run_show)


def run_install(args: argparse.Namespace) -> int:
    try:
        if args.name == PARAVISOR_STORE:
            path = fetch_paravisor_measurements(args.source)
        else:
            path = install_named(args.name, read_source(args.source), args.source)
    except TrustError as exc:
        print(f"aicert trust: {exc}", file=sys.stderr)
        return 2
    print(f"installed trust store {args.name!r} at {path}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    print(f"trust directory: {default_trust_dir()}")
    for name in NAMED_STORES:
        try:
            store = load_named(name)
        except TrustError as exc:
            print(f"  {name}: not usable: {exc}")
            continue
        for anchor in store.anchors:
            role = "dates certificates" if name == "tsa" else f"vouches for {anchor.max_assurance}"
            print(
                f"  {name}: root {anchor.certificate.subject.rfc4514_string()}  "
                f"sha256 {colon_hex(fingerprint(anchor.certificate))}  ({role})"
            )
        for cert in store.intermediates:
            print(f"  {name}: intermediate {cert.subject.rfc4514_string()}")
    try:
        known = load_paravisor_measurements()
    except TrustError as exc:
        print(f"  {PARAVISOR_STORE}: not usable: {exc}")
        return 0
    if not known.entries:
        print(f"  {PARAVISOR_STORE}: not usable: {known.origin}")
    for entry in known.entries:
        print(f"  {PARAVISOR_STORE}: {entry.measurement}  # {entry.source}")
    return 0

"""`aicert aks check` and `aicert aks create-nodepool`: AKS node pools AICert can certify trainings on.

`check` reads a cluster's agent pools and says, per pool, the level it supports and what it lacks;
exit 0 when the named pool (or any pool) is fit for `--level`, 1 when none is, 2 on a usage error,
an ARM error or a missing Azure SDK. `create-nodepool` validates the request (the size and level,
the region's offer), then creates or updates the pool and follows ARM's long-running operation;
exit 0 when the pool ends fit, 1 when it ends unfit, 2 when refused or on an ARM error.

Credentials: azure-identity's DefaultAzureCredential. `create-nodepool --dry-run` is offline: it asks
for no credentials, reads nothing from Azure and loads no Azure SDK; it prints the body that would
create the pool. `--arm-endpoint` (or AICERT_ARM_ENDPOINT) and
`--poll-seconds` are hidden: they point the commands at another ARM (a fake one in tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aicert.aks import AzureSdkMissing
from aicert.aks.pool import OS_SKUS, Assessment, Missing, NodePoolRefused, assess, nodepool_body
from aicert.aks.regions import region_missing
from aicert.aks.sizes import LEVELS, VmSize, find_size
from aicert.cli.arguments import positive_int

if TYPE_CHECKING:
    from aicert.aks.arm import AksClient

EXIT_OK, EXIT_UNFIT, EXIT_ERROR = 0, 1, 2
ENDPOINT_VARIABLE = "AICERT_ARM_ENDPOINT"
SUBSCRIPTION_VARIABLE = "AZURE_SUBSCRIPTION_ID"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "aks",
        help="check or create AKS node pools that can certify trainings",
        description="Check or create Azure Kubernetes Service node pools AICert can certify trainings on: "
        "Trusted Launch (vTPM and Secure Boot) for level vtpm, AMD SEV-SNP confidential VMs for cvm, "
        "with the agent's node label and, on GPU sizes, the GPU taint and the GPU driver left to the "
        "NVIDIA GPU Operator. Signs in with azure-identity's DefaultAzureCredential.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="say which agent pools can run certified trainings, and what the others lack",
        description="Read the cluster's agent pools (or one) and print, per pool, the level it supports "
        "and what it lacks for --level. Exit 0: the pool (or some pool) is fit; 1: none is; "
        "2: usage or ARM error.",
    )
    _cluster_arguments(check)
    check.add_argument("--nodepool", metavar="NAME", help="check this agent pool only (default: all)")
    check.add_argument("--level", choices=LEVELS, default="vtpm", help="the trainings' level (default vtpm)")
    check.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="require a GPU size (default); --no-gpu accepts CPU pools, for CPU trainings",
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=run_check)

    create = actions.add_parser(
        "create-nodepool",
        help="create or update an agent pool certified trainings can run on",
        description="Validate the request (a size for --level, offered in the cluster's region), then "
        "create the agent pool, or update it (label, taint, GPU driver, Trusted Launch flags, count), and "
        "wait for ARM's long-running operation. Exit 0: the pool is fit; 1: it ended unfit; "
        "2: refused, usage or ARM error.",
    )
    _cluster_arguments(create)
    create.add_argument("--nodepool", metavar="NAME", required=True, help="the agent pool's name")
    create.add_argument("--level", choices=LEVELS, default="vtpm", help="the trainings' level (default vtpm)")
    create.add_argument("--vm-size", metavar="SIZE", required=True, help="e.g. Standard_NC24ads_A100_v4")
    create.add_argument("--count", type=positive_int, default=1, metavar="N", help="nodes (default 1)")
    create.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="assert the size has (or has no) GPU (default: from the size)",
    )
    create.add_argument(
        "--os-sku",
        choices=sorted({sku for skus in OS_SKUS.values() for sku in skus}),
        help="a new pool's OS (default Ubuntu)",
    )
    create.add_argument(
        "--skip-region-check",
        action="store_true",
        help="do not ask Azure's resource SKUs whether the region offers the size (they need read "
        "access to the subscription)",
    )
    create.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the body that would create the pool; offline: no credentials, "
        "no cluster or region read, nothing changed",
    )
    create.set_defaults(func=run_create)


def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--subscription", metavar="ID", help=f"the Azure subscription (default: ${SUBSCRIPTION_VARIABLE})"
    )
    p.add_argument(
        "--resource-group", "-g", metavar="NAME", required=True, help="the cluster's resource group"
    )
    p.add_argument("--cluster", metavar="NAME", required=True, help="the AKS cluster's name")
    p.add_argument("--arm-endpoint", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--poll-seconds", type=float, metavar="S", help=argparse.SUPPRESS)


class _Unusable(Exception):
    """Exit 2 with this code and message (a usage error, an ARM error, a missing SDK)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _connect(args: argparse.Namespace) -> AksClient:
    subscription = args.subscription or os.environ.get(SUBSCRIPTION_VARIABLE)
    if not subscription:
        raise _Unusable("usage", f"no subscription: give --subscription or set {SUBSCRIPTION_VARIABLE}")
    try:
        from aicert.aks import arm

        credential = arm.default_credential()
    except AzureSdkMissing as exc:
        raise _Unusable("azure-sdk-missing", str(exc)) from None
    options: dict[str, Any] = {"credential": credential}
    endpoint = args.arm_endpoint or os.environ.get(ENDPOINT_VARIABLE)
    if endpoint:
        options["endpoint"] = endpoint
    if args.poll_seconds is not None:
        options["poll_seconds"] = args.poll_seconds
    return arm.AksClient(subscription, args.resource_group, args.cluster, **options)


def _call_arm(step: Callable[[], Any]) -> Any:
    """Run `step`, turning ARM's failures into `_Unusable` (the SDK is loaded by then)."""
    from aicert.aks.arm import ArmFailure

    try:
        return step()
    except ArmFailure as exc:
        message = " ".join(exc.message.split())
        if exc.operation:
            raise _Unusable(exc.code, f"the ARM operation failed: {exc.code}: {message}") from None
        status = f" (HTTP {exc.status})" if exc.status else ""
        raise _Unusable(exc.code, f"ARM error {exc.code}{status}: {message}") from None


def _report_unusable(command: str, exc: _Unusable, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"fit": False, "error": exc.code, "message": exc.message}))
    print(f"aicert aks {command}: {exc.message}", file=sys.stderr)
    return EXIT_ERROR


def _missing_lines(missing: tuple[Missing, ...] | list[Missing], indent: str = "  ") -> list[str]:
    return [f"{indent}- {m.reason}" for m in missing]


def _pool_lines(assessment: Assessment) -> list[str]:
    head = f"{assessment.pool}  {assessment.vm_size or '(no size)'}  supports {assessment.supports or 'none'}"
    if assessment.fit:
        return [f"{head}  fit for {assessment.level}"]
    return [f"{head}  NOT fit for {assessment.level}:", *_missing_lines(assessment.missing, "    ")]


def run_check(args: argparse.Namespace) -> int:
    try:
        with _connect(args) as client:
            cluster: dict[str, Any] = _call_arm(client.cluster)
            pools: list[dict[str, Any]] = (
                [_call_arm(lambda: client.pool(args.nodepool))] if args.nodepool else _call_arm(client.pools)
            )
    except _Unusable as exc:
        return _report_unusable("check", exc, args.json)
    assessments = [assess(pool, args.level, gpu=args.gpu) for pool in pools]
    fit = [a.pool for a in assessments if a.fit]
    if args.json:
        result = {
            "cluster": args.cluster,
            "resourceGroup": args.resource_group,
            "location": cluster.get("location"),
            "level": args.level,
            "gpu": args.gpu,
            "fit": bool(fit),
            "pools": [a.to_json() for a in assessments],
        }
        print(json.dumps(result, indent=2))
        return EXIT_OK if fit else EXIT_UNFIT
    needs = "a GPU pool" if args.gpu else "a pool"
    print(f"cluster {args.cluster} ({cluster.get('location')}): {needs} for level {args.level} trainings")
    for assessment in assessments:
        print("\n".join(_pool_lines(assessment)))
    if fit:
        print(f"fit for {args.level}: {', '.join(fit)}")
        return EXIT_OK
    print(
        f"agent pool {args.nodepool} is not" if args.nodepool else "no agent pool is", f"fit for {args.level}"
    )
    return EXIT_UNFIT


def _refuse(name: str, level: str, missing: tuple[Missing, ...] | list[Missing]) -> int:
    lines = [
        f"aicert aks create-nodepool: refused: agent pool {name} for level {level}:",
        *_missing_lines(missing),
    ]
    print("\n".join(lines), file=sys.stderr)
    return EXIT_ERROR


def _progress(name: str) -> Callable[[str], None]:
    polls = itertools.count()

    def report(status: str) -> None:
        poll = next(polls)
        where = "accepted" if poll == 0 else f"poll {poll}"
        print(f"aicert aks: agent pool {name}: {status} ({where})", file=sys.stderr, flush=True)

    return report


def _plan(client: AksClient, args: argparse.Namespace, size: VmSize) -> tuple[dict[str, Any], bool, str]:
    """The body to PUT, whether the pool exists, the cluster's region. Raises `NodePoolRefused`
    when the region does not offer the size or the existing pool cannot become fit."""
    cluster: dict[str, Any] = _call_arm(client.cluster)
    location = str(cluster.get("location") or "")
    if not args.skip_region_check:
        not_offered = region_missing(_call_arm(lambda: client.vm_skus(location)), size, location)
        if not_offered:
            raise NodePoolRefused(not_offered)
    existing: dict[str, Any] | None = _call_arm(lambda: client.find_pool(args.nodepool))
    body = nodepool_body(
        args.level, size.name, args.count, gpu=args.gpu, os_sku=args.os_sku, existing=existing
    )
    return body, existing is not None, location


def _dry_run(args: argparse.Namespace, body: dict[str, Any]) -> int:
    """Offline: the body that would create the pool, from the arguments alone. No credentials are
    asked for and ARM is not called, so the region's offer and an existing pool are not looked at."""
    print(
        f"aicert aks: dry run, offline (no Azure credentials used, cluster {args.cluster} not read, "
        f"the region's offer not checked): the body that would create agent pool {args.nodepool}; "
        "an existing pool would keep its other settings",
        file=sys.stderr,
    )
    print(json.dumps(body, indent=2, sort_keys=True))
    return EXIT_OK


def run_create(args: argparse.Namespace) -> int:
    name, level = args.nodepool, args.level
    try:
        # Judged before Azure is asked; a dry run stops here, offline.
        new_pool = nodepool_body(level, args.vm_size, args.count, gpu=args.gpu, os_sku=args.os_sku)
        if args.dry_run:
            return _dry_run(args, new_pool)
        size = find_size(args.vm_size)
        assert size is not None  # nodepool_body refuses sizes outside the catalogue
        with _connect(args) as client:
            body, exists, location = _plan(client, args, size)
            verb = "updating" if exists else "creating"
            print(
                f"aicert aks: {verb} agent pool {name} ({size.name} x{args.count}) in {location}",
                file=sys.stderr,
            )
            pool: dict[str, Any] = _call_arm(
                lambda: client.create_or_update_pool(name, body, _progress(name))
            )
    except NodePoolRefused as refused:
        return _refuse(name, level, refused.missing)
    except _Unusable as exc:
        return _report_unusable("create-nodepool", exc, False)
    state = (pool.get("properties") or {}).get("provisioningState")
    assessment = assess(pool, level, gpu=size.gpus > 0)
    print(f"agent pool {name} {'updated' if exists else 'created'}: provisioningState {state}")
    print("\n".join(_pool_lines(assessment)))
    return EXIT_OK if assessment.fit else EXIT_UNFIT

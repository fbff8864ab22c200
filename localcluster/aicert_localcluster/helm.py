"""The `helm` command (upstream Helm, built once from the Go module proxy and cached under
~/.cache/aicert like the control-plane binaries) and the chart helm/aicert rendered with it.

The version is pinned in localcluster/helm/go.mod; the build passes Helm's release ldflags (its
version, and the Kubernetes version of its client-go as the default for `helm template` and
`helm lint`, which check the chart's kubeVersion against it).

    python -m aicert_localcluster.helm     # build if needed; print the binary's path
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .binaries import BuildError, _required_version, cache_root, cached_go_build

LOCALCLUSTER_DIR = Path(__file__).resolve().parents[1]
HELM_MODULE_DIR = LOCALCLUSTER_DIR / "helm"
REPO = LOCALCLUSTER_DIR.parent
CHART_DIR = REPO / "helm" / "aicert"
HELM_MODULE = "helm.sh/helm/v3"
HELM_PACKAGE = f"{HELM_MODULE}/cmd/helm"

# Values that render no workload (so no image is needed): only identities, RBAC and policies.
POLICY_VALUES: dict[str, object] = {"operator.deploy": False, "agent.deploy": False}
# What the e2e stack and the policy tests render: release "aicert" in aicert-system gives the
# ServiceAccounts aicert-system/aicert-operator and aicert-system/aicert-agent.
RELEASE = "aicert"
SYSTEM_NAMESPACE = "aicert-system"
# The identities, their RBAC, the tenant roles and the admission policies: what a cluster needs
# for an operator and agents that run elsewhere (the e2e stack runs them as host processes).
POLICY_TEMPLATES = (
    "templates/serviceaccounts.yaml",
    "templates/rbac.yaml",
    "templates/tenant-rbac.yaml",
    "templates/agent-node-policy.yaml",
    "templates/training-admission.yaml",
)


class HelmError(RuntimeError):
    """A helm command failed; the message carries its stderr."""


def helm_version() -> str:
    """The pinned Helm version, e.g. "v3.22.0" (from localcluster/helm/go.mod)."""
    return _required_version(HELM_MODULE_DIR / "go.mod", HELM_MODULE)


def _ldflags() -> tuple[str, ...]:
    client_go = _required_version(HELM_MODULE_DIR / "go.mod", "k8s.io/client-go")
    match = re.fullmatch(r"v0\.(\d+)\.\d+", client_go)
    if match is None:
        raise BuildError(f"unexpected k8s.io/client-go version {client_go!r} in {HELM_MODULE_DIR / 'go.mod'}")
    # As Helm's Makefile: client-go v0.N.x is Kubernetes 1.N.
    flags = [f"-X {HELM_MODULE}/internal/version.version={helm_version()}"]
    for package in ("pkg/chartutil", "pkg/lint/rules"):
        flags += [f"-X {HELM_MODULE}/{package}.k8sVersionMajor=1"]
        flags += [f"-X {HELM_MODULE}/{package}.k8sVersionMinor={match.group(1)}"]
    return tuple(flags)


def helm_binary() -> Path:
    """The pinned `helm`, built on first use (a few minutes from a cold Go cache)."""
    return cached_go_build(HELM_MODULE_DIR, "helm", package=HELM_PACKAGE, ldflags=_ldflags())


def helm_env(home: Path | None = None) -> dict[str, str]:
    """The environment for helm: its cache, config and data under `home` (default
    ~/.cache/aicert/helm-home), never the user's own; no KUBECONFIG from the caller."""
    base = home if home is not None else cache_root() / "helm-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    env.update(
        HELM_CACHE_HOME=str(base / "cache"),
        HELM_CONFIG_HOME=str(base / "config"),
        HELM_DATA_HOME=str(base / "data"),
    )
    return env


def run_helm(
    *args: str,
    kubeconfig: Path | None = None,
    home: Path | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; raises HelmError when check and it fails."""
    cmd = [str(helm_binary()), *args]
    if kubeconfig is not None:
        cmd.append(f"--kubeconfig={kubeconfig}")
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=helm_env(home),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def set_args(values: Mapping[str, object]) -> list[str]:
    """`--set-json key=<json>` for each value (exact types; no --set string parsing)."""
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def template(
    values: Mapping[str, object] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = SYSTEM_NAMESPACE,
    chart: Path = CHART_DIR,
    show_only: Sequence[str] = (),
    api_versions: Sequence[str] = (),
    home: Path | None = None,
) -> str:
    """`helm template` of the chart: the rendered manifests (YAML documents; CRDs not included)."""
    args = ["template", release, str(chart), "--namespace", namespace, *set_args(values or {})]
    for name in show_only:
        args += ["--show-only", name]
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    return run_helm(*args, home=home).stdout


def policy_manifest(*, home: Path | None = None) -> str:
    """The ServiceAccounts, RBAC, tenant roles and admission policies of release "aicert" in
    aicert-system, as YAML documents for `kubectl apply`."""
    return template(POLICY_VALUES, show_only=POLICY_TEMPLATES, home=home)


def training_admission_manifest(*, home: Path | None = None) -> str:
    """The chart's training admission policies and bindings alone (release "aicert")."""
    return template(POLICY_VALUES, show_only=["templates/training-admission.yaml"], home=home)


def main() -> int:
    print(f"[build] helm {helm_version()} (built once from localcluster/helm, then cached)", file=sys.stderr)
    try:
        print(helm_binary())
    except BuildError as exc:
        print(f"[build] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Layering: `aicert` imports no Kubernetes/TPM library and no other package of ours; `aicert_kube`
(the shared Kubernetes edge) imports neither product package; the agent and the operator never
import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "aicert": REPO / "verifier/src/aicert",
    "aicert_kube": REPO / "kube/src/aicert_kube",
    "aicert_agent": REPO / "node-agent/src/aicert_agent",
    "aicert_operator": REPO / "operator/src/aicert_operator",
}
FORBIDDEN = {
    "aicert": {
        "kopf",
        "kubernetes",
        "tpm2_pytss",
        "aicert_kube",
        "aicert_agent",
        "aicert_operator",
        "prometheus_client",
    },
    "aicert_kube": {"kopf", "tpm2_pytss", "aicert_agent", "aicert_operator"},
    "aicert_agent": {"aicert_operator", "kopf"},
    "aicert_operator": {"aicert_agent", "tpm2_pytss"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package: str) -> None:
    root = PACKAGES[package]
    if not root.exists():
        pytest.skip(f"{package} is not built yet")
    violations = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted(root.rglob("*.py"))
        for name in sorted(imported_roots(path) & FORBIDDEN[package])
    ]
    assert violations == []


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import kubernetes.client\nfrom tpm2_pytss import ESAPI\n")
    assert {"kubernetes", "tpm2_pytss"} <= imported_roots(bad)


def test_operator_and_agent_are_not_packages_at_folder_level() -> None:
    # `operator/` must never shadow the stdlib `operator` module.
    assert not (REPO / "operator" / "__init__.py").exists()
    assert not (REPO / "node-agent" / "__init__.py").exists()

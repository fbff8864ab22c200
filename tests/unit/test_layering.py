"""Layering: `aicert` imports no Kubernetes/TPM library and no other package of ours (not even the
contract, so the verifier's install carries no pydantic); `aicert_contract` (the pod, status and spec
contract) imports only `aicert` and pure libraries; `aicert_kube`
(the shared Kubernetes edge) imports neither product package; the agent and the operator never
import each other; nothing outside `aicert.cli` imports `aicert.cli` (CLIs use the library, the
library never uses a CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "aicert": REPO / "verifier/src/aicert",
    "aicert_contract": REPO / "contract/src/aicert_contract",
    "aicert_kube": REPO / "kube/src/aicert_kube",
    "aicert_agent": REPO / "node-agent/src/aicert_agent",
    "aicert_operator": REPO / "operator/src/aicert_operator",
}
FORBIDDEN = {
    "aicert": {
        "kopf",
        "kubernetes",
        "tpm2_pytss",
        "pydantic",
        "aicert_contract",
        "aicert_kube",
        "aicert_agent",
        "aicert_operator",
        "prometheus_client",
    },
    "aicert_contract": {
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


CLI_PACKAGE = "aicert.cli"


def module_name(path: Path) -> tuple[str, ...]:
    """The dotted name of a module file under one of PACKAGES, as parts."""
    for package, root in PACKAGES.items():
        if path.is_relative_to(root):
            parts = (package, *path.relative_to(root).with_suffix("").parts)
            return parts[:-1] if parts[-1] == "__init__" else parts
    raise ValueError(f"{path} is in none of {sorted(PACKAGES)}")


def imported_modules(path: Path, name: tuple[str, ...]) -> set[str]:
    """Every module `path` (the module `name`) imports, relative imports resolved; `from a import b`
    counts as importing both `a` and `a.b` (b may be a module)."""
    package = name if path.name == "__init__.py" else name[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def imports_cli(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m == CLI_PACKAGE or m.startswith(CLI_PACKAGE + "."))


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_only_cli_modules_import_the_cli(package: str) -> None:
    root = PACKAGES[package]
    if not root.exists():
        pytest.skip(f"{package} is not built yet")
    violations = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path)
        if ".".join(name).startswith(CLI_PACKAGE):
            continue
        violations += [
            f"{path.relative_to(REPO)} imports {m}" for m in imports_cli(imported_modules(path, name))
        ]
    assert violations == []


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("from aicert.cli.verify import trust_store\n", ("aicert_agent", "serve")),
        ("import aicert.cli\n", ("aicert_operator", "main")),
        ("from aicert import cli\n", ("aicert", "verify", "verifier")),
        ("from ..cli import verify\n", ("aicert", "verify", "verifier")),
        ("from . import cli\n", ("aicert", "digest")),
    ],
)
def test_cli_checker_sees_a_violation(tmp_path: Path, source: str, where: tuple[str, ...]) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(source)
    assert imports_cli(imported_modules(bad, where)) != []


def test_cli_checker_accepts_library_imports(tmp_path: Path) -> None:
    fine = tmp_path / "fine.py"
    fine.write_text("from aicert.trust import load_trust_store\nfrom aicert.client import x\nimport aicert\n")
    assert imports_cli(imported_modules(fine, ("aicert_agent", "serve"))) == []


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

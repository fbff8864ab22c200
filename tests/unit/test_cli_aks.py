"""`aicert aks`: what it loads, and what it says without the Azure SDK or with bad arguments.

The requests it makes are pinned in tests/integration/test_aks_fake_arm.py."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import aicert.aks
from aicert.aks.pool import nodepool_body
from aicert.cli import main

CLUSTER = ["--subscription", "6f1c2f4e-0d4b-4c51-9a55-3b1c0c8f0a11", "-g", "rg", "--cluster", "aks1"]

# Runs `aicert ARGV` in a fresh interpreter; prints the exit code and every module it loaded.
PROBE = """
import contextlib, io, json, sys
from aicert.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "modules": sorted(sys.modules)}))
"""


def probe_all(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True, timeout=60, env=env
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def probe(*argv: str) -> tuple[int, str, set[str]]:
    result = probe_all(*argv)
    return result["code"], result["err"], {name.split(".")[0] for name in result["modules"]}


REFUSED_LOCALLY = [
    "create-nodepool",
    *CLUSTER,
    "--nodepool",
    "p",
    "--level",
    "cvm",
    "--vm-size",
    "Standard_D4s_v5",
]


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [
        (["aks", "--help"], 0),
        (["aks", "check", "--help"], 0),
        (["aks", *REFUSED_LOCALLY], 2),  # refused before Azure is asked: the SDK is not even loaded
    ],
)
def test_help_and_local_refusals_load_no_azure_sdk(argv: list[str], exit_code: int) -> None:
    code, err, roots = probe(*argv)
    assert code == exit_code
    if exit_code:
        assert err.startswith("aicert aks create-nodepool: refused: agent pool p for level cvm:")
    assert {"azure", "msal", "requests"} & roots == set()


def test_other_commands_do_not_load_the_aks_modules() -> None:
    code = (
        "import json, sys\nimport aicert.cli.verify, aicert.cli.hash\nprint(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    modules = json.loads(done.stdout)
    assert not [m for m in modules if m.startswith(("aicert.aks", "aicert.cli.aks", "azure"))]


def test_without_the_azure_sdk_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "azure.mgmt.containerservice", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "aicert.aks.arm", raising=False)
    monkeypatch.delattr(aicert.aks, "arm", raising=False)  # else `from aicert.aks import arm` finds it
    assert main(["aks", "check", *CLUSTER]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "aicert aks check: the Azure SDK is not installed (azure.mgmt.containerservice): "
        "pip install 'aicert-k8s[azure]'\n"
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["--level", "cvm", "--vm-size", "Standard_NC24ads_A100_v4"],
            "is a Trusted Launch size, for --level vtpm",
        ),
        (["--vm-size", "Standard_D8s_v5", "--gpu"], "no GPU: Standard_D8s_v5 has none"),
        (["--vm-size", "Standard_NC6"], "Standard_NC6 is not in AICert's catalogue of Trusted Launch sizes"),
    ],
)
def test_a_request_refused_locally_exits_2_naming_what_is_wrong(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An endpoint nothing listens on: were Azure asked, the run would fail with another message.
    unreachable = ["--arm-endpoint", "https://127.0.0.1:9"]
    assert main(["aks", "create-nodepool", *CLUSTER, *unreachable, "--nodepool", "p1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aicert aks create-nodepool: refused: agent pool p1 for level")
    assert says in err and len(err.splitlines()) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["check", *CLUSTER, "--level", "dev"],
        ["create-nodepool", *CLUSTER, "--nodepool", "p", "--vm-size", "Standard_D4s_v5", "--count", "0"],
        ["create-nodepool", *CLUSTER, "--vm-size", "Standard_D4s_v5"],  # no --nodepool
        ["check", "--cluster", "aks1"],  # no resource group
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["aks", *argv])
    assert exit_info.value.code == 2
    assert "usage: aicert aks" in capsys.readouterr().err


def test_the_token_scope_follows_the_arm_endpoint() -> None:
    from aicert.aks.arm import DEFAULT_ARM_ENDPOINT, token_scope

    assert token_scope(DEFAULT_ARM_ENDPOINT) == "https://management.azure.com/.default"
    assert (
        token_scope("https://management.usgovcloudapi.net/")
        == "https://management.usgovcloudapi.net/.default"
    )


def test_a_dry_run_is_offline_needs_no_credentials_and_says_so() -> None:
    # No subscription, no credentials, and an ARM endpoint nothing listens on: a run that asked
    # Azure anything would fail, and the probe would see the SDK loaded.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AICERT_ARM", "MSI_", "IDENTITY_"))
    }
    env.update(AICERT_ARM_ENDPOINT="https://127.0.0.1:9", HOME=os.devnull)
    argv = ["aks", "create-nodepool", "-g", "rg", "--cluster", "aks1", "--nodepool", "a100"]
    result = probe_all(*argv, "--vm-size", "Standard_NC24ads_A100_v4", "--count", "2", "--dry-run", env=env)
    assert result["code"] == 0, result["err"]
    assert result["err"] == (
        "aicert aks: dry run, offline (no Azure credentials used, cluster aks1 not read, the region's "
        "offer not checked): the body that would create agent pool a100; an existing pool would keep "
        "its other settings\n"
    )
    assert json.loads(result["out"]) == nodepool_body("vtpm", "Standard_NC24ads_A100_v4", 2)
    assert {"azure", "msal", "requests"} & {name.split(".")[0] for name in result["modules"]} == set()


def test_a_dry_run_still_refuses_a_request_that_cannot_be_certified(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["create-nodepool", *CLUSTER, "--nodepool", "p", "--level", "cvm", "--vm-size", "Standard_D4s_v5"]
    assert main(["aks", *argv, "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("aicert aks create-nodepool: refused: agent pool p for level cvm:")


def _azure_names_imported_by_the_aks_modules() -> dict[str, set[str]]:
    """{module: names} of every `from azure... import names` in verifier/src/aicert/aks."""
    imported: dict[str, set[str]] = {}
    for source in Path(aicert.aks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("azure."):
                imported.setdefault(str(node.module), set()).update(alias.name for alias in node.names)
    return imported


def test_the_installed_sdk_has_every_name_the_aks_modules_import() -> None:
    import importlib

    imported = _azure_names_imported_by_the_aks_modules()
    # The models the code builds: a new one would need the same check as AgentPool below.
    assert imported["azure.mgmt.containerservice.models"] == {"AgentPool"}
    for module, names in imported.items():
        loaded = importlib.import_module(module)
        assert [name for name in sorted(names) if not hasattr(loaded, name)] == [], module


def test_agent_pool_is_built_from_arms_json_as_the_41_models_allow() -> None:
    # azure-mgmt-containerservice 34-40 (msrest models) take keyword arguments only: AgentPool(body)
    # raises TypeError there, which is why pyproject asks for >=41.
    from azure.mgmt.containerservice.models import AgentPool

    body = nodepool_body("vtpm", "Standard_NC24ads_A100_v4", 3, os_sku="AzureLinux")
    pool = AgentPool(body)
    assert pool.as_dict() == body
    assert pool.properties is not None
    assert (pool.properties.vm_size, pool.properties.count, pool.properties.os_sku) == (
        "Standard_NC24ads_A100_v4",
        3,
        "AzureLinux",
    )
    assert (
        pool.properties.security_profile is not None and pool.properties.security_profile.enable_vtpm is True
    )


def test_pyproject_asks_for_the_41_models() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    azure = pyproject["project"]["optional-dependencies"]["azure"]
    assert "azure-mgmt-containerservice>=41" in azure

"""`aicert aks`: what it loads, and what it says without the Azure SDK or with bad arguments.

The requests it makes are pinned in tests/integration/test_aks_fake_arm.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import aicert.aks
from aicert.cli import main

CLUSTER = ["--subscription", "6f1c2f4e-0d4b-4c51-9a55-3b1c0c8f0a11", "-g", "rg", "--cluster", "aks1"]

# Runs `aicert ARGV` in a fresh interpreter; prints the exit code and every module it loaded.
PROBE = """
import contextlib, io, json, sys
from aicert.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "err": err.getvalue(), "modules": sorted(sys.modules)}))
"""


def probe(*argv: str) -> tuple[int, str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout.splitlines()[-1])
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

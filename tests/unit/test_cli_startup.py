"""`aicert` starts fast: each command loads only what it uses.

Each probe runs the real command in a fresh interpreter and reports the modules it loaded, so an
import added anywhere on a command's path (at the top of a library module, say) shows up here.
No timings: docs/performance.md has those (benchmarks/bench_certify.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.soft_tpm import Run, certified_run

from aicert.cli import COMMANDS, build_parser

AZURE = Path(__file__).resolve().parents[1] / "assets" / "azure"
PROOF = AZURE / "aicert-proof-sample.json"
ROOT = AZURE / "azure-virtual-tpm-root-ca-2023.crt"

# Never on a command line's path: agent/operator libraries, and the progress bar.
NEVER = {"kubernetes", "tpm2_pytss", "kopf", "prometheus_client", "rich"}
# `aicert hash` hashes files: no certificate models, no X.509, no other command's module.
NOT_FOR_HASH = NEVER | {
    "pydantic",
    "msgspec",
    "cryptography",
    "aicert.certificate",
    "aicert.cli.verify",
    "aicert.cli.trust",
}
# `aicert verify` needs msgspec and cryptography, but neither pydantic (a tenth of a second to set up
# models; the training spec's models use it), the other commands nor http(s).
NOT_FOR_VERIFY = NEVER | {"pydantic", "aicert.cli.hash", "aicert.cli.trust", "urllib.request", "http.client"}
# Nor what costs every start-up milliseconds for nothing it needs: dataclasses (and the inspect module
# it imports; the verifier's records are msgspec structs), cryptography's serialization module (its
# SSH support loads ciphers and bcrypt), shutil (argparse's terminal width), and the RFC 3161 code for
# a certificate that carries no timestamp. Nor, for a certificate, the code of old AICert proofs.
AVOIDABLE = {
    "dataclasses",
    "inspect",
    "cryptography.hazmat.primitives.serialization",
    "shutil",
    "aicert.verify.timestamp",
}
AVOIDABLE_FOR_CERTIFICATE = AVOIDABLE | {"aicert.legacy"}
# What `aicert verify` cannot do without: the certificate models and X.509. What they load is theirs,
# not ours to avoid (where typing_extensions is installed, as in the dev environment, msgspec imports
# it, and it imports inspect), so the fixture `floor` takes it out of AVOIDABLE.
FLOOR = "import json, sys\nimport aicert.certificate, cryptography.x509\nprint(json.dumps({'modules': sorted(sys.modules)}))"

PROBE = """
import contextlib, io, json, sys
from aicert.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules), "out": out.getvalue()}))
"""


def run_probe(code: str, *argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def loaded_roots(modules: object) -> set[str]:
    """Every loaded module and each of its parent packages: `rich.console` counts as `rich`."""
    assert isinstance(modules, list)
    names: set[str] = set()
    for module in modules:
        parts = str(module).split(".")
        names |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return names


@pytest.mark.parametrize("argv", [["hash", "{empty}"], ["hash", "--help"], ["hash", "{empty}", "--json"]])
def test_hash_loads_no_certificate_models_crypto_or_other_command(argv: list[str], tmp_path: Path) -> None:
    result = run_probe(PROBE, *(a.format(empty=tmp_path) for a in argv))
    assert result["code"] == 0
    assert loaded_roots(result["modules"]) & NOT_FOR_HASH == set()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


@pytest.fixture(scope="module")
def floor() -> set[str]:
    return loaded_roots(run_probe(FLOOR)["modules"])


def test_verify_loads_only_what_verifying_needs(floor: set[str]) -> None:
    result = run_probe(
        PROBE, "verify", str(PROOF), "--trust-bundle", str(ROOT), "--at", "2024-06-01T00:00:00Z"
    )
    assert result["code"] == 0, result["out"]
    assert str(result["out"]).startswith("VERIFIED")
    loaded = loaded_roots(result["modules"])
    assert loaded & (NOT_FOR_VERIFY | (AVOIDABLE - floor)) == set()
    # the probe sees real imports, the old proof's own among them
    assert {"msgspec", "cryptography", "aicert.cli.verify", "aicert.legacy"} <= loaded


def test_verifying_a_certificate_loads_no_old_proof_code(run: Run, tmp_path: Path, floor: set[str]) -> None:
    result = run_probe(PROBE, *run.verify_argv(run.write(tmp_path / "c.json", run.certificate)))
    assert result["code"] == 0, result["out"]
    assert str(result["out"]).startswith("VERIFIED  assurance: dev")
    loaded = loaded_roots(result["modules"])
    assert loaded & (NOT_FOR_VERIFY | (AVOIDABLE_FOR_CERTIFICATE - floor)) == set()
    assert {"msgspec", "cryptography", "aicert.cli.verify", "aicert.events"} <= loaded


def test_the_verify_command_module_alone_loads_no_other_command(floor: set[str]) -> None:
    code = "import json, sys\nimport aicert.cli.verify\nprint(json.dumps({'modules': sorted(sys.modules)}))"
    loaded = loaded_roots(run_probe(code)["modules"])
    assert loaded & (NOT_FOR_VERIFY | (AVOIDABLE_FOR_CERTIFICATE - floor)) == set()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_top_level_help_is_the_same_whichever_command_is_loaded(command: str) -> None:
    # `aicert --help` lists the commands from COMMANDS alone; it must say what the modules say.
    assert build_parser([command]).format_help() == build_parser([]).format_help()


def test_a_misspelt_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser(["verfy"]).parse_args(["verfy", "x.json"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'verfy'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["hash", "dir"], "hash"),
        (["--version"], None),
        (["-h", "verify"], "verify"),
        (["model-dir"], None),
        ([], None),
    ],
)
def test_the_chosen_command_is_the_first_non_option(argv: list[str], command: str | None) -> None:
    from aicert.cli import chosen_command

    assert chosen_command(argv) == command


def test_kubectl_aicert_loads_no_hashing_code_until_it_has_files_to_hash() -> None:
    """`kubectl aicert verify NAME` without --model or --data hashes nothing: the hashing code
    (aicert.digest, the local-files checks) is not loaded when the plugin starts."""
    code = "import json, sys\nimport aicert.cli.kubectl_plugin\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert not {"aicert.digest", "aicert.digest.hashing", "aicert.verify.local_files"} & loaded

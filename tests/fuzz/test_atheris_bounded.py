"""The coverage-guided fuzzer (tests/fuzz/fuzz_verify.py), run for a bounded time.

The target runs in a subprocess under libFuzzer for AICERT_FUZZ_SECONDS (60 in CI: a budget, not
an assertion), from a seed corpus of genuine certificates and old proofs written here. It fails
when libFuzzer reports a crash (an exception other than the verifier's two, a mutated document
that verified, an input slower than -timeout, memory beyond -rss_limit_mb), and prints the input
and the command that replays it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.genuine import Seed

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("AICERT_FUZZ_SECONDS", "60"))


def test_the_coverage_guided_fuzzer_finds_no_crash(seeds: list[Seed], tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64 only")
    state, artifacts = tmp_path / "state", tmp_path / "artifacts"
    (state / "seeds").mkdir(parents=True)
    artifacts.mkdir()
    for seed in seeds:
        (state / "seeds" / seed.name).write_bytes(seed.data)
    env = {**os.environ, "AICERT_FUZZ_STATE": str(state)}
    command = [sys.executable, "-m", "tests.fuzz.fuzz_verify"]
    flags = [
        f"-max_total_time={SECONDS}",
        "-rss_limit_mb=2048",
        "-timeout=30",
        "-max_len=65536",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    try:
        done = subprocess.run(
            [*command, *flags, str(state / "corpus")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=SECONDS + 600,  # a hang guard only: libFuzzer stops itself after -max_total_time
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the fuzzer did not stop after {SECONDS} s: {str(exc.stderr)[-3000:]}")
    output = "\n".join(
        line
        for line in (done.stdout + done.stderr).splitlines()
        if not line.startswith("INFO: Instrumenting")
    )
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    if done.returncode == 0 and runs and int(runs.group(1)) > 0:
        return
    crash = re.search(r"Test unit written to (\S+)", output)
    reproducer = ""
    if crash:
        path = Path(crash.group(1))
        reproducer = (
            f"\ninput ({path.stat().st_size} bytes): {path.read_bytes()[:3000]!r}\n"
            f"replay: AICERT_FUZZ_STATE={state} {' '.join(command)} {path}"
        )
    pytest.fail(f"the fuzzer exited {done.returncode}:\n{output[-6000:]}{reproducer}")

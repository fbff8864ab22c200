#!/usr/bin/env python3
"""Certificate size with other runs on the node, before and after checkpoints; a checkpoint's TPM time.

    python benchmarks/bench_log_checkpoints.py [--samples N] [--foreign 0,1,10,1000,2500] [--out docs/performance.md]

On one swtpm, with the agent's own log and recorder: a run (run, image, input, output, seal) is
certified while N other runs (run, input, output, seal each) go through the same node, their
entries written between the run's own. *After* is the certificate the agent writes (checkpointed:
the run's entries alone). *Before* is the certificate the agent before checkpoints wrote for the
same run: the whole epoch up to the seal, the other runs' entries redacted, under the same final
quote (the seal's checkpoint is exactly that quote). Both are verified; sizes are of the JSON the
agent puts in the status (compact). Then, medians of N samples: the checkpoint quote (PCR 23
alone), the seal's quote (PCRs 0-7 and 23) as the agent takes them (`Tpm.quote`, which reads the
PCRs around the quote), a PCR extend, a whole append (fsync, extend, checkpoint, fsync), and the
agent's check of the log it hands out (part of every seal now).
Writes the "## Certificate size and other runs" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from aicert.certificate import BOOT_PCRS
from aicert.digest import FileEntry, Manifest
from aicert.trust import TrustStore
from aicert.verify import Verifier
from aicert_agent.evidence_log import epoch_log, log_problem
from aicert_agent.local_run import ak_identity
from aicert_agent.measurement_log import MeasurementLog
from aicert_agent.recorder import RunRecorder, new_salt
from aicert_agent.tpm.client import Tpm
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.provision import dev_provision
from aicert_agent.tpm.swtpm import Swtpm
from aicert_contract.training import CERTIFICATE_MAX_BYTES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_table, table, write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "Certificate size and other runs"
PCR = 23


def manifest(tag: str) -> Manifest:
    return Manifest.from_files(
        [FileEntry(f"{tag}/weights.bin", 1 << 20, hashlib.sha256(tag.encode()).hexdigest())]
    )


def compact(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":")).encode())


def median_ms(fn: Callable[[], object], samples: int) -> float:
    fn()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def alternating_ms(fns: Mapping[str, Callable[[], object]], samples: int) -> dict[str, float]:
    """Median ms of each, the functions taking turns round after round, so that a burst of load on a
    shared machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_number in range(samples + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_number:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def certify_among(
    log: MeasurementLog, tpm: Tpm, ak: Any, foreign: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(after, before): the run's certificate with `foreign` other runs around it, and the same run's
    certificate as the agent before checkpoints made it."""
    log.rebase(tpm)
    run = RunRecorder(log, tpm, run_id=new_salt(), salt=new_salt())
    others = [RunRecorder(log, tpm, run_id=new_salt(), salt=new_salt()) for _ in range(foreign)]
    run.begin(node="bench", name="bench", attempt=0, spec={"command": ["train"]})
    for n, other in enumerate(others):
        other.begin(node="bench", name=f"other-{n}", attempt=0, spec={"command": ["train"]})
    run.image("registry.example/train@sha256:" + "cd" * 32, "sha256:" + "cd" * 32)
    run.input("data", manifest("data"))
    for n, other in enumerate(others):
        other.input("data", manifest(f"data-{n}"))
    run.output("model", manifest("model"))
    for n, other in enumerate(others):
        other.output("model", manifest(f"model-{n}"))
        other.seal(assurance="dev", ak=ak)
    after = run.seal(assurance="dev", ak=ak)
    entries = log.entries()
    seal = max(e.seq for e in entries if e.run == run.run_id)
    before = json.loads(json.dumps(after))
    del before["evidence"]["eventLogFormat"]
    before["evidence"]["eventLog"] = epoch_log(entries[: seal + 1], run.run_id)
    return after, before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument(
        "--foreign", default="0,1,10,1000,2500", help="numbers of other runs, comma-separated"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    args = parser.parse_args()
    counts = [int(n) for n in args.foreign.split(",")]
    work = Path(tempfile.mkdtemp(prefix="aicert-bench-"))
    ca = DevCA.load_or_create(work / "ca")
    verifier = Verifier(TrustStore.from_pem_file(work / "ca" / "dev-ca.pem"))
    rows: list[dict[str, float]] = []
    with Swtpm(work / "tpm") as server, Tpm(server.spec) as tpm:
        dev_provision(tpm, ca)
        ak = ak_identity(tpm, ())
        log = MeasurementLog(work / "m.log", PCR)
        log.recover(tpm)
        for foreign in counts:
            after, before = certify_among(log, tpm, ak, foreign)
            row = {
                "foreign": foreign,
                "entries": len(before["evidence"]["eventLog"]) - len(after["evidence"]["eventLog"]),
                "before": compact(before),
                "after": compact(after),
                "verify before": median_ms(partial(verifier.verify, json.dumps(before)), 5),
                "verify after": median_ms(partial(verifier.verify, json.dumps(after)), 5),
            }
            rows.append(row)
            print(row, file=sys.stderr)
        certificate = certify_among(log, tpm, ak, 0)[0]
        log.rebase(tpm)
        bench = RunRecorder(log, tpm, run_id=new_salt(), salt=new_salt())
        bench.begin(node="bench", name="bench", attempt=0, spec={})
        digest = hashlib.sha256(b"bench").digest()
        timed = alternating_ms(
            {
                "checkpoint": lambda: tpm.quote([PCR], digest),
                "seal quote": lambda: tpm.quote([*BOOT_PCRS, PCR], digest),
                "append": lambda: bench.input(new_salt(), manifest("x")),
                "self check": lambda: log_problem(certificate),
            },
            args.samples,
        )
        checkpoint_ms, seal_quote_ms = timed["checkpoint"], timed["seal quote"]
        append_ms, self_check_ms = timed["append"], timed["self check"]
        # an extend moves PCR 23 away from the log: timed last, then the log is re-based
        extend_ms = median_ms(lambda: tpm.pcr_extend(PCR, digest), args.samples)
        log.rebase(tpm)

    ratio = checkpoint_ms / seal_quote_ms
    most = max(rows, key=lambda r: r["entries"])
    per_entry = (most["before"] - rows[0]["before"]) / max(1, most["entries"] - rows[0]["entries"])
    extra = rows[0]["after"] - rows[0]["before"]
    crossover = extra / per_entry
    size_rows = [
        [
            f"{r['foreign']:,.0f}",
            f"{r['entries']:,.0f}",
            f"{r['before']:,.0f}",
            "yes" if r["before"] <= CERTIFICATE_MAX_BYTES else "**no**",
            f"{r['after']:,.0f}",
            f"{r['verify before']:.1f}",
            f"{r['verify after']:.1f}",
        ]
        for r in rows
    ]
    section = f"""## {SECTION}

`python benchmarks/bench_log_checkpoints.py` on swtpm, with the agent's log and recorder. A run
(run, image, input, output, seal) is certified while N other runs (run, input, output, seal each)
measure on the same node, their entries between the run's own. *Before*: the certificate the agent
wrote before checkpoints, every entry of the epoch up to the seal, the others' redacted; *after*:
the checkpointed certificate, the run's own entries with their quotes. Sizes are of the compact
JSON the agent writes to the status (at most {CERTIFICATE_MAX_BYTES:,} bytes); both verify.
`Verifier.verify`, library call, median of 5.

{
        table(
            [
                "other runs",
                "their entries",
                "before (bytes)",
                "fits the status",
                "after (bytes)",
                "verify before (ms)",
                "verify after (ms)",
            ],
            size_rows,
        )
    }

*Before* grew by about {per_entry:.0f} bytes for every entry any other run made while the epoch was
open (and a run held open kept it open), until the certificate no longer fitted in the status and
the run failed for good. *After* does not depend on other runs. It is {extra:,.0f} bytes larger than a
lone run's whole epoch (its four checkpoint quotes and the entries' `pcrBefore`), which *before*
passed at about {crossover:.0f} entries of other runs.

TPM time, medians of {args.samples} on swtpm (`Tpm.quote` reads the quoted PCRs before and after, as the
agent takes every quote):

{
        table(
            ["what", "ms"],
            [
                ["checkpoint: quote of PCR 23 alone (one per entry, but the seal)", f"{checkpoint_ms:.2f}"],
                ["the seal's quote: PCRs 0-7 and 23 (as before)", f"{seal_quote_ms:.2f}"],
                ["**checkpoint / seal quote**", f"**{ratio:.2f}**"],
                ["PCR extend", f"{extend_ms:.2f}"],
                ["a whole append: fsync, extend, checkpoint, fsync", f"{append_ms:.2f}"],
                ["the agent's check of the log it hands out (each seal)", f"{self_check_ms:.2f}"],
            ],
        )
    }

A run of N entries costs N - 1 checkpoint quotes more than before (the seal's quote is the one it
always took): four for a run with an image and one input. A checkpoint is a quote like the seal's,
one signature by the AK over fewer PCRs, so on any TPM it should cost about what the seal's quote
costs; on swtpm the ratio is the one above.

{machine_table({"swtpm": "libtpms, on loopback TCP"})}
"""
    write_section(args.out, SECTION, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

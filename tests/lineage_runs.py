"""Chains of certified runs on a `SoftNode`: each run's output directory holds its weights and,
beside them, `manifest.json` and `aicert-certificate.json` as the agent writes them, and a later
run reads such a directory as an input (its parent decided by the agent's own `input_parent`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aicert.certificate import ParentRecord
from aicert.digest import CERTIFICATE_FILE, MANIFEST_FILE, OUTPUT_EXCLUDED, hash_tree
from aicert_agent.parents import input_parent
from tests.soft_node import SoftNode

Json = dict[str, Any]


def certificate_bytes(certificate: Json) -> bytes:
    """The file the agent writes beside the weights (and `kubectl aicert get` writes)."""
    return json.dumps(certificate, separators=(",", ":")).encode() + b"\n"


def certify(
    node: SoftNode,
    run: str,
    output: Path,
    inputs: dict[str, Path],
    *,
    parents: dict[str, ParentRecord] | None = None,
) -> bytes:
    """Certify a run that read `inputs` and wrote `output` (weights already there); write its
    manifest and certificate beside the weights; return the certificate's bytes. `parents` replaces
    what the agent would decide for those inputs (a dishonest agent's statement)."""
    rec = node.recorder(run)
    rec.begin(node="node-1", name=run, attempt=0, spec={"gpus": 1})
    rec.image("registry.example/train@sha256:" + "cd" * 32, "sha256:" + "cd" * 32)
    recorded = 0
    for name, path in sorted(inputs.items()):
        manifest = hash_tree(path)
        parent = input_parent(path, manifest, f"input {name}", recorded=recorded).parent
        if parents is not None and name in parents:
            parent = parents[name]
        rec.input(name, manifest, parent=parent)
        recorded += parent is not None
    out = hash_tree(output, exclude=OUTPUT_EXCLUDED)
    rec.output("model", out)
    data = certificate_bytes(rec.seal(assurance="dev", ak=node.ak))
    out.write(output / MANIFEST_FILE)
    (output / CERTIFICATE_FILE).write_bytes(data)
    return data


def weights(directory: Path, content: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "weights.bin").write_bytes(content)
    return directory

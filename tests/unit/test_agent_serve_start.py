"""`aicert-agent serve` without a way to the API server says so in one line (exit 2), no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_serve_without_kubeconfig_or_service_account_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")} | {
        "HOME": str(tmp_path),
        "AICERT_TPM": "swtpm:host=127.0.0.1,port=1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "aicert_agent", "serve", "--node", "gpu-1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "cannot reach the API server" in done.stderr

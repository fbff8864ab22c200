#!/usr/bin/env python3
"""Build (once) the upstream Kubernetes control-plane binaries and a real node's binaries (kubelet,
containerd, runc, CNI plugins, pause), and print the directories holding them.

    python localcluster/build.py                  # progress on stderr; versions, total time, the dirs on stdout
    python localcluster/build.py --control-plane  # only the control plane (--node: only the node binaries)
    python localcluster/build.py --print-dir      # only the control plane's dir: BIN=$(python localcluster/build.py --print-dir)
    python localcluster/build.py --print-node-dir # only the node binaries' dir

Needs only the Python standard library and Go (runc and pause also gcc and libseccomp-dev). The logic lives in aicert_localcluster/binaries.py (so
LocalCluster uses the same code); it is loaded by path, without the package's __init__, which needs
`cryptography`. See localcluster/README.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parent / "aicert_localcluster" / "binaries.py"


def _load_main() -> object:
    spec = importlib.util.spec_from_file_location("_aicert_localcluster_binaries", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module.main


if __name__ == "__main__":
    main = _load_main()
    assert callable(main)
    sys.exit(main())

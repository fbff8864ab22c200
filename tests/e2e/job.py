"""The e2e tests' training job: copies its input to a weights file.

With WAIT_FOR_RELEASE=1 it first waits until a file `release` appears in its output directory
(the test creates it from the host), then removes it, so a test can act while training runs
without depending on timing. EXIT_CODE makes it fail on purpose.
"""

import os
import pathlib
import sys
import time

data, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(out / "started").write_text("1")
if os.environ.get("WAIT_FOR_RELEASE") == "1":
    while not (out / "release").exists():
        time.sleep(0.1)
    (out / "release").unlink()
(out / "started").unlink()
code = int(os.environ.get("EXIT_CODE", "0"))
if code:
    sys.exit(code)
(out / "weights.bin").write_bytes((data / "train.csv").read_bytes()[::-1])

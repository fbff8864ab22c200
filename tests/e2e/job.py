"""The e2e tests' training job: copies its input to a weights file.

With WAIT_FOR_RELEASE=1 it first waits until a file `release` appears in its output directory
(the test creates it from the host), then removes it, so a test can act while training runs
without depending on timing. EXIT_CODE makes it fail on purpose; HOSTILE makes it attack the agent
through its output (sparse, tmpdir, badname, oom). PROBE=host:port,... tries to connect to each at
the start and writes what happened to probe.json in its output; LISTEN=port serves TCP on that port
while it runs (the network tests).
"""

import json
import os
import pathlib
import socket
import sys
import threading
import time

data, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
if os.environ.get("LISTEN"):
    server = socket.create_server(("0.0.0.0", int(os.environ["LISTEN"])))
    threading.Thread(target=lambda: [server.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
if os.environ.get("PROBE"):
    results = {}
    for target in os.environ["PROBE"].split(","):
        host, _, port = target.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            results[target] = "connected"
        except OSError as exc:
            results[target] = f"refused or dropped: {exc}"
    (out / "probe.json").write_text(json.dumps(results, sort_keys=True))
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
# HOSTILE: a training that attacks the agent through what it writes (red team, round two)
hostile = os.environ.get("HOSTILE", "")
if hostile == "sparse":  # 8 TiB of apparent size, no disk blocks
    with open(out / "huge.bin", "wb") as f:
        f.truncate(8 << 40)
elif hostile == "tmpdir":  # a directory where the agent once wrote its temporary certificate file
    (out / ".aicert-certificate.json.tmp").mkdir()
    (out / ".manifest.json.tmp").mkdir()
elif hostile == "badname":  # a file name that is not UTF-8
    with open(os.path.join(os.fsencode(out), b"bad-\xff\xfe.bin"), "wb") as f:
        f.write(b"x")
elif hostile == "oom":  # more memory than the container's limit: the kernel kills it
    hog = [bytearray(1 << 20) for _ in range(1 << 12)]  # 4 GiB, a MiB at a time, each page touched

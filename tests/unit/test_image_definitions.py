"""images/build.py without building an image: it reads images/*.Dockerfile as a daemon would (the
config and the Debian packages agree with a plain reading of the files), refuses what it does not
understand, and writes layers and layouts byte for byte the same from the same files."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shlex
import tarfile
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from aicert_images.debian import mmdebstrap_command
from aicert_images.dockerfile import DockerfileError, parse_dockerfile
from aicert_images.layer import write_layer
from aicert_images.layout import write_layout
from aicert_images.oci import image_config
from aicert_images.report import ImageBuildError
from aicert_images.repository import DOCKERFILES, REPO, dockerignore_patterns, is_ignored

ARGS = {"VERSION": "0.1.0", "REVISION": "0123456789abcdef0123456789abcdef01234567"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
OCI_LABELS = {"source", "revision", "version", "licenses", "title", "description"}
DIGEST = "a" * 64


def plain_reading(path: Path) -> list[tuple[str, str]]:
    """The final stage's instructions as (keyword, arguments), read without images/build.py."""
    text = re.sub(r"\\\n", "", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, ins in enumerate(instructions) if ins[0] == "FROM")
    return [(ins[0], ins[1]) for ins in instructions[last_from:]]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_config_is_what_the_dockerfile_says(dockerfile: Path) -> None:
    spec = parse_dockerfile(dockerfile, ARGS)
    config = image_config(spec, 1_800_000_000, "amd64", ["sha256:" + DIGEST])["config"]
    assert isinstance(config, dict)
    final = plain_reading(dockerfile)
    args = dict(ARGS)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    labels: dict[str, str] = {}
    for keyword, arguments in final:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            args.setdefault(name, value)
        if keyword in ("ENV", "LABEL"):
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                for name, arg in args.items():
                    value = value.replace("${" + name + "}", arg)
                (env if keyword == "ENV" else labels)[key] = value
    assert config["Env"] == [f"{k}={v}" for k, v in env.items()]
    assert config["Labels"] == labels
    assert config["User"] == dict(final)["USER"]
    assert config["WorkingDir"] == dict(final)["WORKDIR"]
    assert config["Entrypoint"] == json.loads(dict(final)["ENTRYPOINT"])
    first_run = next(arguments for keyword, arguments in final if keyword == "RUN")
    apt = re.search(r"apt-get install --yes --no-install-recommends ([^&]+)&&", first_run)
    assert apt is not None
    include = [a for a in mmdebstrap_command(spec, "amd64", Path("/r")) if a.startswith("--include=")]
    assert include == ["--include=" + ",".join(sorted(apt.group(1).split()))]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_pinned_nonroot_and_labelled(dockerfile: Path) -> None:
    spec = parse_dockerfile(dockerfile, ARGS)
    assert spec.build.base == spec.final.base
    assert spec.base.release == "bookworm"
    assert re.fullmatch(r"[0-9a-f]{64}", spec.base.digest)
    assert spec.user == "65532:65532"
    labels = dict(spec.labels)
    assert {key.removeprefix("org.opencontainers.image.") for key in labels} == OCI_LABELS
    assert all(labels.values())
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0" == PYPROJECT["license"]
    assert labels["org.opencontainers.image.version"] == ARGS["VERSION"]
    assert labels["org.opencontainers.image.revision"] == ARGS["REVISION"]
    assert dict(spec.env)["PATH"].startswith("/opt/venv/bin:")  # the chart runs `python -m ...`
    assert {"python3", "python3-venv"} <= set(spec.final.apt_packages)
    assert spec.distribution == PYPROJECT["name"]
    assert spec.outputs == ("/wheels",)


def test_the_two_images() -> None:
    agent = parse_dockerfile(REPO / "images" / "agent.Dockerfile", ARGS)
    operator = parse_dockerfile(REPO / "images" / "operator.Dockerfile", ARGS)
    assert (agent.name, operator.name) == ("aicert-agent", "aicert-operator")
    assert agent.entrypoint == ("/opt/venv/bin/aicert-agent",)
    assert operator.entrypoint == ("/opt/venv/bin/python", "-m", "aicert_operator")
    assert (agent.extras, operator.extras) == (("agent",), ("operator",))
    # tpm2-pytss links ESYS, FAPI, RC and the TCTI loader; the loader opens the device and swtpm TCTIs.
    libtss2 = {"libtss2-esys-3.0.2-0", "libtss2-fapi1", "libtss2-rc0", "libtss2-tctildr0"}
    assert libtss2 | {"libtss2-tcti-device0", "libtss2-tcti-swtpm0"} <= set(agent.final.apt_packages)
    assert {"libtss2-dev", "gcc", "python3-dev"} <= set(agent.build.apt_packages)
    assert not any(p.startswith("libtss2") for p in operator.final.apt_packages)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_lock_file_covers_the_extra(dockerfile: Path) -> None:
    """Every requirement of the project and its extra is pinned, within its specifier, with hashes."""
    spec = parse_dockerfile(dockerfile, ARGS)
    text = (REPO / spec.requirements).read_text()
    pins = {
        canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+) \\$", text, re.M)
    }
    assert len(pins) == len(re.findall(r"^\S+==", text, re.M)) > 10
    assert all(block.count("--hash=sha256:") for block in re.split(r"\n(?=\S)", text) if "==" in block)
    wanted = [
        *PYPROJECT["dependencies"],
        *[r for e in spec.extras for r in PYPROJECT["optional-dependencies"][e]],
    ]
    for requirement in map(Requirement, wanted):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {spec.requirements}: run `python images/build.py lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}"


def test_dockerignore_keeps_generated_files_out_of_the_build_stage() -> None:
    patterns = dockerignore_patterns()
    assert is_ignored("verifier/src/aicert/__pycache__/cli.cpython-311.pyc", patterns)
    assert is_ignored("aicert_k8s.egg-info/PKG-INFO", patterns)
    assert is_ignored(".venv/bin/python", patterns)
    assert not is_ignored("verifier/src/aicert/cli.py", patterns)
    assert not is_ignored("images/agent.requirements.txt", patterns)


VALID = f"""# syntax=docker/dockerfile:1
FROM debian:bookworm-20260918-slim@sha256:{DIGEST} AS build
RUN apt-get update \\
 && apt-get install --yes --no-install-recommends python3 \\
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
RUN pip wheel --requirement=pyproject.toml --wheel-dir=/wheels
FROM debian:bookworm-20260918-slim@sha256:{DIGEST}
RUN apt-get update && apt-get install --yes --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
RUN pip install 'aicert-k8s[agent]'
ENV A=1 \\
    B="two words"
USER 65532:65532
ARG VERSION
LABEL org.opencontainers.image.title="x" org.opencontainers.image.version="${{VERSION}}"
ENTRYPOINT ["/bin/true"]
"""


def parse_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.Dockerfile"
    path.write_text(text)
    parse_dockerfile(path, {"VERSION": "1"})


def test_the_subset_that_is_understood(tmp_path: Path) -> None:
    path = tmp_path / "x.Dockerfile"
    path.write_text(VALID)
    spec = parse_dockerfile(path, {"VERSION": "1"})
    assert spec.env == (
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("A", "1"),
        ("B", "two words"),
    )
    assert dict(spec.labels) == {
        "org.opencontainers.image.title": "x",
        "org.opencontainers.image.version": "1",
    }
    assert spec.build.apt_packages == ("python3",)
    assert spec.requirements == "pyproject.toml"
    with pytest.raises(DockerfileError, match=r"x.Dockerfile:\d+: ARG VERSION has no default and no value"):
        parse_dockerfile(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ENTRYPOINT", "CMD", r":18: CMD is not supported in the final stage"),
        ("COPY pyproject.toml ./", "ADD pyproject.toml ./", r":7: ADD is not supported"),
        (f"slim@sha256:{DIGEST} AS build", "slim AS build", r":2: FROM .* pinned by digest"),
        (
            f"bookworm-20260918-slim@sha256:{DIGEST}\n",
            f"bookworm-slim@sha256:{DIGEST}\n",
            r":9: FROM .*dated",
        ),
        ("ENV A=1", "ENV A 1", r":13: expected KEY=value"),
        ("RUN pip install", "RUN --mount=type=cache,target=/root pip install", r":12: only the shell form"),
        (
            "COPY --from=build /wheels",
            "COPY /wheels",
            r":11: the final stage copies only from the build stage",
        ),
        ("USER 65532:65532", "USER nonroot", r":15: expected USER <uid>"),
        ('ENTRYPOINT ["/bin/true"]', "ENTRYPOINT /bin/true", r":18: expected ENTRYPOINT \["),
        ('title="x"', 'title="${VERSION:-x}"', r":17: unsupported variable syntax"),
        ("USER 65532", "user 65532", r":15: write the instruction in upper case"),
        (
            "RUN pip install 'aicert-k8s[agent]'\n",
            "RUN pip install 'a[b]'\nUSER 1\nRUN true\n",
            r":14: RUN after USER",
        ),
        ("COPY pyproject.toml ./", "COPY ../x ./", r":7: .*a path inside the repository"),
        ("RUN pip wheel", "RUN <<EOF pip wheel", r":8: heredocs are not supported"),
        (
            " && apt-get install",
            " && apt-get install -y",
            r":3: each stage must start with RUN apt-get update",
        ),
        (
            "--requirement=pyproject.toml",
            "--requirement=setup.cfg",
            r"'setup.cfg' is not a file the build stage copies",
        ),
        ("'aicert-k8s[agent]'", "aicert-k8s", r"must pip install exactly one"),
        ('title="x" ', "", r"needs LABEL org.opencontainers.image.title"),
    ],
)
def test_anything_else_is_refused_with_its_line(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in VALID
    with pytest.raises(DockerfileError, match=message):
        parse_text(tmp_path, VALID.replace(old, new, 1))


def test_other_stage_counts_are_refused(tmp_path: Path) -> None:
    final_from = VALID.index(f"FROM debian:bookworm-20260918-slim@sha256:{DIGEST}\n")
    with pytest.raises(DockerfileError, match=":1: expected two stages"):
        parse_text(tmp_path, VALID[:final_from])
    with pytest.raises(DockerfileError, match=":1: expected two stages"):
        parse_text(tmp_path, VALID[final_from:])
    with pytest.raises(DockerfileError, match=":19: expected two stages"):
        parse_text(tmp_path, VALID + VALID[final_from:])


def small_rootfs(root: Path, *, old: int, new: int) -> None:
    for directory in (
        "etc",
        "usr/bin",
        "var/log/apt",
        "var/lib/apt/lists/partial",
        "var/cache/apt",
        "dev",
        "tmp",
    ):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/machine-id").write_text("0123\n")
    (root / "var/log/dpkg.log").write_text("installed\n")
    (root / "var/lib/apt/lists/deb_Packages").write_text("Package: x\n")
    (root / "var/cache/apt/pkgcache.bin").write_bytes(b"\0")
    os.mkfifo(root / "dev/initctl")
    (root / "usr/bin/python3.11").write_bytes(b"\x7fELF" * 100)
    os.chmod(root / "usr/bin/python3.11", 0o755)
    os.link(root / "usr/bin/python3.11", root / "usr/bin/python3")
    os.symlink("usr/bin", root / "bin")
    os.chmod(root / "tmp", 0o1777)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (new, new), follow_symlinks=False)
    os.utime(root / "usr/bin/python3.11", (old, old))


def test_layer_is_sorted_clamped_and_clean(tmp_path: Path) -> None:
    clamp, old, new = 1_800_000_000, 1_700_000_000, 1_900_000_000
    root = tmp_path / "rootfs"
    small_rootfs(root, old=old, new=new)
    first = write_layer(root, tmp_path / "a", clamp)
    second = write_layer(root, tmp_path / "b", clamp)
    assert first == second
    blob = (tmp_path / "a" / first.blob.digest.removeprefix("sha256:")).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == first.blob.digest.removeprefix("sha256:")
    assert blob[4:8] == b"\0\0\0\0"  # gzip mtime
    assert f"sha256:{hashlib.sha256(gzip.decompress(blob)).hexdigest()}" == first.diff_id
    with tarfile.open(tmp_path / "a" / first.blob.digest.removeprefix("sha256:")) as tar:
        members = {m.name: m for m in tar.getmembers()}
        names = [m.name for m in tar.getmembers()]
    assert names == [
        "bin",
        "dev",
        "etc",
        "etc/passwd",
        "tmp",
        "usr",
        "usr/bin",
        "usr/bin/python3",
        "usr/bin/python3.11",
        "var",
        "var/cache",
        "var/cache/apt",
        "var/lib",
        "var/lib/apt",
        "var/lib/apt/lists",
        "var/log",
        "var/log/apt",
    ]
    assert (
        members["usr/bin/python3.11"].islnk() and members["usr/bin/python3.11"].linkname == "usr/bin/python3"
    )
    assert members["usr/bin/python3"].mode == 0o755 and members["bin"].linkname == "usr/bin"
    assert members["tmp"].mode == 0o1777
    assert {m.uname for m in members.values()} == {""} == {m.gname for m in members.values()}
    assert members["usr/bin/python3"].mtime == old == members["usr/bin/python3.11"].mtime  # older: kept
    assert {m.mtime for n, m in members.items() if not n.startswith("usr/bin/python3")} == {clamp}


def test_special_files_outside_dev_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    small_rootfs(root, old=1, new=2)
    os.mkfifo(root / "etc/fifo")
    with pytest.raises(ImageBuildError, match="/etc/fifo: a device node, FIFO or socket"):
        write_layer(root, tmp_path / "blobs", 3)


def test_layout(tmp_path: Path) -> None:
    spec = parse_dockerfile(REPO / "images" / "agent.Dockerfile", ARGS)
    root = tmp_path / "rootfs"
    small_rootfs(root, old=1_700_000_000, new=1_900_000_000)
    layout = write_layout(spec, root, tmp_path / "out" / spec.name, 1_800_000_000, "0.1.0")
    again = write_layout(spec, root, tmp_path / "again" / spec.name, 1_800_000_000, "0.1.0")
    assert layout.manifest == again.manifest
    assert layout.reference == f"aicert-agent@{layout.manifest.digest}"
    out = layout.path
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((out / "index.json").read_text())
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (entry,) = index["manifests"]
    assert entry["digest"] == layout.manifest.digest
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "0.1.0"}
    blobs = {p.name: p.read_bytes() for p in (out / "blobs" / "sha256").iterdir()}
    assert all(hashlib.sha256(data).hexdigest() == name for name, data in blobs.items())
    manifest = json.loads(blobs[layout.manifest.digest.removeprefix("sha256:")])
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ]
    config = json.loads(blobs[manifest["config"]["digest"].removeprefix("sha256:")])
    assert config["created"] == "2027-01-15T08:00:00Z"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layout.layer.diff_id]}
    assert len(blobs) == 3

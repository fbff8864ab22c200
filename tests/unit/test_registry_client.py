"""aicert_localcluster.registry without a running registry: the repository path a push uses, the
pull secret's dockerconfigjson, and the htpasswd line (Apache's htpasswd, bcrypt)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from aicert_localcluster.registry import Registry, RegistryError, htpasswd_line, registry_path


@pytest.mark.parametrize(
    ("repository", "path"),
    [
        ("registry.local/realnode/busybox", "realnode/busybox"),
        ("127.0.0.1:5000/team/tool", "team/tool"),
        ("localhost/tool", "tool"),
        ("team/tool", "team/tool"),
        ("tool", "tool"),
    ],
)
def test_the_registry_path_drops_only_a_host_component(repository: str, path: str) -> None:
    assert registry_path(repository) == path


def test_the_pull_secret_holds_the_registrys_credentials(tmp_path: Path) -> None:
    registry = Registry(tmp_path, credentials=("puller", "pw:with:colons"), bin_dir=tmp_path)
    registry.port = 5005
    secret = registry.pull_secret("regcred", "team-a")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"] == {"name": "regcred", "namespace": "team-a"}
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = config["auths"]["127.0.0.1:5005"]
    assert base64.b64decode(entry["auth"]).decode() == "puller:pw:with:colons"
    assert (entry["username"], entry["password"]) == ("puller", "pw:with:colons")


def test_a_registry_without_credentials_has_no_pull_secret(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="needs no credentials"):
        Registry(tmp_path, bin_dir=tmp_path).pull_secret("regcred", "default")


def test_the_htpasswd_line_is_bcrypt_and_verifies(tmp_path: Path) -> None:
    if shutil.which("htpasswd") is None:
        pytest.fail("htpasswd is missing: install Debian's apache2-utils (make deps)")
    line = htpasswd_line("puller", "s3cret")
    assert line.startswith("puller:$2y$")
    (tmp_path / "htpasswd").write_text(line + "\n")

    def verifies(password: str) -> bool:
        done = subprocess.run(
            ["htpasswd", "-v", "-i", str(tmp_path / "htpasswd"), "puller"],
            input=password,
            text=True,
            capture_output=True,
        )
        return done.returncode == 0

    assert verifies("s3cret")
    assert not verifies("s3cret!")


@pytest.mark.parametrize("user", ["", "a:b", "a\nb"])
def test_a_user_name_htpasswd_cannot_hold_is_refused(user: str) -> None:
    with pytest.raises(RegistryError, match="registry user"):
        htpasswd_line(user, "pw")

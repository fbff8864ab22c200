"""`kubectl explain` explains every field: the real kube-apiserver accepts this checkout's CRD with
its descriptions and publishes each of them in its OpenAPI v3 document, which kubectl explain reads."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tools.crd_reference import CRD, crd_schema, schema_fields

from aicert_contract.training import GROUP, PLURAL, VERSION
from aicert_localcluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("explain")) as running:
        running.kubectl("apply", "--server-side", "-f", str(CRD))
        running.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
        yield running


def _kubectl_once_published(cluster: LocalCluster, *args: str) -> str:
    """kubectl's output once the API server publishes the new CRD (discovery and OpenAPI follow
    Established by a few seconds)."""
    for _ in range(60):
        done = cluster.kubectl(*args, check=False)
        if done.returncode == 0:
            return done.stdout
        time.sleep(1)
    return cluster.kubectl(*args).stdout


def _published(cluster: LocalCluster) -> dict[str, Any]:
    key = f"dev.aicert.{VERSION}.CertifiedTraining"
    for _ in range(60):
        document = json.loads(
            _kubectl_once_published(cluster, "get", "--raw", f"/openapi/v3/apis/{GROUP}/{VERSION}")
        )
        schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
        if key in schemas:
            found: dict[str, Any] = schemas[key]
            return found
        time.sleep(1)
    raise AssertionError(f"the API server never published {key}")


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_api_server_publishes_every_description_of_the_crd(cluster: LocalCluster) -> None:
    published = {field.path: field.schema for field in schema_fields(_published(cluster))}
    for field in schema_fields(crd_schema()):
        if field.path in ("apiVersion", "kind", "metadata"):
            continue  # the API server documents these itself (TypeMeta, ObjectMeta)
        assert field.path in published, field.path
        assert published[field.path].get("description") == field.schema["description"], field.path


@pytest.mark.parametrize("path", ["status.phase", "spec.output.maxBytes", "spec.tolerations.effect"])
def test_kubectl_explain_prints_the_description(cluster: LocalCluster, path: str) -> None:
    described = crd_schema()
    for part in path.split("."):
        described = described["properties"][part]
        described = described.get("items", described)
    shown = _kubectl_once_published(cluster, "explain", f"ct.{path}")
    assert _words(described["description"]) in _words(shown)

"""What a container is started with, resolved like Kubernetes resolves it: the env is the image's plus
the container's (env, envFrom, valueFrom fieldRef/configMapKeyRef/secretKeyRef, read through the
node's credentials) with KUBERNETES_SERVICE_HOST/PORT pointing at the API server; the command replaces
the image's Entrypoint and the args its Cmd, `$(VAR)` expanded from the container's env. What cannot
be resolved yet (a missing ConfigMap or key, an unsupported field) raises `Retry`, whose reason the
container shows while it waits; the volume plugins share the ConfigMap, Secret and field lookups.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .client import LOOPBACK, ApiError, KubeClient
from .sandbox import DEFAULT_PATH, RunImage


class Retry(Exception):
    """Not possible yet (volume not bound, image missing, ...); reported as a waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class PodSource(Protocol):
    """The pod being started (its latest copy from the watch) and the credentials of its node."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> str: ...

    @property
    def pod(self) -> dict[str, Any]: ...

    @property
    def spec(self) -> dict[str, Any]: ...

    @property
    def kube(self) -> KubeClient: ...


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def container_argv(container: Mapping[str, Any], entrypoint: Sequence[str], cmd: Sequence[str]) -> list[str]:
    """command replaces the image's Entrypoint (and drops its Cmd); args replace its Cmd."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command:
        return command + args
    return list(entrypoint) + (args if args else list(cmd))


def container_command(
    container: Mapping[str, Any], image: RunImage, env: Mapping[str, str], python_executable: str
) -> list[str]:
    """The argv a container runs: its command and args `$(VAR)`-expanded, over the image's; a leading
    python/python3 of the agent image is the host's `python_executable`."""
    given = {
        "command": [expand(str(a), env) for a in container.get("command") or []],
        "args": [expand(str(a), env) for a in container.get("args") or []],
    }
    argv = container_argv(given, image.entrypoint, image.cmd)
    if image.host_python and argv and argv[0] in ("python", "python3"):
        argv[0] = python_executable
    if not argv:
        raise Retry(
            "CreateContainerError",
            "no command specified (neither the container nor the image has one)",
        )
    return argv


def container_env(source: PodSource, container: Mapping[str, Any], image: RunImage) -> dict[str, str]:
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    env.update(image.env)
    env.setdefault("HOME", "/root")
    env["HOSTNAME"] = source.name[:63]
    env["KUBERNETES_SERVICE_HOST"] = source.kube.host
    env["KUBERNETES_SERVICE_PORT"] = str(source.kube.port)
    env["KUBERNETES_SERVICE_PORT_HTTPS"] = str(source.kube.port)
    for ref_source in container.get("envFrom") or []:
        prefix = str(ref_source.get("prefix") or "")
        if "configMapRef" in ref_source:
            ref = ref_source["configMapRef"]
            data = config_data(source, "configmaps", ref["name"], optional=bool(ref.get("optional")))
        elif "secretRef" in ref_source:
            ref = ref_source["secretRef"]
            data = config_data(source, "secrets", ref["name"], optional=bool(ref.get("optional")))
        else:
            continue
        env.update({prefix + k: v.decode(errors="replace") for k, v in data.items()})
    for item in container.get("env") or []:
        name = str(item["name"])
        if "valueFrom" in item:
            value = _value_from(source, item["valueFrom"], name)
            if value is None:
                continue
            env[name] = value
        else:
            env[name] = expand(str(item.get("value", "")), env)
    return env


def _value_from(source: PodSource, value_from: Mapping[str, Any], name: str) -> str | None:
    if "fieldRef" in value_from:
        return field_value(source, str(value_from["fieldRef"]["fieldPath"]))
    for kind, key_ref in (("configmaps", "configMapKeyRef"), ("secrets", "secretKeyRef")):
        if key_ref in value_from:
            ref = value_from[key_ref]
            optional = bool(ref.get("optional"))
            data = config_data(source, kind, ref["name"], optional=optional)
            if ref["key"] not in data:
                if optional:
                    return None
                raise Retry(
                    "CreateContainerConfigError",
                    f"couldn't find key {ref['key']} in {kind} {ref['name']}",
                )
            return data[ref["key"]].decode(errors="replace")
    if "resourceFieldRef" in value_from:
        return ""
    raise Retry("CreateContainerConfigError", f"env {name}: unsupported valueFrom {sorted(value_from)}")


def field_value(source: PodSource, path: str) -> str:
    """A downward-API field of the pod (fieldRef.fieldPath)."""
    pod = source.pod
    meta, spec = pod["metadata"], pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": LOOPBACK,
        "status.podIPs": LOOPBACK,
        "status.hostIP": LOOPBACK,
        "status.hostIPs": LOOPBACK,
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)(?:\['(.+)'\])?", path)
    if match:
        values: dict[str, str] = meta.get(match.group(1)) or {}
        if match.group(2) is not None:
            return str(values.get(match.group(2), ""))
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise Retry("CreateContainerConfigError", f"unsupported fieldRef {path}")


def config_data(source: PodSource, kind: str, name: str, *, optional: bool) -> dict[str, bytes]:
    """The data of a ConfigMap or Secret (`kind` "configmaps" or "secrets") in the pod's namespace."""
    try:
        obj = source.kube.request("GET", f"/api/v1/namespaces/{source.namespace}/{kind}/{name}")
    except ApiError as exc:
        if exc.status == 404 and optional:
            return {}
        raise Retry("CreateContainerConfigError", f"{kind} {source.namespace}/{name}: {exc.message}") from exc
    if kind == "secrets":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data

"""Read a CertifiedTraining, apply the caller's status fields, emit an Event about it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aicert.contract.status import Reason, event_body, status_apply_body
from aicert.training import GROUP, PLURAL, VERSION

APPLY = "application/apply-patch+yaml"


def raw_json(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a kubernetes client method and return the response as plain JSON, skipping the
    client's model classes (building them and turning them back into dicts costs milliseconds a
    pod: with a hundred pods on a node that was most of the agent's CPU)."""
    response = call(*args, _preload_content=False, **kwargs)
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


class TrainingClient:
    """One identity's view of CertifiedTrainings: `field_manager` owns the status fields it applies,
    `controller`/`instance` sign its Events."""

    def __init__(
        self, api_client: client.ApiClient, *, field_manager: str, controller: str, instance: str
    ) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.events = client.EventsV1Api(api_client)
        self.field_manager = field_manager
        self.controller = controller
        self.instance = instance

    def get_training(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(body)

    def apply_status(
        self, namespace: str, name: str, status: dict[str, Any], *, read_version: str | None = None
    ) -> dict[str, Any] | None:
        """Server-side apply of this manager's status fields; the training as written. None when the
        training is gone, or, with `read_version`, when it changed since that version was read
        (nothing is written: decide again from a fresh read)."""
        body = status_apply_body(name, status)
        if read_version is not None:
            body["metadata"]["resourceVersion"] = read_version  # a precondition for the apply
        try:
            written: Any = self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                field_manager=self.field_manager,
                force=True,
                _content_type=APPLY,
            )
        except ApiException as exc:
            if exc.status == 404 or (exc.status == 409 and read_version is not None):
                return None
            raise
        return dict(written)

    def emit(
        self, namespace: str, name: str, uid: str, type_: str, reason: Reason, message: str, action: str
    ) -> None:
        body: Any = event_body(  # the client accepts plain dicts
            namespace=namespace,
            name=name,
            uid=uid,
            type_=type_,
            reason=reason,
            message=message,
            controller=self.controller,
            instance=self.instance,
            action=action,
            now=dt.datetime.now(dt.UTC),
        )
        self.events.create_namespaced_event(namespace, body)

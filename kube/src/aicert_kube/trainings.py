"""Read a CertifiedTraining, apply the caller's status fields, emit an Event about it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aicert_contract.status import Reason, event_body, status_apply_body
from aicert_contract.training import GROUP, PLURAL, VERSION

APPLY = "application/apply-patch+yaml"
STATUS_WRITE_TRIES = 5


class StatusConflict(Exception):
    """Other writers kept changing the training between our read and our write."""


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
        self,
        namespace: str,
        name: str,
        uid: str,
        status: dict[str, Any],
        *,
        read_version: str | None = None,
        known_version: str | None = None,
    ) -> dict[str, Any] | None:
        """Server-side apply of this manager's status fields to the training `name` whose uid is
        `uid`; the training as written. The one way the operator and the agent write status.

        Every write is conditional on a resourceVersion of the training with that uid: the caller's
        `read_version` (it read the training and decides from that version), else the version of a
        fresh read whose uid is checked first (tried again when another writer came in between).
        `known_version`: a version of the training with that uid the caller read a moment ago; the
        first write is conditional on it (no read), and only a conflict leads to the fresh reads.
        None, with nothing written, when that training is gone: deleted, or deleted and created
        again under the same name (another uid: the old run's status must never reach it); or,
        with `read_version`, when it changed since (decide again from a fresh read)."""
        for _ in range(STATUS_WRITE_TRIES):
            version = read_version or known_version or None
            known_version = None  # used once: after a conflict, the uid is checked on a fresh read
            if version is None:
                current = self.get_training(namespace, name)
                if current is None or current["metadata"].get("uid") != uid:
                    return None
                version = str(current["metadata"]["resourceVersion"])
            try:
                written: Any = self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    status_apply_body(name, status, resource_version=version),
                    field_manager=self.field_manager,
                    force=True,
                    _content_type=APPLY,
                )
            except ApiException as exc:
                if exc.status == 404 or (exc.status == 409 and read_version is not None):
                    return None
                if exc.status == 409:
                    continue  # written by someone else since our read: read (and check the uid) again
                raise
            return dict(written)
        raise StatusConflict(
            f"the status of {namespace}/{name} changed under each of {STATUS_WRITE_TRIES} writes"
        )

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

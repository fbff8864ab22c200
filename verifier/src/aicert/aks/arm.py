"""The edge to Azure Resource Manager for `aicert aks`: reads a cluster and its agent pools, lists a
region's VM sizes, creates or updates an agent pool and follows the long-running operation.

The only module that imports the Azure SDK (azure-mgmt-containerservice 41.x, azure-core,
azure-identity), an optional dependency: without it, importing this module raises
`AzureSdkMissing`. Everything it returns is ARM's JSON (dicts), for the pure modules to judge; every
failure it lets out is an `ArmFailure` with ARM's error code and message.

Tests point it at a fake ARM: `endpoint` is the ARM base URL (the token scope follows it),
`ca_bundle` the CA to trust for it (`connection_verify`), `credential` any azure-core
TokenCredential.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Final

from aicert.aks import AzureSdkMissing
from aicert.aks.regions import SKUS_API_VERSION, location_filter, skus_path

try:
    from azure.core.credentials import TokenCredential
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
    from azure.core.rest import HttpRequest
    from azure.mgmt.containerservice import ContainerServiceClient
    from azure.mgmt.containerservice.models import AgentPool
    from azure.mgmt.core.polling.arm_polling import ARMPolling
except ImportError as exc:  # the `azure` extra is not installed
    raise AzureSdkMissing(exc.name or "azure") from None

DEFAULT_ARM_ENDPOINT: Final = "https://management.azure.com"
DEFAULT_POLL_SECONDS: Final = 10.0  # between polls of a long-running operation without Retry-After
_MAX_SKU_PAGES: Final = 100


class ArmFailure(Exception):
    """Azure Resource Manager refused or failed a request; `code` and `message` are ARM's."""

    def __init__(
        self, code: str, message: str, status: int | None = None, *, operation: bool = False
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status  # the HTTP status of a refused request; None for a failed operation
        self.operation = operation  # a long-running operation ARM had accepted, then failed


def default_credential() -> TokenCredential:
    """DefaultAzureCredential: environment, workload identity, managed identity, `az login`, …"""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise AzureSdkMissing(exc.name or "azure-identity") from None
    return DefaultAzureCredential()


def token_scope(endpoint: str) -> str:
    """The token scope for an ARM endpoint: `https://management.azure.com/.default` for Azure."""
    return endpoint.rstrip("/") + "/.default"


def _failure(exc: AzureError, *, operation: bool = False) -> ArmFailure:
    """ARM's error code and message: from the error body of a refused request, or of the status of
    a failed long-running operation (`{"status": "Failed", "error": {"code", "message"}}`)."""
    if isinstance(exc, HttpResponseError):
        error = exc.error
        code = (error.code if error else None) or (f"HTTP{exc.status_code}" if not operation else "Failed")
        message = (error.message if error else None) or str(exc.message)
        status = None if operation else exc.status_code
        return ArmFailure(code, message.strip(), status, operation=operation)
    return ArmFailure(type(exc).__name__, str(exc.message).strip(), operation=operation)


@contextmanager
def _arm_errors(*, operation: bool = False) -> Iterator[None]:
    try:
        yield
    except AzureError as exc:
        raise _failure(exc, operation=operation) from exc


class _ReportingPolling(ARMPolling):
    """ARM's polling (Azure-AsyncOperation, then Location, then the resource's provisioningState),
    telling `report` the operation's status after the first response and after every poll. The
    poller thread calls `report` in order; nothing else reports, so the sequence is the protocol's."""

    def __init__(self, report: Callable[[str], None], interval: float, endpoint: str) -> None:
        super().__init__(interval, path_format_arguments={"endpoint": endpoint})
        self._report = report

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._report(self.status())

    def update_status(self) -> None:
        super().update_status()
        self._report(self.status())


class AksClient:
    """One managed cluster's side of ARM. Use as a context manager: it closes the HTTP session."""

    def __init__(
        self,
        subscription: str,
        resource_group: str,
        cluster: str,
        *,
        endpoint: str = DEFAULT_ARM_ENDPOINT,
        credential: TokenCredential | None = None,
        ca_bundle: str | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self.subscription = subscription
        self.resource_group = resource_group
        self.cluster_name = cluster
        self._endpoint = endpoint.rstrip("/")
        self._poll_seconds = poll_seconds
        transport: dict[str, Any] = {} if ca_bundle is None else {"connection_verify": ca_bundle}
        self._client = ContainerServiceClient(
            credential or default_credential(),
            subscription,
            base_url=self._endpoint,
            credential_scopes=[token_scope(self._endpoint)],
            polling_interval=poll_seconds,
            **transport,
        )

    def __enter__(self) -> AksClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    def cluster(self) -> dict[str, Any]:
        """The managed cluster (its `location`, `properties.kubernetesVersion`, …)."""
        with _arm_errors():
            return self._client.managed_clusters.get(self.resource_group, self.cluster_name).as_dict()

    def pools(self) -> list[dict[str, Any]]:
        with _arm_errors():
            return [
                pool.as_dict()
                for pool in self._client.agent_pools.list(self.resource_group, self.cluster_name)
            ]

    def pool(self, name: str) -> dict[str, Any]:
        with _arm_errors():
            return self._client.agent_pools.get(self.resource_group, self.cluster_name, name).as_dict()

    def find_pool(self, name: str) -> dict[str, Any] | None:
        """The pool, or None when ARM says it does not exist."""
        try:
            return self._client.agent_pools.get(self.resource_group, self.cluster_name, name).as_dict()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _failure(exc) from exc

    def vm_skus(self, location: str) -> list[dict[str, Any]]:
        """The Compute resource SKUs of `location` (every page)."""
        request = HttpRequest(
            "GET",
            skus_path(self.subscription),
            params={"api-version": SKUS_API_VERSION, "$filter": location_filter(location)},
        )
        skus: list[dict[str, Any]] = []
        with _arm_errors():
            for _ in range(_MAX_SKU_PAGES):
                response = self._client.send_request(request)
                response.raise_for_status()
                page = response.json()
                skus += [sku for sku in page.get("value") or [] if isinstance(sku, dict)]
                next_link = page.get("nextLink")
                if not next_link:
                    return skus
                request = HttpRequest("GET", str(next_link))
        raise ArmFailure("TooManyPages", f"the resource SKUs of {location} ran past {_MAX_SKU_PAGES} pages")

    def create_or_update_pool(
        self, name: str, body: dict[str, Any], report: Callable[[str], None]
    ) -> dict[str, Any]:
        """PUT the agent pool and wait for the long-running operation; `report` hears its status
        after the PUT and after each poll. Returns the pool as ARM has it at the end."""
        polling = _ReportingPolling(report, self._poll_seconds, self._endpoint)
        with _arm_errors():  # the PUT: ARM accepts or refuses the request
            poller = self._client.agent_pools.begin_create_or_update(
                self.resource_group, self.cluster_name, name, AgentPool(body), polling=polling
            )
        with _arm_errors(operation=True):  # the polls, until the operation succeeds or fails
            return poller.result().as_dict()

"""The Kubernetes API as `twinray train --k8s`, `twinray follow` and `twinray scale` use it.

KubeRay's RayJob and RayService are custom objects (group ray.io, version v1): the `kubernetes`
client's CustomObjectsApi reads, creates and patches them. Configuration comes from the client's
usual loaders (in-cluster service account, else $KUBECONFIG or ~/.kube/config), and every API or
connection failure becomes a one-line `TwinRayError`, so the CLI never prints a traceback for them.
Imported only by the commands that talk to a cluster: the client takes a second or more to import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import urllib3
from kubernetes import client, config

from twinray.shared.platform.errors import (
    FailedPrecondition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TwinRayError,
    Unavailable,
)

GROUP, VERSION = "ray.io", "v1"
REQUEST_TIMEOUT_S = 30  # a hung API server fails the command instead of hanging it
_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """A connected CustomObjectsApi and the namespace the command works in."""

    api: client.CustomObjectsApi
    namespace: str
    host: str

    def get(self, plural: str, name: str) -> dict:
        return self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, _request_timeout=REQUEST_TIMEOUT_S
        )

    def create(self, plural: str, body: dict) -> dict:
        return self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body, _request_timeout=REQUEST_TIMEOUT_S
        )

    def merge_patch(self, plural: str, name: str, patch: dict) -> dict:
        """A JSON merge patch (RFC 7386): the client sends application/merge-patch+json for custom objects."""
        return self.api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, patch, _request_timeout=REQUEST_TIMEOUT_S
        )


def connect(namespace: str | None = None) -> Cluster:
    """In a pod: its service account and namespace; elsewhere the kubeconfig's current context."""
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
            default = _IN_CLUSTER_NAMESPACE.read_text().strip() if _IN_CLUSTER_NAMESPACE.exists() else ""
        else:
            kubeconfig = os.environ.get("KUBECONFIG") or None  # read now: the client reads it once, at import
            api_client = config.new_client_from_config(config_file=kubeconfig)
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            default = (active or {}).get("context", {}).get("namespace", "")
    except config.ConfigException as error:
        raise FailedPrecondition(
            f"no Kubernetes configuration ({error}): set KUBECONFIG or ~/.kube/config, or run inside a cluster"
        ) from None
    return Cluster(client.CustomObjectsApi(api_client), namespace or default or "default", api_client.configuration.host)


def _api_message(error: client.ApiException) -> str:
    """The API server's own explanation (Status.message), else the HTTP reason."""
    try:
        message = json.loads(error.body or "").get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return (message.splitlines() or [""])[0][:300] or str(error.reason)


@contextlib.contextmanager
def api_errors(what: str, cluster: Cluster) -> Iterator[None]:
    """Turn what the client raises while working on `what` (e.g. "RayService 'twinray'") into one line."""
    where = f"in namespace {cluster.namespace!r}"
    try:
        yield
    except client.ApiException as error:
        raise translate(error, what, where) from None
    except urllib3.exceptions.HTTPError as error:
        raise Unavailable(f"cannot reach the Kubernetes API at {cluster.host}: {type(error).__name__}") from None


def translate(error: client.ApiException, what: str, where: str) -> TwinRayError:
    """A Kubernetes API error as the TwinRayError a person can act on."""
    message = _api_message(error)
    if error.status == 404:
        return NotFound(f"{what} not found {where} (is it installed there, with the KubeRay CRDs?)")
    if error.status == 401:
        return PermissionDenied(f"the Kubernetes API refused our credentials for {what} (401): check the kubeconfig")
    if error.status == 403:
        return PermissionDenied(f"forbidden: {message}")
    if error.status == 409:
        return FailedPrecondition(f"conflict on {what} {where}: {message}")
    if error.status in (400, 422):
        return InvalidInput(f"the Kubernetes API rejected {what} {where}: {message}")
    return Unavailable(f"Kubernetes API error {error.status} on {what} {where}: {message}")

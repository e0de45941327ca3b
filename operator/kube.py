"""The few API calls the operator makes, on the `kubernetes` client's REST layer.

Objects are plain dicts (what the builders return), addressed by apiVersion and kind; no discovery,
so the operator needs no rights beyond the verbs it really uses (see the chart's RBAC).
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from trunkline.core.models import RESOURCE_KINDS
from trunkline.operator.builders import MANAGER

PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "Deployment": "deployments",
    "DaemonSet": "daemonsets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "NetworkPolicy": "networkpolicies",
    "Certificate": "certificates",  # cert-manager.io/v1
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Event": "events",
    "Node": "nodes",
    **{kind: model.PLURAL for kind, model in RESOURCE_KINDS.items()},
}


def connect() -> ApiClient:
    """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG (as kopf does)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return ApiClient()


def path(
    api_version: str, kind: str, namespace: str | None, name: str | None = None, sub: str | None = None
) -> str:
    parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(PLURALS[kind])
    parts.extend(p for p in (name, sub) if p)
    return "/".join(parts)


class Kube:
    def __init__(self, api: ApiClient) -> None:
        self.api = api

    def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method, url, query_params=query, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(*request)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException(
                status=response.status, reason=response.reason, body=data.decode(errors="replace")
            )
        return json.loads(data)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call("GET", path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(self, api_version: str, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of a namespace (None: of a cluster-scoped kind)."""
        items: list[dict[str, Any]] = self._call("GET", path(api_version, kind, namespace))["items"]
        return items

    def create(self, obj: dict[str, Any]) -> None:
        """POST: for objects written once and never again (Events)."""
        self._call("POST", path(obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace")), obj)

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply: we own the fields we set, and only those (an HPA keeps `replicas`)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = [("fieldManager", MANAGER), ("force", "true")]
        self._call("PATCH", url, obj, "application/apply-patch+yaml", query)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self._call("DELETE", path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        sub: str | None = None,
    ) -> None:
        self._call(
            "PATCH", path(api_version, kind, namespace, name, sub), patch, "application/merge-patch+json"
        )

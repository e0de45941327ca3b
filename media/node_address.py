"""The relay's advertised address, resolved at start from its setting (trunkline.core.media_advertise).

For the node-based settings it reads its Node from the API (name from the downward API's
spec.nodeName: $NODE_NAME; credentials: the pod's ServiceAccount, else $KUBECONFIG), and, when the
Node gives no usable address, writes a Warning Event on its own pod so `kubectl describe pod` says why.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
from typing import Any

import kubernetes
from kubernetes.client import ApiClient

from trunkline.core.media_advertise import AdvertiseSpec, UnusableAddress, resolve

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 10.0)  # connect, read (seconds)
MAX_NODE_BYTES = 1 << 20  # a Node object larger than this is not parsed
EVENT_REASON = "MediaAddressUnusable"


def _connect() -> ApiClient:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return ApiClient()


class NodeAddress:
    """Resolves `spec` for the relay of pod `pod` (namespace, name) on node `node_name`."""

    def __init__(
        self,
        spec: AdvertiseSpec,
        version: int | None,
        node_name: str | None = None,
        pod_ip: str | None = None,
        pod: tuple[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.version = version
        self.node_name = node_name
        self.pod_ip = pod_ip
        self.pod = pod
        self._api: ApiClient | None = None
        self._reported: str | None = None  # the last reason written as an Event (not repeated)

    async def resolve(self) -> str:
        """The address; UnusableAddress saying why there is none (the API unreachable included)."""
        node = None
        if self.spec.needs_node:
            if not self.node_name:
                raise UnusableAddress(f"{self.spec} needs the node's name (--node-name or $NODE_NAME)")
            node = await asyncio.to_thread(self._get_node, self.node_name)
        return resolve(self.spec, node, self.pod_ip, self.version)

    async def report(self, reason: str) -> None:
        """A Warning Event on the relay's pod (once per distinct reason); failures are only logged."""
        if self.pod is None or not self.spec.needs_node or reason == self._reported:
            return
        try:
            await asyncio.to_thread(self._post_event, reason)
            self._reported = reason
        except Exception as exc:  # best effort: the log line and /readyz say it too
            log.warning("cannot write the %s Event on pod %s/%s: %s", EVENT_REASON, *self.pod, exc)

    # -------------------------------------------------------------- blocking calls, in a thread

    def _api_client(self) -> ApiClient:
        if self._api is None:
            try:
                self._api = _connect()
            except Exception as exc:  # any config problem is the same answer
                raise UnusableAddress(f"{self.spec}: no Kubernetes API credentials ({exc})") from None
        return self._api

    def _call(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
        api = self._api_client()
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        request = api.param_serialize(
            method, url, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        return response.status, data

    def _get_node(self, name: str) -> dict[str, Any]:
        try:
            status, data = self._call("GET", f"/api/v1/nodes/{name}")
        except UnusableAddress:
            raise
        except Exception as exc:  # network, TLS: the API is unreachable
            raise UnusableAddress(f"{self.spec}: cannot read node {name}: {exc}") from None
        if status == 404:
            raise UnusableAddress(f"{self.spec}: node {name} does not exist")
        if status in (401, 403):
            raise UnusableAddress(
                f"{self.spec}: not allowed to get node {name} (HTTP {status}; the relay's ServiceAccount "
                "needs `get` on nodes)"
            )
        if status != 200:
            raise UnusableAddress(f"{self.spec}: reading node {name} answered HTTP {status}")
        if len(data) > MAX_NODE_BYTES:
            raise UnusableAddress(f"{self.spec}: node {name} is larger than {MAX_NODE_BYTES} bytes")
        try:
            node = json.loads(data)
        except ValueError:
            raise UnusableAddress(f"{self.spec}: node {name} is not JSON") from None
        if not isinstance(node, dict):
            raise UnusableAddress(f"{self.spec}: node {name} is not an object")
        return node

    def _post_event(self, reason: str) -> None:
        assert self.pod is not None
        namespace, pod = self.pod
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod[:200]}.", "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": namespace},
            "reason": EVENT_REASON,
            "message": reason[:1000],
            "type": "Warning",
            "source": {"component": "trunkline-media"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        status, data = self._call("POST", f"/api/v1/namespaces/{namespace}/events", event)
        if not 200 <= status <= 299:
            raise RuntimeError(f"HTTP {status}: {data[:200].decode(errors='replace')}")

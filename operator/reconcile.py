"""Fetch, build, apply: the operator's two reconcilers, synchronous and free of kopf.

- `apply_platform_configmap`: the platform ConfigMap -> the data plane (control, edge, media).
- `sweep_namespace`: the Trunks, DIDs, Carriers and Secrets of a namespace -> their status.
  One resource's status depends on others (a DID on its trunk, a trunk on carriers and its Secret),
  so a change anywhere in a namespace re-checks all of it; only statuses that differ are written.
  A Trunk's live counts are not part of it (handlers.py writes them from the shared store).
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from trunkline.core import media_advertise
from trunkline.core.models import API_VERSION, RESOURCE_KINDS
from trunkline.operator import grpc_certs
from trunkline.operator.addresses import Addresses, media_address, sip_address
from trunkline.operator.builders import build_data_plane, object_name, owner_reference, stale_objects
from trunkline.operator.kube import Kube
from trunkline.operator.network_policies import build_network_policies, stale_policies
from trunkline.operator.nonce import nonce_secret_update
from trunkline.operator.platform import Platform, parse_platform
from trunkline.operator.status import CarrierUpkeep, StatusUpdate, now_rfc3339, plan_statuses
from trunkline.operator.verdict import Verdict

log = logging.getLogger(__name__)


def apply_platform_configmap(kube: Kube, configmap: dict[str, Any]) -> Addresses:
    """Apply the data plane of this (fetched) platform ConfigMap and say where peers reach it;
    ValueError when its platform is bad, ApiException when the API server refuses an object or cannot
    be reached."""
    namespace, name = configmap["metadata"]["namespace"], configmap["metadata"]["name"]
    platform = parse_platform(configmap.get("data"))
    service = None
    if platform.edge.advertise_from_service:
        service = kube.get("v1", "Service", namespace, object_name(platform, "edge-udp"))
    edge_address, sip = sip_address(platform, namespace, service)
    media = media_address(platform, read_nodes(kube, platform))
    owner = owner_reference("v1", "ConfigMap", name, configmap["metadata"]["uid"])
    # The edges' nonce keys and every component's certificate before the pods: a pod cannot start
    # without its Secrets.
    secret = kube.get("v1", "Secret", namespace, object_name(platform, "nonce"))
    if (update := nonce_secret_update(platform, namespace, secret, time.time(), owner)) is not None:
        kube.apply(update)
    for obj in certificates(kube, platform, namespace, owner):
        try:
            kube.apply(obj)
        except ApiException as exc:
            if obj["kind"] != "Certificate" or exc.status != 404:
                raise
            # No cert-manager (its CRD) in this cluster: say so, and deploy the rest all the same.
            log.error("cannot write Certificate %s: cert-manager is not installed (internalTls.issuer)",
                      obj["metadata"]["name"])  # fmt: skip
    objects = build_data_plane(platform, namespace, owner, edge_address)
    if platform.networkPolicies.enabled:
        selector = platform.networkPolicies.redisPodSelector
        objects += build_network_policies(platform, namespace, selector, owner)
    for obj in objects:
        kube.apply(obj)
    for api_version, kind, ns, obj_name in [
        *stale_objects(platform, namespace),
        *stale_policies(platform, namespace),
    ]:
        kube.delete(api_version, kind, ns, obj_name)
    return Addresses(sip, media)


def read_nodes(kube: Kube, platform: Platform) -> list[dict[str, Any]] | None:
    """The cluster's Nodes when the relays take their address from theirs, else []; None when they
    cannot be read (the condition says so; the data plane is applied all the same)."""
    if not media_advertise.parse(platform.media.advertise).needs_node:
        return []
    try:
        return kube.list("v1", "Node", None)
    except ApiException as exc:
        log.error("cannot list the Nodes for the relays' media addresses: %s %s", exc.status, exc.reason)
        return None


def certificates(
    kube: Kube, platform: Platform, namespace: str, owner: dict[str, Any]
) -> list[dict[str, Any]]:
    """What to write for the internal planes' certificates now: the operator's Secrets that are
    missing or due (logged by name, never their content), or cert-manager's Certificates."""
    tls = platform.internalTls
    lifetime = datetime.timedelta(seconds=tls.certificateLifetimeSeconds)
    if tls.issuer == "cert-manager":
        assert tls.certManagerIssuer is not None  # the model checks it
        issuer = tls.certManagerIssuer.model_dump()
        return list(grpc_certs.cert_manager_certificates(platform, namespace, issuer, lifetime, owner))
    now = datetime.datetime.now(datetime.UTC)
    updates = grpc_certs.certificate_updates(
        platform, namespace, lambda secret: kube.get("v1", "Secret", namespace, secret), lifetime, now, owner
    )
    for update in updates:
        log.info("internal gRPC certificate: writing Secret %s/%s", namespace, update["metadata"]["name"])
    return list(updates)


def warning_event(
    obj: dict[str, Any], reason: str, message: str, now: str, event_type: str = "Warning"
) -> dict[str, Any]:
    """A Warning (or Normal) Event about `obj` (`kubectl describe`, `kubectl get events` show it)."""
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "ConfigMap"),
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid", ""),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": "trunkline-operator"},
    }  # fmt: skip


def sweep_namespace(
    kube: Kube,
    namespace: str,
    platform: Verdict | None = None,
    upkeep: Mapping[tuple[str, str], CarrierUpkeep] | None = None,
    addresses: Addresses | None = None,
) -> list[StatusUpdate]:
    """Write the statuses that changed (`platform`: the last verdict on it, and `addresses` what the
    last apply found, for the Trunks; `upkeep`: the Carriers' registration and gateway health as last
    read from the edges' store); return them."""
    objects = {kind: kube.list(API_VERSION, kind, namespace) for kind in RESOURCE_KINDS}
    if not any(objects.values()):
        return []  # e.g. a Secret changed in a namespace without trunkline resources
    secrets = kube.list("v1", "Secret", namespace)
    updates = plan_statuses(
        objects, secrets, now=now_rfc3339(), platform=platform, upkeep=upkeep, addresses=addresses
    )
    written = []
    for update in updates:
        patch = {"status": update.status}
        try:
            kube.merge_patch(API_VERSION, update.kind, namespace, update.name, patch, sub="status")
        except ApiException as exc:
            # Gone since we listed it (404), or a status the schema refuses: say so, go on with the others.
            if exc.status != 404:
                log.error(
                    "%s %s/%s: cannot write status: %s", update.kind, namespace, update.name, exc.reason
                )
            continue
        log.info("%s %s/%s: %s", update.kind, namespace, update.name, _summary(update))
        written.append(update)
    return written


def _summary(update: StatusUpdate) -> str:
    return ", ".join(f"{c['type']}={c['status']} ({c['reason']})" for c in update.status["conditions"])

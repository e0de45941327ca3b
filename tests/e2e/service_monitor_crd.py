"""A ServiceMonitor CRD for the e2e API server, written here from the Prometheus Operator's documented
API (monitoring.coreos.com/v1), for the fields the chart sets; the real CRD is not vendored. Being
structural, the API server prunes any field it does not name and refuses wrong types and a bad
interval, so an object it stores unchanged is one shaped as the chart means it."""

from __future__ import annotations

from typing import Any

NAME = "servicemonitors.monitoring.coreos.com"
# Prometheus durations, as the real CRD's `interval` pattern reads them.
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"

_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_ENDPOINT = {
    "type": "object",
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": DURATION},
        "relabelings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sourceLabels": {
                        "type": "array",
                        "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                    },
                    "targetLabel": {"type": "string"},
                },
            },
        },
    },
}
_SPEC = {
    "type": "object",
    "required": ["selector"],
    "properties": {
        "selector": {"type": "object", "properties": {"matchLabels": _STRING_MAP}},
        "namespaceSelector": {
            "type": "object",
            "properties": {"matchNames": _STRINGS, "any": {"type": "boolean"}},
        },
        "endpoints": {"type": "array", "items": _ENDPOINT},
    },
}


def service_monitor_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": NAME},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": "ServiceMonitor",
                "listKind": "ServiceMonitorList",
                "plural": "servicemonitors",
                "singular": "servicemonitor",
                "shortNames": ["smon"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {"spec": _SPEC},
                        }
                    },
                }
            ],
        },
    }

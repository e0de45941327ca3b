"""CustomResourceDefinitions generated from the pydantic models.

The CRDs in `charts/trunkline/crds/` are this module's output; `tests/unit/test_crds_match_models.py`
fails when they drift. Regenerate with `python -m trunkline.generate` (also the chart's values files).

Kubernetes wants a *structural* OpenAPI v3 schema: no `$ref`, no `anyOf` with `null`, every node typed,
nothing it does not know (`title`). pydantic's JSON Schema is turned into one here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from trunkline.core.models import DID, GROUP, VERSION, Carrier, Resource, Trunk

# Keys of pydantic's JSON Schema that a structural CRD schema may carry over as they are.
_KEPT = {
    "type", "description", "default", "enum", "pattern", "format", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
    "required", "items", "properties",
}  # fmt: skip


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline references and drop what a structural schema forbids."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in schema:
        # `X | None` with default None: an optional field, which is what leaving it out means.
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {schema}")
        rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
        return structural({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _KEPT:
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020-12 (pydantic) says `exclusiveMinimum: 0`; OpenAPI v3.0 says
            # `minimum: 0, exclusiveMinimum: true`.
            out[key.replace("exclusiveM", "m")] = value
            out[key] = True
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _spec_schema(model: type[Resource]) -> dict[str, Any]:
    spec_model = model.model_fields["spec"].annotation
    assert isinstance(spec_model, type)
    full = spec_model.model_json_schema(mode="validation")
    return structural(full, full.get("$defs", {}))


def _status_schema(model: type[Resource]) -> dict[str, Any]:
    full = model.STATUS.model_json_schema()
    schema = structural(full, full.get("$defs", {}))
    # kopf keeps its handler progress under status.kopf; keep it from being pruned.
    schema["properties"]["kopf"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return schema


_READY = '.status.conditions[?(@.type=="Ready")].status'


def _condition_path(type_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].status'


_PLATFORM_READY = '.status.conditions[?(@.type=="PlatformReady")].status'
_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "Trunk": [
        {"name": "Ready", "type": "string", "jsonPath": _READY},
        {"name": "Active", "type": "integer", "jsonPath": ".status.activeCalls"},
        {"name": "Registered", "type": "integer", "jsonPath": ".status.registeredContacts"},
        {"name": "Channels", "type": "integer", "jsonPath": ".spec.channels"},
        # `-o wide`: the operator's verdict on the platform that deploys the data plane (operator/verdict.py).
        {"name": "Platform", "type": "string", "priority": 1, "jsonPath": _PLATFORM_READY},
    ],
    "DID": [
        {"name": "Number", "type": "string", "jsonPath": ".spec.number"},
        {"name": "Trunk", "type": "string", "jsonPath": ".spec.trunkRef"},
        {"name": "Ready", "type": "string", "jsonPath": _READY},
    ],
    "Carrier": [
        {"name": "Prefixes", "type": "string", "jsonPath": ".spec.prefixes"},
        {"name": "Ready", "type": "string", "jsonPath": _READY},
        {
            "name": "Registered",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Registered")].status',
        },
        {
            "name": "Degraded",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Degraded")].status',
        },
    ],
}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def build_crd(model: type[Resource]) -> dict[str, Any]:
    kind = model.KIND
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{model.PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": model.PLURAL,
                "singular": kind.lower(),
                "shortNames": list(model.SHORT_NAMES),
                "categories": ["trunkline"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [*_COLUMNS[kind], _AGE],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(model),
                                "status": _status_schema(model),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD, as kept in the chart."""
    header = "# Generated by `python -m trunkline.core.crds` from trunkline/core/models.py. Do not edit.\n"
    return {
        f"{model.PLURAL}.{GROUP}.yaml": header + yaml.safe_dump(build_crd(model), sort_keys=False)
        for model in (Trunk, DID, Carrier)
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m trunkline.core.crds OUTPUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Files generated from the models, so they cannot drift: `python -m trunkline.generate [--check]`.

- charts/trunkline/values.yaml and values.schema.json: from `ChartValues` (operator/values.py);
- charts/trunkline/crds/*.yaml: from the resource models (core/crds.py);
- docs/reference.md: every resource field of Trunk, DID and Carrier and every chart value, with its
  default, description and where it applies.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from trunkline.core.crds import render_all, structural
from trunkline.core.models import DID, Carrier, Resource, Trunk
from trunkline.operator.values import APPLIES_TO, ChartValues

ROOT = Path(__file__).resolve().parent.parent
CHART = Path("charts/trunkline")
WIDTH = 110

VALUES_HEADER = """\
# Values of the trunkline chart. GENERATED from operator/values.py (ChartValues) by
# `python -m trunkline.generate`: edit the model, not this file. values.schema.json and
# docs/reference.md come from the same model.
#
# What the chart deploys: the CRDs (crds/), the operator (one replica, --standalone) with its
# ServiceAccount and least-privilege RBAC, and the platform ConfigMap. The OPERATOR then deploys the
# data plane from that ConfigMap: control (Deployment + Service), SIP edge (Deployment, one Service per
# protocol, HPA) and media relay (Deployment or DaemonSet), all owned by the ConfigMap.
"""


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """pydantic's schema with every $ref inlined and titles dropped (helm's validator wants no $defs)."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return _inline({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("title", "$defs"):
            continue
        # property names are data, not keywords: keep them all (a value may be called "title")
        if key == "properties":
            out[key] = {n: _inline(v, defs) for n, v in value.items()}
        else:
            out[key] = _inline(value, defs)
    return out


def values_schema() -> str:
    full = ChartValues.model_json_schema(mode="validation")
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "trunkline chart values"}
    schema.update(_inline(full, full.get("$defs", {})))
    return json.dumps(schema, indent=2) + "\n"


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"{indent}# -- ", subsequent_indent=f"{indent}# ")


def _values_lines(model: BaseModel, dumped: dict[str, Any], indent: str = "") -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        if field.description:
            lines += _comment(field.description, indent)
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            lines += _values_lines(value, dumped[name], indent + "  ")
        else:
            lines.append(f"{indent}{name}: {_scalar(dumped[name])}")
    return lines


def values_yaml() -> str:
    values = ChartValues()
    return VALUES_HEADER + "\n" + "\n".join(_values_lines(values, values.model_dump(mode="json"))) + "\n"


def _models_in(annotation: Any) -> list[tuple[type[BaseModel], bool]]:
    """The models a field's annotation holds, each with whether it is the item of a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, False)]
    in_list = get_origin(annotation) is list
    return [(model, in_list or nested) for arg in get_args(annotation) for model, nested in _models_in(arg)]


def field_defaults(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """path -> default of every optional leaf field (default factories called; the schema omits them)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            out.update(_instance_defaults(default, path))  # a factory's values may differ from the class's
        elif default is not None:
            out[path] = to_jsonable_python(default)
        else:
            for sub, in_list in _models_in(field.annotation):
                out.update(field_defaults(sub, path + "[]" if in_list else path))
    return out


def _instance_defaults(instance: BaseModel, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(instance).model_fields.items():
        value, path = getattr(instance, name), f"{prefix}.{name}"
        if isinstance(value, BaseModel):
            out.update(_instance_defaults(value, path))
        elif value is not None:
            out[path] = to_jsonable_python(value)
        for sub, in_list in _models_in(field.annotation) if not isinstance(value, BaseModel) else []:
            out.update(field_defaults(sub, path + "[]" if in_list else path))
    return out


def _rows(
    schema: dict[str, Any], defaults: dict[str, Any], path: str = "", required: bool = False
) -> list[tuple[str, str, str, str]]:
    """(path, type, default, description) of `schema` and everything below it."""
    kind = schema.get("type", "string" if "enum" in schema else "")
    if "enum" in schema:
        kind = " | ".join(f"`{v}`" for v in schema["enum"])
    default = "required" if required else _scalar(defaults[path]) if path in defaults else ""
    rows = [(path, str(kind), default, schema.get("description", ""))] if path else []
    needed = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        rows += _rows(sub, defaults, f"{path}.{name}" if path else name, name in needed)
    if "items" in schema and schema["items"].get("properties"):
        rows += _rows(schema["items"], defaults, f"{path}[]")[1:]
    return rows


def _table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) if i else f"`{c}`" for i, c in enumerate(row)) + " |" for row in rows]
    return lines


def reference_md() -> str:
    out = [
        "# Reference",
        "",
        "GENERATED by `python -m trunkline.generate` from `core/models.py` and `operator/values.py`;",
        "do not edit. A unit test fails when this file and the models differ.",
        "",
    ]
    kinds: list[type[Resource]] = [Trunk, DID, Carrier]
    for kind in kinds:
        spec = kind.model_fields["spec"].annotation
        assert isinstance(spec, type) and issubclass(spec, BaseModel)
        full = spec.model_json_schema(mode="validation")
        out += [f"## {kind.__name__} (`spec`)", ""]
        rows = _rows(structural(full, full.get("$defs", {})), field_defaults(spec))
        out += _table(rows, ("field", "type", "default", "description"))
        out.append("")
    full = ChartValues.model_json_schema(mode="validation")
    schema = _inline(full, full.get("$defs", {}))
    out += ["## Chart values (`charts/trunkline/values.yaml`)", ""]
    rows = _rows(schema, field_defaults(ChartValues))
    chart_rows = [(*row, APPLIES_TO[row[0].split(".")[0]]) for row in rows]
    out += _table(chart_rows, ("value", "type", "default", "description", "applies to"))
    return "\n".join(out) + "\n"


def generated() -> dict[Path, str]:
    """Every generated file (path relative to the repository root) and its content."""
    files = {
        CHART / "values.yaml": values_yaml(),
        CHART / "values.schema.json": values_schema(),
        Path("docs/reference.md"): reference_md(),
    }
    files.update({CHART / "crds" / name: text for name, text in render_all().items()})
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trunkline.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a checked-in file differs")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        target = args.root / path
        if target.exists() and target.read_text() == text:
            continue
        stale.append(str(path))
        if not args.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    if args.check and stale:
        print("stale, run `python -m trunkline.generate`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CustomResourceDefinition, generated from the typed spec and the installed backends.

Pydantic's JSON Schema is turned into a Kubernetes structural schema: references are
inlined, optional fields lose their null branch, Any-maps keep unknown fields, and the
backend registry adds the `backend` enum and one CEL rule per backend for its precisions.
"""

from __future__ import annotations

from functools import cache
from typing import Any, get_args

import yaml

from modeldeploy import backends
from modeldeploy.spec import (
    API_VERSION,
    DNS_LABEL,
    GROUP,
    INT64_MAX,
    INT64_MIN,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    QUANTIZED_PRECISIONS,
    SHORT_NAME,
    SINGULAR,
    VERSION,
    CalibrationMethod,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    cel,
)

Schema = dict[str, Any]


STRING_CHECKS = ("pattern", "minLength", "maxLength")


class NotStructural(ValueError):
    pass


def structural(node: Schema, definitions: Schema) -> Schema:
    """One node of pydantic's JSON Schema as an OpenAPI v3 structural schema node."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        node = {**definitions[ref.rsplit("/", 1)[1]], **node}
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        branches = [branch for branch in any_of if branch.get("type") != "null"]
        if len(branches) == 1:
            node = {**structural(branches[0], definitions), **node}
        elif sorted(branch.get("type") for branch in branches) == ["integer", "string"]:
            node["x-kubernetes-int-or-string"] = True
            # The string branch's own checks (a quantity's pattern) hold for a string value; the API server applies
            # a pattern to strings only, so an integer still passes.
            (text,) = (branch for branch in branches if branch.get("type") == "string")
            node.update({key: value for key, value in text.items() if key in STRING_CHECKS})
        else:
            raise NotStructural(f"a field may have one type, not {any_of}")

    result: Schema = {}
    for key, value in node.items():
        if key in ("title", "$defs") or (key == "default" and value is None):
            continue
        if key == "const":
            result["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            result["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            result[key] = True
        elif key == "properties":
            result[key] = {name: structural(child, definitions) for name, child in value.items()}
        elif key == "items":
            result[key] = structural(value, definitions)
        elif key == "additionalProperties":
            if value is True:
                result["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                result[key] = structural(value, definitions)
        else:
            result[key] = value
    if result.get("type") == "integer":
        # Bounds at int64's own limits are said as format: int64. The API server holds bounds as float64 and
        # refuses an integer bound it cannot hold exactly (beyond 2^53).
        for bound, limit in (("minimum", INT64_MIN), ("maximum", INT64_MAX)):
            if result.get(bound) == limit:
                del result[bound]
                result["format"] = "int64"
    return result


def model_schema(model: type) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _quoted(values: list[str] | frozenset[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in sorted(values)) + "]"


def _per_backend(registry: dict[str, backends.Backend], listed: Any) -> str:
    return "; ".join(f"{name}: {', '.join(values)}" for name, backend in registry.items() if (values := listed(backend)))


def _add_backend_rules(spec: Schema, registry: dict[str, backends.Backend]) -> None:
    target = spec["properties"]["targets"]["items"]
    target["properties"]["backend"]["enum"] = list(registry)
    # kubectl explain shows what each installed backend takes, where the schema itself cannot say it.
    fields = target["properties"]
    fields["device"]["description"] += " Known devices: " + _per_backend(registry, lambda backend: list(backend.devices))
    fields["options"]["description"] += " Known options: " + _per_backend(registry, lambda backend: [
        field.alias or name for name, field in backend.options.model_fields.items()])
    target_rules = target.setdefault("x-kubernetes-validations", [])
    spec_rules = spec.setdefault("x-kubernetes-validations", [])
    quantized = _quoted(QUANTIZED_PRECISIONS)
    for name, backend in registry.items():
        target_rules.append(
            cel(
                f"self.backend != '{name}' || self.precisions.all(p, p in {_quoted(backend.precisions)})",
                f"backend {name} accepts precisions {', '.join(sorted(backend.precisions))}",
                ".precisions",
            )
        )
        if backend.calibration_methods >= set(get_args(CalibrationMethod)):
            continue
        spec_rules.append(
            cel(
                f"!has(self.calibration) || self.calibration.method in {_quoted(backend.calibration_methods)}"
                f" || !self.targets.exists(t, t.backend == '{name}' && t.precisions.exists(p, p in {quantized}))",
                f"backend {name} calibrates with methods {', '.join(sorted(backend.calibration_methods))}",
                ".calibration.method",
            )
        )


@cache
def resource_schema() -> Schema:
    """The openAPIV3Schema of the ModelDeployment resource."""
    spec = model_schema(ModelDeploymentSpec)
    _add_backend_rules(spec, dict(backends.registry()))
    status = model_schema(ModelDeploymentStatus)
    return {
        "type": "object",
        "description": "A model conversion pipeline: convert, calibrate, compile and measure every target x precision x batch size.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"The API group and version: {API_VERSION}."},
            "kind": {"type": "string", "description": f"The kind: {KIND}."},
            # The API server lets a CRD describe metadata.name (and generateName) only, and refuses even a
            # description of metadata itself; the rule below names metadata.name.
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "description": f"A DNS label of at most {MAX_NAME_LENGTH} characters: the deployment's Jobs "
                        "are named after it.",
                    }
                },
            },
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            cel(
                f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{DNS_LABEL}')",
                f"metadata.name must be a DNS label of at most {MAX_NAME_LENGTH} characters "
                "(Job names are derived from it)",
                ".metadata.name",
            )
        ],
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Targets", "type": "string", "jsonPath": ".status.targets", "description": "Targets finished / total."},
    {"name": "Best", "type": "string", "jsonPath": ".status.bestSummary", "description": "Fastest passing cell."},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status', "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": ["modeldeploy"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": resource_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `modeldeploy crd` from modeldeploy.spec and the installed backends. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)

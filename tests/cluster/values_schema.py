"""Writes charts/modeldeploy/values.schema.json: the chart's own values, and under `config` the operator's
configuration model (modeldeploy.controller.config.OperatorConfig) as pydantic describes it, so that a key the
operator would refuse fails `helm install` instead of the operator's start.

Every object is closed (`additionalProperties: false`): a misspelt value is an error. Run after changing the
values or the operator's configuration model:

    .venv/bin/python tests/cluster/values_schema.py

tests/cluster/test_chart.py fails when the committed file differs from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from modeldeploy.controller.config import OperatorConfig

SCHEMA = Path(__file__).resolve().parents[2] / "charts" / "modeldeploy" / "values.schema.json"
# Set by the chart from its own values: the watched namespaces from watchNamespaces (as --namespace flags), the
# metrics port from metrics.port (the Service and the container port need it too).
SET_BY_THE_CHART = ("namespaces", "metricsPort")

STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
ANY_OBJECT = {"type": "object"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
DNS_LABEL = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}


def closed(properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, **more}


def _without_titles(node: Any) -> Any:
    """pydantic's schema without its generated `title`s (the field names again, capitalised)."""
    if isinstance(node, dict):
        return {key: _without_titles(value) for key, value in node.items()
                if not (key == "title" and isinstance(value, str))}
    if isinstance(node, list):
        return [_without_titles(item) for item in node]
    return node


def operator_config() -> tuple[dict[str, Any], dict[str, Any]]:
    """The `config` value's schema and the definitions it refers to (#/$defs/...)."""
    schema = _without_titles(OperatorConfig.model_json_schema(by_alias=True))
    definitions = schema.pop("$defs")
    for name in SET_BY_THE_CHART:
        del schema["properties"][name]
    schema["description"] = "The operator's configuration (MODELDEPLOY_CONFIG); every key is optional."
    return schema, definitions


def values_schema() -> dict[str, Any]:
    config, definitions = operator_config()
    resources = closed({"requests": STRING_MAP | {"type": "object"}, "limits": STRING_MAP | {"type": "object"}})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the modeldeploy chart",
        **closed({
            "crds": closed({"install": BOOLEAN | {
                "description": "Install and upgrade the ModelDeployment CRD with the release (kept on uninstall)."}}),
            "image": closed({"repository": STRING | {"minLength": 1}, "tag": STRING,
                             "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}),
            "imagePullSecrets": {"type": "array", "items": closed({"name": STRING}, required=["name"])},
            "replicas": {"type": "integer", "minimum": 0},
            "leaderElection": closed({"enabled": BOOLEAN}),
            "watchNamespaces": {"type": "array", "items": DNS_LABEL, "uniqueItems": True,
                                "description": "Namespaces the operator watches, each with a Role; empty: every "
                                "namespace, with a ClusterRole."},
            "serviceAccount": closed({"create": BOOLEAN, "name": STRING, "annotations": STRING_MAP}),
            "rbac": closed({"create": BOOLEAN}),
            "config": config,
            "metrics": closed({
                "port": PORT,
                "service": closed({"enabled": BOOLEAN, "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                                   "annotations": STRING_MAP}),
                "serviceMonitor": closed({"enabled": BOOLEAN, "interval": STRING, "scrapeTimeout": STRING,
                                          "labels": STRING_MAP}),
            }),
            "health": closed({"port": PORT}),
            "resources": resources,
            "podSecurityContext": ANY_OBJECT,
            "securityContext": ANY_OBJECT,
            "logLevel": {"enum": ["info", "debug"]},
            "extraEnv": {"type": "array", "items": ANY_OBJECT | {"required": ["name"]}},
            "podAnnotations": STRING_MAP,
            "podLabels": STRING_MAP,
            "priorityClassName": STRING,
            "nodeSelector": STRING_MAP,
            "tolerations": {"type": "array", "items": ANY_OBJECT},
            "affinity": ANY_OBJECT,
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        }),
        "$defs": definitions,
    }


def render() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"


if __name__ == "__main__":
    SCHEMA.write_text(render())
    sys.stdout.write(f"wrote {SCHEMA}\n")

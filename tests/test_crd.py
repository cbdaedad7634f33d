"""The committed CRD is exactly what the typed spec generates, and it is a valid structural schema."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import celpy
import yaml
from conftest import REPO
from modeldeploy import backends
from modeldeploy.crd import crd, crd_yaml
from modeldeploy.spec import QUANTITY

COMMITTED = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "uniqueItems", "definitions"}


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def test_committed_crd_matches_the_generated_one() -> None:
    assert COMMITTED.read_text() == crd_yaml(), "regenerate with: modeldeploy crd > " + str(COMMITTED.relative_to(REPO))


def test_modeldeploy_crd_prints_it() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "modeldeploy.cli", "crd"], capture_output=True, text=True, check=True
    ).stdout
    assert printed == COMMITTED.read_text()


def test_schema_is_structural() -> None:
    schema = yaml.safe_load(COMMITTED.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in nodes(schema):
        assert not FORBIDDEN & node.keys(), f"{path or '(root)'} uses {FORBIDDEN & node.keys()}"
        assert node.get("additionalProperties") is not False, path
        special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert "type" in node or special, f"{path} has no type"
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path} has no items schema"
        if "properties" in node:
            assert node["type"] == "object", path
            assert set(node.get("required", [])) <= node["properties"].keys(), path
        minimum = node.get("exclusiveMinimum")
        assert minimum is None or isinstance(minimum, bool), f"{path}: exclusiveMinimum must be a boolean in OpenAPI v3.0"
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), f"{path}: list-map keys must be required"


def test_every_cel_rule_compiles_and_lists_are_bounded_for_cost() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    environment = celpy.Environment()
    rules = 0
    for path, node in nodes(schema):
        for rule in node.get("x-kubernetes-validations", []):
            environment.compile(rule["rule"])
            assert rule["message"] and rule.get("fieldPath", ".").startswith("."), path
            rules += 1
        if node.get("type") == "array" and path.startswith(".spec"):
            assert "maxItems" in node, f"{path}: unbounded lists make CEL cost estimates fail"
    assert rules >= 30


def test_resource_names_columns_and_subresources() -> None:
    definition = crd()
    assert definition["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    names = definition["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("ModelDeployment", "modeldeployments", ["mdep"])
    (version,) = definition["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    default_columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert default_columns == ["Phase", "Targets", "Best", "Age"]


def test_backend_enum_and_precision_rules_come_from_the_registry() -> None:
    target = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "targets"
    ]["items"]
    assert target["properties"]["backend"]["enum"] == list(backends.registry())
    rules = " ".join(rule["rule"] for rule in target["x-kubernetes-validations"])
    for name, backend in backends.registry().items():
        assert f"self.backend != '{name}'" in rules
        assert all(f"'{precision}'" in rules for precision in backend.precisions)


def test_status_schema_keeps_what_the_operator_writes() -> None:
    status = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"observedGeneration", "phase", "conditions", "stages", "results", "best", "reportUri"} <= status.keys()
    condition = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"} <= condition.keys()
    result = status["results"]["items"]["properties"]
    assert {"top1", "top5", "throughput", "latencyMs", "artifact", "sha256", "gate"} <= result.keys()
    assert set(result["latencyMs"]["properties"]) == {"mean", "p50", "p90", "p99"}
    covers = result["throughputCovers"]["properties"]
    assert set(covers) == {"devices", "perDevice", "chips", "chip", "cards", "wholeCards", "summary"}



def test_every_integer_is_int64_with_bounds_the_api_server_holds_exactly() -> None:
    """CEL's integers are int64. The API server holds a bound as a float64, and refuses one beyond 2^53."""
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    integers = [(path, node) for path, node in nodes(schema) if node.get("type") == "integer"]
    assert len(integers) >= 20
    for path, node in integers:
        assert node.get("format") == "int64" or {"minimum", "maximum"} <= node.keys(), path
        assert all(abs(node[bound]) <= 2**53 for bound in ("minimum", "maximum") if bound in node), path


def test_every_rule_s_field_path_is_declared_by_its_schema() -> None:
    """The API server refuses a CRD whose rule points its errors at a field the schema does not declare."""
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in nodes(schema):
        for rule in node.get("x-kubernetes-validations", []):
            target = node
            for part in rule.get("fieldPath", "").split(".")[1:]:
                assert part in target.get("properties", {}), f"{path or '(root)'}: {rule['fieldPath']}"
                target = target["properties"][part]


def test_graph_tensor_names_are_safe_in_tool_arguments() -> None:
    source = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["source"]
    name = source["properties"]["inputs"]["items"]["properties"]["name"]
    assert name["pattern"] == source["properties"]["outputs"]["items"]["pattern"] == r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


def test_every_field_has_a_description() -> None:
    """kubectl explain shows each field's description: none may be missing or blank, in the spec or the status.

    metadata is the exception: the API server refuses a CRD that says anything of it but its name's schema, and
    kubectl explain shows ObjectMeta's own description there."""
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = [
        (f"{path}.{name}", child)
        for path, node in nodes(schema)
        for name, child in node.get("properties", {}).items()
        if f"{path}.{name}" != ".metadata"
    ]
    assert set(schema["properties"]["metadata"]) == {"type", "properties"}
    assert len(fields) > 150
    missing = [path for path, field in fields if not str(field.get("description", "")).strip()]
    assert not missing, f"{len(missing)} fields have no description: {', '.join(missing)}"


def test_a_quantity_is_an_integer_or_a_string_of_the_quantity_pattern() -> None:
    """The API server applies a pattern to string values only: 2 and "500m" pass, "two" does not."""
    target = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["targets"]
    resources = target["items"]["properties"]["placement"]["properties"]["resources"]["properties"]
    for kind in ("limits", "requests"):
        assert resources[kind]["additionalProperties"] == {"x-kubernetes-int-or-string": True, "pattern": QUANTITY}

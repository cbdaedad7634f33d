"""The generated CRD on the real API server (v1.36.5): accepted and Established, refusing every bad spec of
tests/test_validation.py that its schema and CEL rules are meant to catch with the field named, defaulting and
pruning as it declares, explained field by field by `kubectl explain`, and listed with its printer columns.

The bad specs are `BAD_SPECS` of tests/test_validation.py, which exercises every CEL rule of the CRD (a test there
says so), and tests/test_toolchain_versions.py's refusals of targets[].toolchain. The other modules' refusals are
the same rules on other documents (test_fuzz_spec's known crashes are BAD_SPECS' shape-beyond-int64, shape-scalar,
warmup-boolean, input-name-newline, aipp-input-not-4d and architecture-args-too-deep; test_expected_figures' are
its expected-* cases), or checks of the backends (AIPP crop, options, devices) that only the operator makes, as
those of `OPERATOR_ONLY` below. An operator-only case is not just assumed: the API server must
admit it, so a check that moves into the CRD moves out of that list.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from modeldeploy.crd import crd as generated_crd
from modeldeploy.planner import plan
from modeldeploy.spec import GROUP, PLURAL, VERSION, ModelDeployment
from modeldeploy.validation import SpecError, load_resource, semantic_errors, with_defaults
from specs import Doc, base, setting
from test_validation import BAD_SPECS

from cluster.control_plane import ApiError, ControlPlane

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
EXAMPLES = REPO / "examples"

# Bad specs the API server admits, and why only the operator (modeldeploy.validation, the backends) refuses them.
BACKEND_DEVICES = "the backend's device table (which chips exist, which precisions each supports) is Python data"
BACKEND_OPTIONS = ("targets[].options is free-form in the CRD (x-kubernetes-preserve-unknown-fields): each "
                   "backend's options model checks it")
OPERATOR_ONLY: dict[str, str] = {
    "bf16-on-ascend310": BACKEND_DEVICES,
    "ascend-without-device": BACKEND_DEVICES,
    "ascend-unknown-device": BACKEND_DEVICES,
    "cpu-backend-with-device": BACKEND_DEVICES,
    "magicmind-unknown-card": BACKEND_DEVICES,
    "ascend-unknown-option": BACKEND_OPTIONS,
    "ascend-option-wrong-type": BACKEND_OPTIONS,
    "small-channel-without-aipp": BACKEND_OPTIONS,
    "aipp-without-preprocess": BACKEND_OPTIONS,
    "aipp-with-float-tensors": BACKEND_OPTIONS,
    "aipp-with-a-float16-input": BACKEND_OPTIONS,
    "aipp-input-not-4d": BACKEND_OPTIONS,
    "ascend-calibration-batch": BACKEND_OPTIONS,
    "magicmind-eqnm-asymmetric": BACKEND_OPTIONS,
    "crop-does-not-fit-input": "comparing the preprocessed image size with the model input's shape per layout is "
                               "more than a CEL rule can say within the cost budget",
    "architecture-args-beyond-int64": "architectureArgs is free-form; the API server reads an integer beyond int64 "
                                      "as a float and stores it, where the model's constructor would get a float",
    "architecture-args-too-deep": "architectureArgs is free-form, and the API server stores JSON nested far deeper "
                                  "than the operator's 32 levels",
}
# Refused before any schema applies: kubectl finds no such version, and says so instead of naming the field.
NAMED_OTHERWISE = {"wrong-api-version": 'no matches for kind "ModelDeployment" in version "modeldeploy.io/v1"'}

# The smallest spec: everything not given is the schema's default or absent.
MINIMAL: Doc = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "ModelDeployment",
    "metadata": {"name": "minimal"},
    "spec": {
        "source": {"format": "onnx", "uri": "s3://models/model.onnx",
                   "inputs": [{"name": "x", "shape": [-1, 4], "layout": "ND"}]},
        "targets": [{"name": "cpu", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [1]}],
        "artifacts": {"uri": "s3://artifacts/minimal"},
    },
}


def _documents() -> dict[str, Doc]:
    documents = {"minimal": MINIMAL, "base": base()}
    for path in [*sorted(EXAMPLES.glob("*.yaml")), EXAMPLES / "cluster" / "quickstart.yaml",
                 *sorted((EXAMPLES / "seeds").glob("*.yaml"))]:
        documents[str(path.relative_to(EXAMPLES))] = yaml.safe_load(path.read_text())
    return documents


DOCUMENTS = _documents()


def schema() -> dict[str, Any]:
    return generated_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def space(control_plane: ControlPlane, crd: str) -> Iterator[str]:
    """One namespace for the module's many applies (the per-test fixture would make one per case)."""
    name = f"crd-{uuid.uuid4().hex[:8]}"
    control_plane.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    try:
        control_plane.api.delete(f"/api/v1/namespaces/{name}")
    except ApiError:
        pass


def apply(control_plane: ControlPlane, namespace: str, document: Doc, *flags: str) -> Any:
    return control_plane.kubectl("apply", "-n", namespace, *flags, "-f", "-", input=json.dumps(document), check=False)


def stored(control_plane: ControlPlane, namespace: str, name: str) -> Doc | None:
    try:
        return control_plane.api.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")
    except ApiError as err:
        if err.status == 404:
            return None
        raise


def delete(control_plane: ControlPlane, namespace: str, name: str) -> None:
    control_plane.kubectl("delete", "-n", namespace, f"{PLURAL}.{GROUP}", name, "--ignore-not-found", "--wait=true")


def names_field(message: str, path: str) -> bool:
    """Whether kubectl's message names `path` as a field of its own (not a longer path it begins)."""
    return re.search(r"(?<![\w.\]])" + re.escape(path) + r'(?=[:"]|\s|$)', message) is not None


# ---------------------------------------------------------------- 1. accepted


def test_the_generated_crd_is_accepted_established_and_served_as_generated(control_plane: ControlPlane,
                                                                            crd: str) -> None:
    """Accepted means the structural schema is valid and every CEL rule compiled within the cost budget; what
    the server keeps is exactly what `modeldeploy crd` generated, so nothing was dropped on the way."""
    served = control_plane.api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
    conditions = {c["type"]: c["status"] for c in served["status"]["conditions"]}
    assert conditions["Established"] == conditions["NamesAccepted"] == "True"
    (version,) = served["spec"]["versions"]
    assert version["schema"]["openAPIV3Schema"] == schema()
    assert version["additionalPrinterColumns"] == generated_crd()["spec"]["versions"][0]["additionalPrinterColumns"]


# ---------------------------------------------------------------- 2. bad specs refused, the field named


# tests/test_toolchain_versions.py's refusals of targets[].toolchain, on the base spec's targets.
TOOLCHAIN_CASES: list[tuple[str, Callable[[Doc], None], str]] = [
    ("toolchain-leading-v", setting("spec.targets[2].toolchain", {"version": "v6.0.RC1"}),
     "spec.targets[2].toolchain.version"),
    ("toolchain-without-version", setting("spec.targets[2].toolchain", {}), "spec.targets[2].toolchain.version"),
    ("toolchain-not-a-cann-release", setting("spec.targets[2].toolchain", {"version": "6.0"}),
     "spec.targets[2].toolchain.version"),
    ("toolchain-on-a-cpu-backend", setting("spec.targets[0].toolchain", {"version": "2026.4.0"}),
     "spec.targets[0].toolchain.version"),
]
OPERATOR_ONLY |= {
    "toolchain-not-a-cann-release": "each backend's release pattern (CANN's 6.0.RC1, MagicMind's 1.7.0) is the "
                                    "backend's; the CRD checks only the form every release shares",
    "toolchain-on-a-cpu-backend": "whether a backend has releases at all is the backend's",
}
ALL_CASES = [(name, change, path) for name, change, path, _ in BAD_SPECS] + TOOLCHAIN_CASES
CASES = [pytest.param(change, path, id=name) for name, change, path in ALL_CASES]


def test_every_operator_only_case_is_a_bad_spec() -> None:
    assert set(OPERATOR_ONLY) | set(NAMED_OTHERWISE) <= {name for name, *_ in ALL_CASES}


@pytest.mark.parametrize(("change", "path"), CASES)
def test_a_bad_spec_is_refused_by_kubectl_apply_naming_the_field(
    control_plane: ControlPlane, space: str, request: pytest.FixtureRequest, change: Callable[[Doc], None], path: str
) -> None:
    case = request.node.callspec.id
    document = base()
    change(document)
    name = document["metadata"]["name"]
    result = apply(control_plane, space, document)
    if case in OPERATOR_ONLY:
        try:
            assert result.returncode == 0, f"the API server refuses it now; take it out of OPERATOR_ONLY:\n{result.stderr}"
        finally:
            delete(control_plane, space, name)
        with pytest.raises(SpecError) as refused:
            load_resource(document)
        assert path in {error.path for error in refused.value.errors}
        return
    assert result.returncode != 0, f"admitted: {result.stdout}"
    assert stored(control_plane, space, name) is None
    if case in NAMED_OTHERWISE:
        assert NAMED_OTHERWISE[case] in result.stderr, result.stderr
    else:
        assert names_field(result.stderr, path), f"{path} is not named in:\n{result.stderr}"


# ---------------------------------------------------------------- 3. defaults, pruning, and the operator's parser


def _plan_keys(document: Doc) -> list[tuple[str, str]]:
    return [(task.name, task.key) for task in plan(load_resource(document).spec).tasks]


@pytest.mark.parametrize("document", list(DOCUMENTS.values()), ids=list(DOCUMENTS))
def test_the_schema_defaults_are_applied_and_the_operator_plans_the_object_read_back_alike(
    control_plane: ControlPlane, space: str, document: Doc
) -> None:
    name = document["metadata"]["name"]
    result = apply(control_plane, space, document)
    assert result.returncode == 0, result.stderr
    try:
        back = stored(control_plane, space, name)
    finally:
        delete(control_plane, space, name)
    assert back is not None
    # Exactly the defaults modeldeploy.validation fills in as the API server would, no more and no fewer.
    assert back["spec"] == with_defaults(copy.deepcopy(document["spec"]), schema()["properties"]["spec"])
    written = document["spec"]["source"]["inputs"]
    assert [item["dtype"] for item in back["spec"]["source"]["inputs"]] == [
        item.get("dtype", "float32") for item in written]
    # What the operator does with the object the API server hands it (handlers._validated's fast path, and the
    # full validation), to the same plan as from the document as written.
    parsed = ModelDeployment.model_validate({key: back[key] for key in ("apiVersion", "kind", "metadata", "spec")})
    assert semantic_errors(parsed.spec) == []
    assert [(task.name, task.key) for task in plan(parsed.spec).tasks] == _plan_keys(document)
    assert _plan_keys(back) == _plan_keys(document)


def test_defaults_of_the_minimal_spec(control_plane: ControlPlane, space: str) -> None:
    result = apply(control_plane, space, MINIMAL)
    assert result.returncode == 0, result.stderr
    try:
        back = stored(control_plane, space, "minimal")
    finally:
        delete(control_plane, space, "minimal")
    assert back is not None
    assert back["spec"]["source"] == {
        **MINIMAL["spec"]["source"],
        "inputs": [{"name": "x", "shape": [-1, 4], "layout": "ND", "dtype": "float32"}],
        "randomWeights": False, "simplify": False, "simplifier": "onnxslim", "weightsLabelOffset": 0,
    }
    assert back["spec"]["artifacts"] == {"uri": "s3://artifacts/minimal", "onDelete": "Retain"}
    # Defaults the planner computes (opset, the measurement budget) are not the schema's: absent from the object.
    assert "opset" not in back["spec"]["source"] and "performance" not in back["spec"]


def test_an_unknown_field_is_refused_by_default_and_pruned_when_kubectl_does_not_validate(
    control_plane: ControlPlane, space: str
) -> None:
    document = copy.deepcopy(MINIMAL)
    document["metadata"]["name"] = "pruned"
    document["spec"]["source"]["colour"] = "red"
    document["spec"]["targets"][0]["batchSize"] = 4
    # Kept: the free-form fields preserve unknown fields, and the backend's options model judges them.
    document["spec"]["targets"][0]["options"] = {"intraOpThreads": 2, "futureKnob": {"level": 1}}
    document["status"] = {"phase": "Succeeded"}

    strict = apply(control_plane, space, document)  # kubectl's default: --validate=strict
    assert strict.returncode != 0
    assert 'unknown field "spec.source.colour"' in strict.stderr
    assert 'unknown field "spec.targets[0].batchSize"' in strict.stderr
    assert stored(control_plane, space, "pruned") is None

    for flags, warned in ((("--validate=warn",), True), (("--validate=false",), False)):
        result = apply(control_plane, space, document, *flags)
        assert result.returncode == 0, result.stderr
        assert ('Warning: unknown field "spec.source.colour"' in result.stderr) is warned, result.stderr
        assert ('Warning: unknown field "spec.targets[0].batchSize"' in result.stderr) is warned, result.stderr
        try:
            back = stored(control_plane, space, "pruned")
        finally:
            delete(control_plane, space, "pruned")
        assert back is not None
        assert "colour" not in back["spec"]["source"]
        assert "batchSize" not in back["spec"]["targets"][0]
        assert back["spec"]["targets"][0]["options"] == {"intraOpThreads": 2, "futureKnob": {"level": 1}}
        assert "status" not in back, "status is the status subresource's: a create does not set it"
        expected = copy.deepcopy(MINIMAL)
        expected["spec"]["targets"][0]["options"] = dict(back["spec"]["targets"][0]["options"])
        assert back["spec"] == with_defaults(expected["spec"], schema()["properties"]["spec"])
        # What the CRD preserves the operator judges: the backend knows no futureKnob.
        with pytest.raises(SpecError) as refused:
            load_resource(back)
        assert "spec.targets[0].options.futureKnob" in {error.path for error in refused.value.errors}
        # Without it, the pruned object plans as the document without the fields the server dropped.
        del back["spec"]["targets"][0]["options"]["futureKnob"]
        del expected["spec"]["targets"][0]["options"]["futureKnob"]
        assert _plan_keys(back) == _plan_keys(expected)


# ---------------------------------------------------------------- 4. kubectl explain and kubectl get


def _explained_fields(text: str) -> dict[str, str]:
    """The FIELDS section of `kubectl explain`: each field's name and its description."""
    fields: dict[str, str] = {}
    current = None
    for line in text.split("FIELDS:", 1)[1].splitlines():
        field = re.match(r"^  (\w+)\t<", line)
        if field:
            current = field.group(1)
            fields[current] = ""
        elif current and line.startswith("    "):
            fields[current] += " " + line.strip()
        elif current and line.startswith("  enum: "):
            continue
    return {name: " ".join(description.split()) for name, description in fields.items()}


def _node(path: str) -> dict[str, Any]:
    node = schema()
    for part in path.split("."):
        node = node["properties"][part]
        if node.get("type") == "array":
            node = node["items"]
    return node


@pytest.mark.parametrize("path", ["spec.targets", "spec.targets.placement", "spec.targets.dynamicBatch",
                                  "spec.source", "spec.dataset.preprocess", "status", "status.results"])
def test_kubectl_explain_describes_every_field(control_plane: ControlPlane, crd: str, path: str) -> None:
    out = control_plane.kubectl("explain", f"modeldeployment.{path}").stdout
    explained = _explained_fields(out)
    properties = _node(path)["properties"]
    assert set(explained) == set(properties)
    for name, description in explained.items():
        assert description, f"{path}.{name} has no description in kubectl explain"
        assert description == " ".join(properties[name]["description"].split()), f"{path}.{name}"


def test_kubectl_explain_recursive_lists_every_field(control_plane: ControlPlane, crd: str) -> None:
    out = control_plane.kubectl("explain", "modeldeployment", "--recursive").stdout
    paths: set[str] = set()
    stack: list[str] = []
    for line in out.split("FIELDS:", 1)[1].splitlines():
        field = re.match(r"^( +)(\w+)\t<", line)
        if field is None:
            continue
        depth = len(field.group(1)) // 2 - 1
        del stack[depth:]
        stack.append(field.group(2))
        paths.add(".".join(stack))

    def declared(node: dict[str, Any], prefix: str) -> Iterator[str]:
        node = node.get("items", node)
        for name, child in node.get("properties", {}).items():
            yield prefix + name
            yield from declared(child, prefix + name + ".")

    ours = {path for path in declared(schema(), "") if not path.startswith("metadata")}
    assert ours <= paths, sorted(ours - paths)
    assert {path for path in paths if path.split(".")[0] in ("spec", "status")} == {
        path for path in ours if path.split(".")[0] in ("spec", "status")}


def test_kubectl_get_shows_the_printer_columns(control_plane: ControlPlane, space: str) -> None:
    document = copy.deepcopy(MINIMAL)
    document["metadata"]["name"] = "columns"
    assert apply(control_plane, space, document).returncode == 0
    try:
        status = {"status": {
            "phase": "Running", "targets": "0/1", "bestSummary": "cpu: fp32 bs1 812/s",
            "conditions": [{"type": "Ready", "status": "False", "reason": "Reconciling", "message": "2/5 stages done",
                            "lastTransitionTime": "2026-12-07T12:00:00Z", "observedGeneration": 1}],
        }}
        control_plane.kubectl("patch", "-n", space, "mdep", "columns", "--subresource=status", "--type=merge",
                              "-p", json.dumps(status))
        # The main resource ignores status: only the subresource writes it.
        control_plane.kubectl("patch", "-n", space, "mdep", "columns", "--type=merge",
                              "-p", json.dumps({"status": {"phase": "Failed"}}))
        table = [line.split() for line in control_plane.kubectl("get", "mdep", "-n", space).stdout.splitlines()]
        assert table[0] == ["NAME", "PHASE", "TARGETS", "BEST", "AGE"]
        (row,) = [line for line in table[1:] if line[0] == "columns"]
        assert row[:7] == ["columns", "Running", "0/1", "cpu:", "fp32", "bs1", "812/s"]
        wide = control_plane.kubectl("get", "mdep", "columns", "-n", space, "-o", "wide").stdout.splitlines()
        assert wide[0].split() == ["NAME", "PHASE", "TARGETS", "BEST", "READY", "REASON", "AGE"]
        assert wide[1].split()[:9] == ["columns", "Running", "0/1", "cpu:", "fp32", "bs1", "812/s", "False",
                                       "Reconciling"]
    finally:
        delete(control_plane, space, "columns")


def test_the_status_the_operator_writes_is_kept_whole(control_plane: ControlPlane, space: str) -> None:
    """The API server prunes what the status schema does not declare: every field the reconciler writes (see
    controller/reconcile.py) must come back as written through the status subresource."""
    document = copy.deepcopy(MINIMAL)
    document["metadata"]["name"] = "status"
    assert apply(control_plane, space, document).returncode == 0
    cell = {
        "target": "npu", "backend": "ascend", "device": "Ascend310", "precision": "int8", "batchSize": 8,
        "top1": 0.75, "top5": 0.92, "throughput": 2690.5, "latencyMs": {"mean": 2.9, "p50": 2.8, "p90": 3.1, "p99": 3.4},
        "artifact": "s3://artifacts/tasks/ab/model.om", "sha256": "0" * 64, "drop": 0.004,
        "expected": {"top1": 0.76, "throughput": 2600.0}, "ratio": {"top1": 0.987, "throughput": 1.035},
        "gate": "Passed", "gateMessage": "within 0.01 of the reference",
        "toolchain": {"expected": "6.0.rc1", "actual": "6.0.rc1", "match": True},
        "throughputCovers": {"devices": 4, "perDevice": [{"device": n, "throughput": 672.6} for n in range(4)],
                             "chips": 4, "chip": "Ascend310", "cards": 1, "wholeCards": True,
                             "summary": "sum of 4 devices (4 Ascend310 chips, 1 whole card)"},
    }
    status = {
        "observedGeneration": 1, "phase": "Succeeded", "targets": "1/1",
        "bestSummary": "npu: int8 bs8 2690/s", "reportUri": "s3://artifacts/tasks/cd/report.html",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "1 cells measured",
                        "lastTransitionTime": "2026-12-07T12:00:00Z", "observedGeneration": 1}],
        "stages": [{"name": "evaluate npu/int8/bs8", "kind": "evaluate", "key": "ab", "phase": "Succeeded",
                    "job": "status-evaluate-ab", "startTime": "2026-12-07T11:00:00Z",
                    "completionTime": "2026-12-07T11:10:00Z", "message": "done", "attempts": 2}],
        "results": [cell],
        "best": [{"target": "npu", "precision": "int8", "batchSize": 8, "throughput": 2690.5, "top1": 0.75}],
    }
    try:
        control_plane.kubectl("patch", "-n", space, "mdep", "status", "--subresource=status", "--type=merge",
                              "-p", json.dumps({"status": status}))
        back = stored(control_plane, space, "status")
    finally:
        delete(control_plane, space, "status")
    assert back is not None
    assert back["status"] == status
    assert ModelDeployment.model_validate(
        {key: back[key] for key in ("apiVersion", "kind", "metadata", "spec", "status")}).status is not None

"""Bad specs are rejected with every error at once, each naming its field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from modeldeploy.crd import resource_schema
from modeldeploy.validation import FieldError, SpecError, load_documents, load_resource
from specs import Doc, base, both, removing, setting

MLU = "spec.targets[3]"
NPU = "spec.targets[2]"



def nested_lists(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# (id, change, field path of the expected error, words its message contains)
BAD_SPECS: list[tuple[str, Callable[[Doc], None], str, str]] = [
    ("batch-sizes-wrong-type", setting("spec.targets[0].batchSizes", "eight"), "spec.targets[0].batchSizes",
     "must be a list"),
    ("iterations-wrong-type", setting("spec.performance.iterations", "many"), "spec.performance.iterations",
     "must be an integer"),
    ("unknown-backend", setting("spec.targets[0].backend", "tensorrt"), "spec.targets[0].backend",
     "unknown backend 'tensorrt'"),
    ("precision-not-in-onnxruntime", setting("spec.targets[1].precisions", ["fp32", "fp16"]),
     "spec.targets[1].precisions", "backend onnxruntime accepts precisions fp32, int8"),
    ("precision-not-in-openvino", setting("spec.targets[0].precisions", ["int16"]), "spec.targets[0].precisions",
     "backend openvino accepts"),
    ("precision-not-in-ascend", setting(f"{NPU}.precisions", ["int16"]), f"{NPU}.precisions",
     "backend ascend accepts"),
    ("precision-not-in-magicmind", setting(f"{MLU}.precisions", ["bf16"]), f"{MLU}.precisions",
     "backend magicmind accepts"),
    ("precision-unknown", setting("spec.targets[0].precisions", ["int4"]), "spec.targets[0].precisions[0]",
     "must be one of"),
    ("bf16-on-ascend310", both(setting(f"{NPU}.device", "Ascend310"), setting(f"{NPU}.precisions", ["bf16"])),
     f"{NPU}.precisions[0]", "Ascend310 does not support bf16"),
    ("batch-size-zero", setting("spec.targets[0].batchSizes", [0, 8]), "spec.targets[0].batchSizes[0]",
     "at least 1"),
    ("negative-shape", setting("spec.source.inputs[0].shape", [-1, 3, -32, 32]), "spec.source.inputs[0].shape",
     "must be positive"),
    ("zero-shape", setting("spec.source.inputs[0].shape", [-1, 0, 32, 32]), "spec.source.inputs[0].shape",
     "must be positive"),
    ("dynamic-axis-not-first", setting("spec.source.inputs[0].shape", [1, 3, -1, 32]),
     "spec.source.inputs[0].shape", "only the first (batch) dimension"),
    ("duplicate-input-names", setting("spec.source.inputs", [{"name": "x", "shape": [-1, 3, 32, 32]},
                                                             {"name": "x", "shape": [-1, 4]}]),
     "spec.source.inputs[1]", "duplicate entry"),
    ("pytorch-without-weights", removing("spec.source.weights"), "spec.source.weights", "needs weights"),
    ("pytorch-without-architecture", removing("spec.source.architecture"), "spec.source.architecture",
     "needs an architecture"),
    ("random-weights-and-weights", setting("spec.source.randomWeights", True), "spec.source.randomWeights",
     "excludes weights"),
    ("random-weights-with-accuracy", both(removing("spec.source.weights"), setting("spec.source.randomWeights", True)),
     "spec.accuracy", "randomly initialised"),
    ("onnx-without-uri", both(setting("spec.source.format", "onnx"),
                              removing("spec.source.architecture", "spec.source.weights")),
     "spec.source.uri", "needs uri"),
    ("onnx-with-architecture", both(setting("spec.source.format", "onnx"), setting("spec.source.uri", "m.onnx"),
                                    removing("spec.source.weights")),
     "spec.source.architecture", "applies only to a pytorch source"),
    ("onnx-with-weights", both(setting("spec.source.format", "onnx"), setting("spec.source.uri", "m.onnx"),
                               removing("spec.source.architecture")),
     "spec.source.weights", "use uri"),
    ("pytorch-with-uri", setting("spec.source.uri", "model.onnx"), "spec.source.uri", "takes weights, not uri"),
    ("onnx-random-weights", both(setting("spec.source.format", "onnx"), setting("spec.source.uri", "m.onnx"),
                                 removing("spec.source.architecture", "spec.source.weights", "spec.accuracy"),
                                 setting("spec.source.randomWeights", True)),
     "spec.source.randomWeights", "only to a pytorch source"),
    ("code-without-python-architecture", setting("spec.source.code", "s3://code/net.py"), "spec.source.code",
     "python:<module>:<callable>"),
    ("architecture-malformed", setting("spec.source.architecture", "resnet50"), "spec.source.architecture",
     "must be timm:<name>"),
    ("weights-sha256-malformed", setting("spec.source.sha256", "abc"), "spec.source.sha256", "64 lowercase hex"),
    ("opset-too-old", setting("spec.source.opset", 5), "spec.source.opset", "at least 7"),
    ("calibration-without-dataset", removing("spec.dataset", "spec.accuracy", "spec.targets[0].precisions[1]",
                                             "spec.targets[1].precisions[1]", f"{NPU}.precisions[1]",
                                             f"{MLU}.precisions[1]", f"{NPU}.options"),
     "spec.calibration", "needs a dataset"),
    ("int8-without-dataset", removing("spec.dataset", "spec.accuracy", "spec.calibration", f"{NPU}.options"),
     "spec.dataset", "add a dataset"),
    ("calibration-samples-over-limit", setting("spec.calibration.samples", 5000), "spec.calibration.samples",
     "must not exceed dataset.limit"),
    ("calibration-method-openvino", setting("spec.calibration.method", "entropy"), "spec.calibration.method",
     "backend openvino calibrates with methods auto, minmax"),
    ("calibration-method-ascend", setting("spec.calibration.method", "minmax"), "spec.calibration.method",
     "backend ascend calibrates with methods auto"),
    ("calibration-method-magicmind", setting("spec.calibration.method", "percentile"), "spec.calibration.method",
     "backend magicmind calibrates"),
    ("duplicate-target-names", setting("spec.targets[1].name", "cpu"), "spec.targets[1]", "duplicate entry"),
    ("duplicate-precisions", setting("spec.targets[0].precisions", ["fp32", "fp32"]),
     "spec.targets[0].precisions[1]", "duplicate entry"),
    ("target-name-not-dns", setting("spec.targets[0].name", "CPU_1"), "spec.targets[0].name", "DNS label"),
    ("batch-sizes-and-dynamic", setting("spec.targets[0].dynamicBatch", {"min": 1, "max": 8}),
     "spec.targets[0].batchSizes", "exactly one of batchSizes or dynamicBatch"),
    ("neither-batch-sizes-nor-dynamic", removing("spec.targets[0].batchSizes"), "spec.targets[0].batchSizes",
     "exactly one of batchSizes or dynamicBatch"),
    ("dynamic-min-over-max", setting(f"{MLU}.dynamicBatch", {"min": 32, "max": 16}), f"{MLU}.dynamicBatch.min",
     "min must not exceed max"),
    ("dynamic-evaluate-outside", setting(f"{MLU}.dynamicBatch.evaluate", [1, 64]), f"{MLU}.dynamicBatch.evaluate",
     "within [min, max]"),
    ("field-typo", both(removing("spec.targets[0].batchSizes"), setting("spec.targets[0].batchSize", [1])),
     "spec.targets[0].batchSize", "unknown field (did you mean 'batchSizes'?)"),
    ("missing-source", removing("spec.source"), "spec.source", "is required"),
    ("wrong-api-version", setting("apiVersion", "modeldeploy.io/v1"), "apiVersion", "must be one of"),
    ("name-too-long", setting("metadata.name", "a" * 50), "metadata.name", "at most 40 characters"),
    ("ascend-without-device", removing(f"{NPU}.device"), f"{NPU}.device", "needs a device"),
    ("ascend-unknown-device", setting(f"{NPU}.device", "Ascend999"), f"{NPU}.device", "unknown ascend device"),
    ("cpu-backend-with-device", setting("spec.targets[0].device", "Ascend310P3"), "spec.targets[0].device",
     "takes no device"),
    ("ascend-unknown-option", setting(f"{NPU}.options.precisionModeV3", "x"), f"{NPU}.options.precisionModeV3",
     "unknown field"),
    ("ascend-option-wrong-type", setting(f"{NPU}.options.aipp", "yes please"), f"{NPU}.options.aipp",
     "must be true or false"),
    ("small-channel-without-aipp", setting(f"{NPU}.options", {"enableSmallChannel": True}),
     f"{NPU}.options.enableSmallChannel", "only with static AIPP"),
    ("aipp-without-preprocess", removing("spec.dataset.preprocess"), f"{NPU}.options.aipp", "add dataset.preprocess"),
    ("aipp-with-float-tensors", setting("spec.dataset", {"kind": "tensors", "uri": "s3://data/tensors/"}),
     f"{NPU}.options.aipp", "a tensors dataset is already float tensors"),
    ("aipp-with-a-float16-input", setting("spec.source.inputs[0].dtype", "float16"), f"{NPU}.options.aipp",
     "aipp replaces a float32 image input, but input 'input' is float16"),
    ("ascend-calibration-batch", setting(f"{NPU}.options.calibrationBatchSize", 0),
     f"{NPU}.options.calibrationBatchSize", "must be at least 1 (got 0)"),
    ("magicmind-unknown-card", setting(f"{MLU}.device", "MLU290-M5"), f"{MLU}.device", "unknown magicmind device"),
    ("magicmind-eqnm-asymmetric", setting(f"{MLU}.options", {"calibrationAlgorithm": "eqnm",
                                                            "activationQuantAlgo": "asymmetric"}),
     f"{MLU}.options.calibrationAlgorithm", "only with symmetric"),
    ("crop-does-not-fit-input", setting("spec.dataset.preprocess.crop", 224), "spec.dataset.preprocess.crop",
     "produces 224x224 images but the model input 'input' is 32x32"),
    ("mean-std-lengths", setting("spec.dataset.preprocess.std", [0.25]), "spec.dataset.preprocess.std",
     "same number of channels"),
    ("crop-larger-than-resize", both(setting("spec.dataset.preprocess.resize", 16)), "spec.dataset.preprocess.crop",
     "must not be larger than resize"),
    ("std-zero", setting("spec.dataset.preprocess.std", [0.25, 0, 0.25]), "spec.dataset.preprocess.std[1]",
     "greater than 0"),
    ("dataset-without-uri", removing("spec.dataset.uri"), "spec.dataset.uri", "needs uri"),
    ("digits-with-uri", setting("spec.dataset.kind", "digits"), "spec.dataset.uri", "take no uri"),
    ("digits-with-resize", both(setting("spec.dataset.kind", "digits"), removing("spec.dataset.uri")),
     "spec.dataset.preprocess", "resize and crop do not apply"),
    ("imagenet-without-labels", setting("spec.dataset.kind", "imagenet"), "spec.dataset.labels", "needs labels"),
    ("tensors-with-preprocess", setting("spec.dataset.kind", "tensors"), "spec.dataset.preprocess",
     "already preprocessed"),
    ("accuracy-on-synthetic", both(setting("spec.dataset.kind", "synthetic"),
                                   removing("spec.dataset.uri", "spec.dataset.preprocess", f"{NPU}.options")),
     "spec.accuracy", "labelled dataset"),
    ("declared-without-numbers", setting("spec.accuracy.reference", "declared"), "spec.accuracy.declared",
     "needs the declared numbers"),
    ("declared-numbers-with-source", setting("spec.accuracy.declared", {"top1": 0.7}), "spec.accuracy.declared",
     "only with reference: declared"),
    ("declared-lacks-metric", both(setting("spec.accuracy.reference", "declared"),
                                   setting("spec.accuracy.declared", {"top5": 0.9})),
     "spec.accuracy.declared", "must include the gate's metric"),
    ("declared-as-percent", both(setting("spec.accuracy.reference", "declared"),
                                 setting("spec.accuracy.declared", {"top1": 78.55})),
     "spec.accuracy.declared.top1", "at most 1"),
    ("max-drop-negative", setting("spec.accuracy.maxDrop", -0.1), "spec.accuracy.maxDrop", "at least 0"),
    ("relative-drop-over-one", both(setting("spec.accuracy.dropMode", "relative"),
                                    setting("spec.accuracy.maxDrop", 2)),
     "spec.accuracy.maxDrop", "must not exceed 1"),
    ("artifacts-http", setting("spec.artifacts.uri", "http://minio/bucket"), "spec.artifacts.uri",
     "s3://bucket/prefix or file:///path"),
    ("iterations-and-duration", setting("spec.performance.durationSeconds", 5), "spec.performance.durationSeconds",
     "not both"),
    ("resource-quantity", setting("spec.targets[0].placement", {"resources": {"limits": {"cpu": "two"}}}),
     "spec.targets[0].placement.resources.limits.cpu", "Kubernetes quantity"),
    ("toleration-effect", setting("spec.targets[0].placement", {"tolerations": [{"effect": "Sometimes"}]}),
     "spec.targets[0].placement.tolerations[0].effect", "must be one of"),
    ("env-name", setting("spec.targets[0].placement", {"env": {"1ST": "x"}}),
     "spec.targets[0].placement.env", "environment variable names are letters"),
    ("env-credentials", setting("spec.targets[0].placement", {"env": {"AWS_SECRET_ACCESS_KEY": "x"}}),
     "spec.targets[0].placement.env", "store credentials and endpoints come from artifacts"),
    # The CRD's types, strictly: what the API server would refuse is refused here too.
    ("warmup-boolean", setting("spec.performance.warmup", True), "spec.performance.warmup",
     "must be an integer (got True)"),
    ("iterations-numeric-string", setting("spec.performance.iterations", "50"), "spec.performance.iterations",
     "must be an integer (got '50')"),
    ("simplify-string", setting("spec.source.simplify", "yes"), "spec.source.simplify", "must be true or false"),
    ("mean-boolean", setting("spec.dataset.preprocess.mean", [True, 0.5, 0.5]), "spec.dataset.preprocess.mean[0]",
     "must be a number"),
    # Integers are int64, as CEL's are.
    ("shape-beyond-int64", setting("spec.source.inputs[0].shape", [-1, 3, 2**64, 32]), "spec.source.inputs[0].shape[2]",
     "must be at most 9223372036854775807 (got an integer of 65 bits)"),
    ("limit-beyond-int64", setting("spec.dataset.limit", 2**63), "spec.dataset.limit", "must be at most"),
    ("num-classes-beyond-int64", setting("spec.source.numClasses", 10**30), "spec.source.numClasses", "must be at most"),
    ("architecture-args-beyond-int64", setting("spec.source.architectureArgs", {"width": 2**64}),
     "spec.source.architectureArgs", "holds an integer outside the 64-bit range"),
    ("architecture-args-too-deep", setting("spec.source.architectureArgs", {"layers": nested_lists(40)}),
     "spec.source.architectureArgs", "nests deeper than 32 levels"),
    # A list given a scalar, where CEL rules iterate over the list.
    ("shape-scalar", setting("spec.source.inputs[0].shape", 5), "spec.source.inputs[0].shape", "must be a list (got 5)"),
    ("precisions-scalar", setting("spec.targets[0].precisions", "fp32"), "spec.targets[0].precisions",
     "must be a list"),
    ("evaluate-scalar", setting(f"{MLU}.dynamicBatch.evaluate", 8), f"{MLU}.dynamicBatch.evaluate", "must be a list"),
    ("input-name-newline", setting("spec.source.inputs[0].name", "\n"), "spec.source.inputs[0].name",
     "must be a graph tensor name"),
    ("input-name-separators", setting("spec.source.inputs[0].name", "x:1;y"), "spec.source.inputs[0].name",
     "must be a graph tensor name"),
    ("output-name-path", setting("spec.source.outputs", ["../logits"]), "spec.source.outputs[0]",
     "must be a graph tensor name"),
    ("aipp-input-not-4d", setting("spec.source.inputs[0].shape", [-1, 32, 32]), f"{NPU}.options",
     "aipp feeds the model one image per sample, so its input 'input' needs 4 dimensions"),
    ("classifier-without-label-offset", setting("spec.source.classifier", ["fc"]), "spec.source.classifier",
     "it needs weightsLabelOffset"),
    ("label-offset-without-weights", both(setting("spec.source.weightsLabelOffset", 1),
                                          setting("spec.source.randomWeights", True),
                                          removing("spec.source.weights", "spec.accuracy")),
     "spec.source.weightsLabelOffset", "applies only to a pytorch source's weights"),
    ("simplifier-without-simplify", setting("spec.source.simplifier", "onnxsim"), "spec.source.simplifier",
     "applies only with simplify: true"),
    ("calibration-files-without-select", setting("spec.calibration", {"samples": 1, "files": ["a.png"]}),
     "spec.calibration.files", "for select: files only"),
    ("calibration-select-files-without-files", setting("spec.calibration.select", "files"), "spec.calibration.files",
     "select: files needs files"),
    ("calibration-samples-not-the-files",
     setting("spec.calibration", {"samples": 64, "select": "files", "files": ["a.png"]}),
     "spec.calibration.samples", "samples must be the number of files"),
    ("image-folder-of-cifar", setting("spec.dataset.folderLayout", "imageFolder"), "spec.dataset.folderLayout",
     "a layout of imagenet datasets"),
    ("image-folder-with-labels", both(setting("spec.dataset.kind", "imagenet"),
                                      setting("spec.dataset.labels", "s3://data/val_label.txt"),
                                      setting("spec.dataset.folderLayout", "imageFolder")),
     "spec.dataset.labels", "the class folders are the labels"),
    ("expected-accuracy-unknown-target",
     setting("spec.accuracy.expected", [{"target": "gpu", "precision": "fp32", "top1": 0.8}]),
     "spec.accuracy.expected", "accuracy.expected names a target that is not in targets"),
    ("expected-accuracy-precision-not-on-its-target",
     setting("spec.accuracy.expected", [{"target": "npu", "precision": "fp32", "top1": 0.8}]),
     "spec.accuracy.expected", "accuracy.expected names a precision its target does not measure"),
    ("expected-accuracy-batch-size-not-evaluated",
     setting("spec.accuracy.expected", [{"precision": "fp16", "batchSize": 8, "top1": 0.8}]),
     "spec.accuracy.expected", "accuracy.expected names a batchSize its target does not evaluate"),
    ("expected-accuracy-without-figures", setting("spec.accuracy.expected", [{"precision": "fp32"}]),
     "spec.accuracy.expected[0].top1", "needs top1 or top5"),
    ("expected-accuracy-as-percent", setting("spec.accuracy.expected", [{"precision": "fp32", "top1": 75.58}]),
     "spec.accuracy.expected[0].top1", "at most 1"),
    ("expected-accuracy-lacks-metric", both(setting("spec.accuracy.reference", "declared"),
                                            setting("spec.accuracy.declared", {"top1": 0.8}),
                                            setting("spec.accuracy.expected", [{"precision": "int8", "top5": 0.9}])),
     "spec.accuracy.expected", "every expected accuracy must include the gate's metric"),
    ("expected-accuracy-repeated",
     setting("spec.accuracy.expected", [{"precision": "int8", "top1": 0.8}, {"precision": "int8", "top1": 0.7}]),
     "spec.accuracy.expected", "must not repeat a target, precision and batchSize"),
    ("expected-throughput-unknown-target",
     setting("spec.performance.expected", [{"target": "gpu", "precision": "fp32", "batchSize": 1, "throughput": 9.0}]),
     "spec.performance.expected", "performance.expected names a target that is not in targets"),
    ("expected-throughput-precision-not-measured",
     setting("spec.performance.expected", [{"precision": "bf16", "batchSize": 1, "throughput": 9.0}]),
     "spec.performance.expected", "performance.expected names a precision its target does not measure"),
    # mlu's dynamicBatch 1..16 without evaluate measures 1, 2, 4, 8 and 16.
    ("expected-throughput-batch-size-between-gears",
     setting("spec.performance.expected", [{"target": "mlu", "precision": "int8", "batchSize": 3, "throughput": 9.0}]),
     "spec.performance.expected", "performance.expected names a batchSize its target does not evaluate"),
    ("expected-throughput-zero",
     setting("spec.performance.expected", [{"precision": "fp32", "batchSize": 1, "throughput": 0}]),
     "spec.performance.expected[0].throughput", "greater than 0"),
    ("expected-throughput-without-batch-size",
     setting("spec.performance.expected", [{"precision": "fp32", "throughput": 9.0}]),
     "spec.performance.expected[0].batchSize", "is required"),
    ("expected-throughput-repeated",
     setting("spec.performance.expected", [{"precision": "fp32", "batchSize": 1, "throughput": 9.0},
                                           {"precision": "fp32", "batchSize": 1, "throughput": 8.0}]),
     "spec.performance.expected", "expected throughputs must not repeat"),
    ("min-ratio-without-expected", setting("spec.performance.minRatio", 0.9), "spec.performance.minRatio",
     "it needs expected"),
    ("min-ratio-over-one", both(setting("spec.performance.minRatio", 1.5),
                                setting("spec.performance.expected",
                                        [{"precision": "fp32", "batchSize": 1, "throughput": 9.0}])),
     "spec.performance.minRatio", "at most 1"),
    ("int8-must-be-faster-without-a-float-sibling",
     both(setting("spec.targets", [{"name": "npu", "backend": "ascend", "device": "Ascend310P3",
                                    "precisions": ["int8"], "batchSizes": [4]}]),
          setting("spec.performance.int8MustBeFaster", True)),
     "spec.performance.int8MustBeFaster", "needs a target measuring int8 beside fp32, fp16"),
]


def errors_of(doc: Any) -> list[FieldError]:
    with pytest.raises(SpecError) as caught:
        load_resource(doc)
    return caught.value.errors


def test_the_base_spec_is_valid() -> None:
    resource = load_resource(base())
    assert [target.name for target in resource.spec.targets] == ["cpu", "ort", "npu", "mlu"]


@pytest.mark.parametrize(("change", "path", "words"), [case[1:] for case in BAD_SPECS],
                         ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_is_rejected_naming_the_field(change: Callable[[Doc], None], path: str, words: str) -> None:
    doc = base()
    change(doc)
    errors = errors_of(doc)
    assert any(error.path == path and words in error.message for error in errors), "\n".join(map(str, errors))


def test_there_are_at_least_25_distinct_bad_specs() -> None:
    assert len({case[0] for case in BAD_SPECS}) == len(BAD_SPECS) >= 25


def test_every_cel_rule_of_the_crd_is_exercised_by_a_bad_spec() -> None:
    messages: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            messages.update(rule["message"] for rule in node.get("x-kubernetes-validations", []))
            for child in node.values():
                collect(child)

    collect(resource_schema())
    triggered: set[str] = set()
    for _, change, _, _ in BAD_SPECS:
        doc = base()
        change(doc)
        triggered.update(error.message for error in errors_of(doc))
    assert messages - triggered == set()


def test_independent_errors_are_all_reported_at_once() -> None:
    doc = base()
    setting("spec.targets[0].batchSizes", [0])(doc)
    setting("spec.targets[1].backend", "tensorrt")(doc)
    removing("spec.source.weights")(doc)
    setting(f"{NPU}.device", "Ascend310")(doc)
    setting(f"{NPU}.precisions", ["bf16"])(doc)
    paths = {error.path for error in errors_of(doc)}
    assert {
        "spec.targets[0].batchSizes[0]",
        "spec.targets[1].backend",
        "spec.source.weights",
        f"{NPU}.precisions[0]",
    } <= paths


def test_a_type_error_does_not_hide_a_rule_elsewhere() -> None:
    doc = base()
    setting("spec.performance.iterations", "many")(doc)
    setting(f"{MLU}.dynamicBatch", {"min": 32, "max": 16})(doc)
    paths = {error.path for error in errors_of(doc)}
    assert {"spec.performance.iterations", f"{MLU}.dynamicBatch.min"} <= paths


def test_a_document_that_is_not_a_mapping() -> None:
    assert [str(e) for e in errors_of(["not", "a", "resource"])] == [
        "(document): a ModelDeployment must be a mapping"
    ]


def test_explicit_defaults_validate_like_implicit_ones() -> None:
    implicit = load_resource(base())
    explicit_doc = base()
    explicit_doc["spec"]["calibration"]["method"] = "auto"
    explicit_doc["spec"]["accuracy"].update(metric="top1", dropMode="absolute")
    explicit = load_resource(copy.deepcopy(explicit_doc))
    assert implicit.spec == explicit.spec


def test_explicit_nulls_validate_like_absent_fields() -> None:
    doc = base()
    doc["spec"]["dataset"]["limit"] = None
    doc["spec"]["targets"][0]["placement"] = None
    assert load_resource(doc).spec.dataset.limit is None  # type: ignore[union-attr]


def test_a_wrong_type_in_a_rule_s_list_is_reported_once() -> None:
    doc = base()
    setting("spec.dataset.preprocess.std", [0.25, "x", 0.25])(doc)
    assert [str(error) for error in errors_of(doc)] == ["spec.dataset.preprocess.std[1]: must be a number (got 'x')"]


def load_text(tmp_path: Path, text: str | bytes) -> list[Any]:
    path = tmp_path / "spec.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return load_documents(path)


BOMB = "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}' if n else 'lol'] * 10)}]\n" for n in range(9))


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (BOMB, ":4:45", "the document has more than 10000 values (aliases expanded)"),
        ("spec: [" + "1, " * 10_000 + "1]", ":1:30005", "the document has more than 10000 values (aliases expanded)"),
        ("spec: " + "[" * 100 + "]" * 100, ":1:70", "nests deeper than 64 levels"),
        ("a: &a [1, [2, [3]]]\n" + "b: " + "[" * 62 + "*a" + "]" * 62, ":2:66",
         "nests deeper than 64 levels (aliases expanded)"),
        ("spec: &a {x: *a}\n", ":1:14", "an alias inside the node it refers to"),
        ("spec: {limit: 1" + "0" * 5000 + "}\n", ":1:15", "an integer with too many digits"),
        ("spec: !!set {a, b}\n", ":1:7", "tag:yaml.org,2002:set is not a JSON value"),
        ("spec: !!binary aGk=\n", ":1:7", "tag:yaml.org,2002:binary is not a JSON value"),
        ("spec: {1: x}\n", ":1:8", "a key must be a string (quote it)"),
        ("spec: {maxDrop: .nan}\n", ":1:17", ".nan is not a JSON number"),
        ("spec: [unclosed\n", ":2:1", "invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ],
    ids=["alias-bomb", "many-values", "deep", "deep-through-alias", "recursive-alias", "long-integer", "set", "binary", "int-key",
         "nan", "syntax"],
)
def test_files_are_read_as_json_within_bounds(tmp_path: Path, text: str, where: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_text(tmp_path, text)
    assert [str(error) for error in caught.value.errors] == [f"{tmp_path / 'spec.yaml'}{where}: {message}"]


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_text(tmp_path, b"spec: \xff\n")
    assert [str(error) for error in caught.value.errors] == [f"{tmp_path / 'spec.yaml'}: not UTF-8 text (byte 6)"]


def test_anchors_merges_and_dates_read_as_kubectl_reads_them(tmp_path: Path) -> None:
    (document,) = load_text(tmp_path, "metadata: {name: 2024-01-01}\n"
                                      "defaults: &cpu {backend: openvino, precisions: [fp32]}\n"
                                      "targets: [{<<: *cpu, name: a}, {<<: *cpu, name: b}]\n")
    assert document["metadata"]["name"] == "2024-01-01"
    assert document["targets"] == [{"backend": "openvino", "precisions": ["fp32"], "name": name} for name in "ab"]

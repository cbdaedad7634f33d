"""Fuzzing the validation: whatever a user writes is answered, never with a traceback or a hang.

Inputs are built two ways: from the committed CRD's schema (values of every field's type, pattern and range,
so the CEL rules, the backends' checks and the planner see well-formed specs in odd combinations), and by
mutating the example specs (wrong types, integers beyond int64, deep nesting, unknown and missing fields,
unicode and control characters), their YAML text too (alias bombs, tags JSON lacks, stray characters).

`modeldeploy validate` must exit 0 or 2 with no traceback, within a time bound per input; the operator's
validation (the typed model, `semantic_errors`, `load_resource`, then `plan`) must raise nothing but SpecError.
Hypothesis runs derandomized with fixed example counts, so every run checks the same inputs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import reprlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, REPO
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from modeldeploy import cli
from modeldeploy.planner import plan
from modeldeploy.spec import ModelDeployment
from modeldeploy.validation import SpecError, load_resource, semantic_errors
from pydantic import ValidationError
from specs import base, setting

CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
SCHEMA: dict[str, Any] = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SEED_FILES = sorted(EXAMPLES.glob("*.yaml")) + sorted((EXAMPLES / "seeds").glob("*.yaml"))
SEEDS: list[dict[str, Any]] = [base()] + [
    document for path in SEED_FILES for document in yaml.safe_load_all(path.read_text()) if document
]
SECONDS_PER_INPUT = 10
DEFAULT_RECURSION_LIMIT = 1000
FUZZ = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,  # the time bound is SECONDS_PER_INPUT, enforced by an alarm
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found: shrinking can take many minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class Hang(Exception):
    pass


@contextlib.contextmanager
def as_the_command_runs(seconds: float) -> Iterator[None]:
    """Raise Hang when the block runs longer than `seconds`; recursion limited as in a process of its own.

    Hypothesis raises the recursion limit while it runs a test; the command runs with Python's default, and
    from far fewer frames than a test has below it, so the default here is the stricter bound.
    """

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.setrecursionlimit(limit)


# ---------------------------------------------------------------- values from the CRD's schema


def _json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8),
                        st.floats(allow_nan=False, allow_infinity=False))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6),
                                                                                              inner, max_size=3),
                        max_leaves=depth * 3)


def _strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    longest = schema.get("maxLength", 40)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda text: len(text) <= longest)
    return st.text(min_size=schema.get("minLength", 0), max_size=min(longest, 40))


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the schema's type, within its enum, pattern, range and item counts."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return st.integers(0, 2**63 - 1) | st.from_regex(r"[0-9]{1,4}(m|Ki|Mi|Gi)?", fullmatch=True)
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return st.dictionaries(st.text(max_size=12), _json_values(), max_size=3)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        if properties:
            required = set(schema.get("required", []))
            return st.fixed_dictionaries(
                {name: st.deferred(lambda child=child: from_schema(child)) for name, child in properties.items()
                 if name in required},
                optional={name: st.deferred(lambda child=child: from_schema(child))
                          for name, child in properties.items() if name not in required},
            )
        if isinstance(schema.get("additionalProperties"), dict):
            return st.dictionaries(st.text(min_size=1, max_size=12), from_schema(schema["additionalProperties"]),
                                   max_size=3)
        return st.just({})
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 4), 4))
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1)  # format: int64 where absent
        if schema.get("exclusiveMinimum") and low is not None:
            low += 1
        return st.integers(low, high) | st.sampled_from([low, high])
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False,
                         exclude_min=bool(schema.get("exclusiveMinimum")))
    if kind == "string":
        return _strings(schema)
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"a schema node the fuzzer does not know: {schema}")


def schema_at(parts: list[str | int]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = SCHEMA
    for part in parts:
        if node is None:
            return None
        if isinstance(part, int):
            node = node.get("items")
        else:
            node = node.get("properties", {}).get(part) or (node.get("additionalProperties")
                                                            if isinstance(node.get("additionalProperties"), dict)
                                                            else None)
    return node


@st.composite
def schema_documents(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", fullmatch=True))
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": draw(from_schema(SCHEMA["properties"]["spec"]))}


# ---------------------------------------------------------------- mutations of the example specs

ODD_STRINGS = ["", " ", "\n", "a\nb", "\t", "\x00", "\x7f", "\u2028", "\ufeff", "😀", "a;b:c,d", "../../etc",
               "x" * 5000, "${HOME}", "'\"", "-1", "true", "null", "2024-01-01", "0x1F"]
HUGE_INTEGERS = [2**63, 2**63 - 1, -(2**63) - 1, 2**64, 10**30, -(10**30), 2**200]


def nested(depth: int, leaf: Any = 1, mapping: bool = False) -> Any:
    """A list (or mapping) nested `depth` levels deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {"a": value} if mapping else [value]
    return value


ODD_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(HUGE_INTEGERS),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=12),
    st.lists(st.integers(-5, 5) | st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(-5, 5) | st.text(max_size=3), max_size=2),
    st.builds(nested, st.integers(20, 600), st.just(1), st.booleans()),
)


@st.composite
def places(draw: st.DrawFn, document: Any) -> tuple[Any, str | int, list[str | int]]:
    """A (container, key, path) somewhere in the document, reached by a random walk from its top.

    Hypothesis leans to the smallest choices; here they lead down to the leaves, where most fields are.
    """
    container, key, path = None, None, []
    node = document
    while isinstance(node, (dict, list)) and node and (container is None or draw(st.integers(0, 4)) < 4):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        chosen = draw(st.sampled_from(keys))
        container, key, path = node, chosen, [*path, chosen]
        node = node[chosen]
    assert container is not None
    return container, key, path


@st.composite
def mutated_documents(draw: st.DrawFn, odd_values: st.SearchStrategy[Any] = ODD_VALUES) -> dict[str, Any]:
    document = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        container, key, path = draw(places(document))
        mutation = draw(st.sampled_from(["schema", "odd", "delete", "extra"]))
        schema = schema_at(path)
        if mutation == "schema" and schema is not None:
            container[key] = draw(from_schema(schema))
        elif mutation == "delete":
            del container[key]
        elif mutation == "extra" and isinstance(container, dict):
            container[draw(st.text(min_size=1, max_size=12))] = draw(odd_values)
        else:
            container[key] = draw(odd_values)
    return document


def documents() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(schema_documents(), mutated_documents())


# ---------------------------------------------------------------- YAML text and its mutations


def alias_bomb(width: int, levels: int, separator: str = "\n") -> str:
    """Mapping entries l0 .. l<levels-1>, each a list of `width` repeats of the one before: width**levels values."""
    entries = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    entries += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return separator.join(entries) + separator


def as_yaml(document: dict[str, Any], block: bool) -> str:
    if block:  # PyYAML's writer recurses once per level; a deep document is written as JSON (flow YAML)
        with contextlib.suppress(RecursionError):
            return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    return json.dumps(document, ensure_ascii=False)


TEXT_VALUES = [
    "!!set {a, b}", "!!binary aGVsbG8=", "!!timestamp 2001-12-14", "!!python/object/apply:os.system [echo]",
    "!custom x", "!!omap [{a: 1}]", ".inf", "-.inf", ".nan", "1" + "0" * 5000, "0x" + "f" * 40, "&a [*a]",
    "*undefined", "=", "<<", "{? [a]: b}", "{1: x}", "~", "'unterminated", "[" * 80 + "]" * 80,
    "[" * 3000 + "]" * 3000, "{a: " * 500 + "1" + "}" * 500,
]


@st.composite
def yaml_texts(draw: st.DrawFn) -> bytes:
    document = draw(documents())
    text = as_yaml(document, block=draw(st.booleans()))
    mutation = draw(st.sampled_from(["none", "value", "bomb", "insert", "truncate"]))
    if mutation == "value":  # a value only YAML text can carry, in place of one of the document's
        replacement = draw(st.sampled_from(TEXT_VALUES))
        lines = text.splitlines()
        entries = [index for index, line in enumerate(lines) if ": " in line]
        if len(lines) > 1 and entries:
            index = draw(st.sampled_from(entries))
            key, _, _ = lines[index].partition(": ")
            lines[index] = f"{key}: {replacement}"
            text = "\n".join(lines) + "\n"
        else:  # one line of JSON: a field of its own
            text = '{"extra": ' + replacement + ", " + text[1:]
    elif mutation == "bomb":  # entries of the document's top mapping, block or flow
        width, levels = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        text = alias_bomb(width, levels) + text if "\n" in text else "{" + alias_bomb(width, levels, ", ") + text[1:]
    elif mutation == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["\t", "\x00", "\ufeff", "&x ", "*x", ": ", "{", "[", "'", "\x85",
                                                  "\n---\n", "%YAML 1.1\n", "😀"])) + text[at:]
    elif mutation == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    data = text.encode()
    if draw(st.integers(0, 9)) == 9:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + data[at:]
    return data


# ---------------------------------------------------------------- the known crash classes, each an example

def changed(path: str, value: Any) -> dict[str, Any]:
    """The base spec with the field at `path` set to `value`."""
    document = base()
    setting(path, value)(document)
    return document


DEEP_500 = changed("spec.source.architectureArgs", {"layers": nested(500)})
BEYOND_INT64 = changed("spec.source.inputs[0].shape", [-1, 3, 2**64, 32])
SCALAR_FOR_LIST = changed("spec.source.inputs[0].shape", 5)
AIPP_3D = changed("spec.source.inputs[0].shape", [-1, 32, 32])  # the base's ascend target has aipp: true
WARMUP_TRUE = changed("spec.performance.warmup", True)
NEWLINE_NAME = changed("spec.source.inputs[0].name", "\n")
ALIAS_BOMB = (alias_bomb(9, 9) + yaml.safe_dump(base())).encode()
KNOWN_DOCUMENTS = [DEEP_500, BEYOND_INT64, SCALAR_FOR_LIST, AIPP_3D, WARMUP_TRUE, NEWLINE_NAME]


def validate_file(data: bytes, path: Path) -> tuple[int, str, str]:
    """`modeldeploy validate` in this process: (exit status, stdout, stderr)."""
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with as_the_command_runs(SECONDS_PER_INPUT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["validate", str(path)])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "spec.yaml"


@FUZZ
@given(yaml_texts())
@example(ALIAS_BOMB)
@example(json.dumps(DEEP_500).encode())
@example(yaml.safe_dump(BEYOND_INT64).encode())
@example(yaml.safe_dump(SCALAR_FOR_LIST).encode())
@example(yaml.safe_dump(AIPP_3D).encode())
@example(yaml.safe_dump(WARMUP_TRUE).encode())
@example(yaml.safe_dump(NEWLINE_NAME).encode())
def test_validate_answers_every_file(spec_file: Path, data: bytes) -> None:
    status, out, err = validate_file(data, spec_file)
    assert status in (0, 2), err
    assert "Traceback" not in err
    if status == 0:
        assert err == "" and "is valid" in out
    else:
        assert err.startswith(str(spec_file)), err


SHORT = reprlib.Repr()
SHORT.maxlevel, SHORT.maxdict, SHORT.maxlist, SHORT.maxstring, SHORT.maxother = 6, 8, 8, 60, 60


class Document:
    """A document as the operator gets it, shown short: Hypothesis prints the examples it runs, and printing a
    document nested thousands of levels deep would exhaust the stack."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Document({SHORT.repr(self.value)})"


def operator_validation(document: dict[str, Any]) -> None:
    """What the operator does with a deployment's spec: the typed model, and the full validation when the model
    or the semantic checks find a problem, then the plan. Raises SpecError for a bad spec."""
    with as_the_command_runs(SECONDS_PER_INPUT):
        try:
            spec = ModelDeployment.model_validate(document).spec
        except ValidationError:
            spec = None
        if spec is None or semantic_errors(spec):
            spec = load_resource(document).spec
        plan(spec)
        plan(load_resource(document).spec)


@FUZZ
@given(documents().map(Document))
@example(Document(changed("spec.source.architectureArgs", {"layers": nested(5000)})))
@example(Document(changed("spec.targets[2].options", {"aipp": True, "x": nested(3000, mapping=True)})))
@example(Document(changed("spec.accuracy.maxDrop", float("nan"))))
@example(Document(changed("spec.dataset.limit", 2**64)))
@example(Document(changed("spec.performance.iterations", 10**4000)))
@example(Document(changed("metadata.generation", 2**70)))
@example(Document(DEEP_500))
@example(Document(BEYOND_INT64))
@example(Document(SCALAR_FOR_LIST))
@example(Document(AIPP_3D))
@example(Document(WARMUP_TRUE))
@example(Document(NEWLINE_NAME))
def test_the_operator_gets_a_spec_error_or_a_plan(document: Document) -> None:
    with contextlib.suppress(SpecError):
        operator_validation(document.value)


@pytest.mark.parametrize("document", KNOWN_DOCUMENTS, ids=["deep", "int64", "scalar-list", "aipp-3d", "warmup-bool",
                                                           "newline-name"])
def test_each_known_crash_is_now_a_spec_error(document: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        operator_validation(document)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (ALIAS_BOMB, ":5:10: the document has more than 10000 values (aliases expanded)"),
        (b"spec: " + b"[" * 3000 + b"]" * 3000 + b"\n", ":1:70: nests deeper than 64 levels"),
        (b"spec: &a {x: *a}\n", ":1:14: an alias inside the node it refers to"),
        (b"spec: {limit: 1" + b"0" * 6000 + b"}\n", ":1:15: an integer with too many digits"),
        (yaml.safe_dump(AIPP_3D).encode(), ": spec.targets[2].options: aipp feeds the model one image per sample"),
    ],
    ids=["alias-bomb", "deep", "recursive-alias", "long-integer", "aipp-3d"],
)
def test_the_real_command_answers_the_known_hangs_and_crashes(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    result = subprocess.run([str(Path(sys.executable).with_name("modeldeploy")), "validate", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{path}{expected}" in result.stderr

"""Validation of ModelDeployment documents, reporting every error at once as (field path, message).

Files are read as kubectl reads them for the API server: JSON values only, and bounded, so a
document nested too deeply or an alias bomb is refused with its file and line.

Three layers, run together so one pass shows everything:
1. the typed model (types, ranges, patterns, unknown fields);
2. the CRD's own schema walk, as the API server does it: schema defaults, list-map and set
   uniqueness, then every CEL rule (`x-kubernetes-validations`) evaluated with cel-python on
   the values that have the schema's types (a value of the wrong type is reported, not read);
3. checks that need Python: each backend's verdict on its targets, what its tools can be
   configured for, and preprocessing that does not fit the model's input.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import celpy
import yaml
from celpy import celtypes
from pydantic import ValidationError

from modeldeploy import backends
from modeldeploy.crd import Schema, resource_schema
from modeldeploy.spec import (
    ARCHITECTURE,
    DNS_LABEL,
    INT64_MAX,
    INT64_MIN,
    QUANTITY,
    SHA256,
    STORE_URI,
    TENSOR_NAME,
    ModelDeployment,
    ModelDeploymentSpec,
    Target,
    json_problem,
)

# Bounds of a document read from a file. The deepest field of a real spec (a term of an affinity) is under
# 20 levels down and a large spec has a few hundred values; an alias bomb expands to billions.
MAX_DEPTH = 64
MAX_VALUES = 10_000


@dataclass(frozen=True, order=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """A document that is not a valid ModelDeployment; carries every error found."""

    def __init__(self, errors: list[FieldError], source: str | None = None):
        self.errors = errors
        self.source = source
        super().__init__("\n".join(str(error) for error in errors))


class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that is not a document the API server would take, or that expands beyond the bounds."""


_JSON_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map"))
_MERGE_TAG = "tag:yaml.org,2002:merge"  # the `<<` key of a merge, resolved while constructing the mapping


class _DocumentLoader(yaml.SafeLoader):
    """YAML as kubectl turns it into JSON for the API server, within MAX_DEPTH and MAX_VALUES.

    A date stays text, as in kubectl; tags for what JSON cannot hold (!!set, !!binary, ...), keys that are not
    strings and non-finite numbers are refused. Values are counted as they are read, every alias as the values
    of the node it repeats, so an alias bomb stops before any of it is built; an alias inside the node it
    names is refused: it would build a cycle.
    """

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0  # in the document so far, aliases expanded
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels), aliases expanded

    def compose_document(self) -> yaml.Node | None:
        self._values = 0
        self._sizes.clear()  # the nodes of the previous document are gone, and their ids free for reuse
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        if self._depth >= MAX_DEPTH:
            raise _Refused(None, None, f"nests deeper than {MAX_DEPTH} levels", mark)
        alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if alias:
            if id(node) not in self._sizes:
                raise _Refused(None, None, "an alias inside the node it refers to", mark)
            values, levels = self._sizes[id(node)]
            self._values += values
        else:
            self._check_json(node)
            size = self._measure(node)
            self._sizes[id(node)] = size
            levels = size[1]
            self._values += 1  # its children are counted already
        if self._depth + levels > MAX_DEPTH:
            raise _Refused(None, None, f"nests deeper than {MAX_DEPTH} levels (aliases expanded)", mark)
        if self._values > MAX_VALUES:
            raise _Refused(None, None, f"the document has more than {MAX_VALUES} values (aliases expanded)", mark)
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            return 1, 1
        sizes = [self._sizes[id(child)] for child in children]
        return 1 + sum(values for values, _ in sizes), 1 + max((levels for _, levels in sizes), default=0)

    def _check_json(self, node: yaml.Node) -> None:
        if node.tag not in _JSON_TAGS and node.tag != _MERGE_TAG:
            raise _Refused(None, None, f"{node.tag} is not a JSON value", node.start_mark)
        if node.tag == "tag:yaml.org,2002:float" and not math.isfinite(self.construct_yaml_float(node)):
            raise _Refused(None, None, f"{node.value} is not a JSON number", node.start_mark)
        if node.tag == "tag:yaml.org,2002:int":
            try:
                self.construct_yaml_int(node)
            except ValueError:  # Python converts at most sys.get_int_max_str_digits() digits
                raise _Refused(None, None, "an integer with too many digits", node.start_mark) from None
        if isinstance(node, yaml.MappingNode):
            for key, _ in node.value:
                if key.tag not in ("tag:yaml.org,2002:str", _MERGE_TAG):
                    raise _Refused(None, None, "a key must be a string (quote it)", key.start_mark)


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a file; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError([FieldError(str(path), f"cannot read: {error.strerror}")]) from None
    except UnicodeDecodeError as error:
        raise SpecError([FieldError(str(path), f"not UTF-8 text (byte {error.start})")]) from None
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=_DocumentLoader) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError([FieldError(where, problem if isinstance(error, _Refused) else f"invalid YAML: {problem}")]
                        ) from None
    if not documents:
        raise SpecError([FieldError(str(path), "no YAML document in the file")])
    return documents


def load_resource(document: Any) -> ModelDeployment:
    """The typed resource, or a SpecError listing every problem with the document."""
    if not isinstance(document, dict):
        raise SpecError([FieldError("(document)", "a ModelDeployment must be a mapping")])
    errors: list[FieldError] = []
    resource: ModelDeployment | None = None
    try:
        resource = ModelDeployment.model_validate(document)
    except ValidationError as error:
        errors.extend(_model_errors(error, document))
    errors.extend(schema_errors(document, failed=[e.path for e in errors]))
    if resource is not None:
        errors.extend(semantic_errors(resource.spec))
    else:
        errors.extend(_target_errors_alone(document))
    if errors:
        raise SpecError(sorted(set(errors), key=_error_order))
    assert resource is not None
    return resource


def _error_order(error: FieldError) -> tuple[Any, ...]:
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in _split_path(error.path)), error.message


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in path.replace("[", ".[").split("."):
        if piece.startswith("[") and piece.endswith("]") and piece[1:-1].isdigit():
            parts.append(int(piece[1:-1]))
        elif piece:
            parts.append(piece)
    return parts


def format_path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


# ---------------------------------------------------------------- layer 1: the typed model

PATTERN_HINTS = {
    DNS_LABEL: "must be a lowercase DNS label (a-z, 0-9 and '-', starting and ending alphanumeric)",
    ARCHITECTURE: "must be timm:<name>, torchvision:<name> or python:<module>:<callable>",
    SHA256: "must be 64 lowercase hex digits",
    QUANTITY: "must be a Kubernetes quantity such as 500m, 2 or 4Gi",
    STORE_URI: "must be s3://bucket/prefix or file:///path",
    TENSOR_NAME: "must be a graph tensor name: letters, digits, '_', '.' and '-', not starting with '.' or '-'",
}


def _model_errors(error: ValidationError, document: Any, prefix: list[str | int] = ()) -> list[FieldError]:
    by_path: dict[str, FieldError] = {}
    for item in error.errors():
        parts = _document_path(item["loc"], document, missing=item["type"] == "missing")
        path = format_path([*prefix, *parts])
        # Several branches of one union fail on the same value: the last (most specific) explains it best.
        by_path[path] = FieldError(path, _message(item, [*prefix, *parts]))
    return list(by_path.values())


def _document_path(loc: tuple[Any, ...], document: Any, missing: bool) -> list[str | int]:
    """The error location as a path through the document, without pydantic's union-branch tags."""
    parts: list[str | int] = []
    node = document
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif missing and index == len(loc) - 1:
            pass
        else:
            break
        parts.append(part)
    return parts


def _message(item: Any, parts: list[str | int]) -> str:
    kind, given, ctx = item["type"], item.get("input"), item.get("ctx") or {}
    got = f" (got {_shown(given)})" if not isinstance(given, (dict, list)) else ""
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_field(parts)
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}{got}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer{got}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{got}"
    if kind in ("string_type",):
        return f"must be a string{got}"
    if kind in ("list_type",):
        return f"must be a list{got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping{got}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}{got}"
    if kind == "greater_than":
        return f"must be greater than {ctx['gt']}{got}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}{got}"
    if kind == "string_pattern_mismatch":
        return PATTERN_HINTS.get(ctx["pattern"], f"must match {ctx['pattern']}") + got
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} item(s)" if isinstance(given, list) else "must not be empty"
    if kind == "too_long":
        return f"allows at most {ctx['max_length']} item(s)"
    if kind in ("string_too_short",):
        return "must not be empty"
    if kind in ("string_too_long",):
        return f"must be at most {ctx['max_length']} characters"
    return str(item["msg"]).removeprefix("Value error, ")


def _shown(value: Any) -> str:
    """A short account of a wrong value: a huge number or string would bury the message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _unknown_field(parts: list[str | int]) -> str:
    field = parts[-1]
    known = _known_fields(parts[:-1])
    close = difflib.get_close_matches(str(field), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown field{hint}"


def _known_fields(parts: list[str | int]) -> list[str]:
    node: Schema = resource_schema()
    for part in parts:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return list(node.get("properties", {}))


# ---------------------------------------------------------------- layer 2: the CRD schema walk


@cache
def _program(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def schema_errors(document: dict[str, Any], failed: Sequence[str] = ()) -> list[FieldError]:
    """What the API server would reject beyond the typed model: values of the wrong type, list uniqueness, CEL rules.

    `failed` lists paths that already have errors. A value without the schema's type is left out of what the
    rules read, as if absent; a rule that cannot be evaluated over such a gap is not reported.
    """
    schema = resource_schema()
    mistyped: list[FieldError] = []
    typed = _typed(with_defaults(document, schema), schema, [], mistyped)
    new = [error for error in mistyped if not any(_within(error.path, bad) or _within(bad, error.path)
                                                  for bad in failed)]
    failed = (*failed, *(error.path for error in mistyped))
    return new + list(_walk(typed, schema, [], failed))


def with_defaults(value: Any, schema: Schema) -> Any:
    """A copy of value with the schema's defaults filled in, as the API server does on admission."""
    if isinstance(value, dict) and "properties" in schema:
        result = dict(value)
        for name, child in schema["properties"].items():
            if name not in result and "default" in child:
                result[name] = child["default"]
            if name in result:
                result[name] = with_defaults(result[name], child)
        return result
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(item, schema["items"]) for item in value]
    return value


_ABSENT = object()


def _typed(value: Any, schema: Schema, parts: list[str | int], mistyped: list[FieldError]) -> Any:
    """The value as the API server holds it, or _ABSENT when it lacks the schema's type (added to `mistyped`).

    Unknown fields and nulls are pruned, numbers become floats; a list with one wrong item is wrong as a whole,
    so the positions the rules see are the document's.
    """
    problem = _type_problem(value, schema)
    if problem is not None:
        mistyped.append(FieldError(format_path(parts), problem))
        return _ABSENT
    if isinstance(value, dict) and ("properties" in schema or isinstance(schema.get("additionalProperties"), dict)):
        children = schema.get("properties") or {key: schema["additionalProperties"] for key in value}
        result = {}
        for name, child in children.items():
            if value.get(name) is not None:
                typed = _typed(value[name], child, [*parts, name], mistyped)
                if typed is not _ABSENT:
                    result[name] = typed
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = [_typed(item, schema["items"], [*parts, index], mistyped) for index, item in enumerate(value)]
        return _ABSENT if any(item is _ABSENT for item in items) else items
    if schema.get("type") == "number":
        return float(value)
    return value


TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
              "array": "a list", "object": "a mapping"}
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "integer": int, "number": (int, float), "string": str, "boolean": bool, "array": list, "object": dict
}


def _type_problem(value: Any, schema: Schema) -> str | None:
    int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
    if int_or_string and isinstance(value, str):
        return None
    kind = "integer" if int_or_string else schema.get("type")
    if kind is None:
        return None
    if not isinstance(value, JSON_TYPES[kind]) or isinstance(value, bool) != (kind == "boolean"):
        return f"must be {TYPE_NAMES[kind]}" + (" or a string" if int_or_string else "")
    if kind == "integer" and not INT64_MIN <= value <= INT64_MAX:
        return "must be a 64-bit integer"
    if kind == "number" and (abs(value) > sys.float_info.max or not math.isfinite(value)):
        return "must be a finite number"
    if kind == "object" and "properties" not in schema and not isinstance(schema.get("additionalProperties"), dict):
        return json_problem(value)  # a free-form field: whatever JSON holds
    return None


def _walk(value: Any, schema: Schema, parts: list[str | int], failed: tuple[str, ...]) -> Iterator[FieldError]:
    path = format_path(parts)
    if isinstance(value, list):
        yield from _duplicates(value, schema, parts)
    rules = schema.get("x-kubernetes-validations", [])
    activation = {"self": celpy.json_to_cel(value)} if rules else {}
    broken_below = any(_within(path, bad) for bad in failed)
    for rule in rules:
        target = format_path(parts + _split_path(rule.get("fieldPath", "")))
        try:
            result = _program(rule["rule"]).evaluate(activation)
        except celpy.CELEvalError:
            result = None
        if isinstance(result, celtypes.BoolType):
            # A field that already has a type error is reported once, by that error.
            if not result and not any(_within(target, bad) for bad in failed):
                yield FieldError(target, rule["message"])
        elif not broken_below:  # not evaluable on well-typed data: the rule is not met
            yield FieldError(target, rule["message"])
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                yield from _walk(value[name], child, [*parts, name], failed)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _walk(item, schema["items"], [*parts, index], failed)


def _within(path: str, inner: str) -> bool:
    return not path or path == "(document)" or inner == path or inner.startswith((path + ".", path + "["))


def _duplicates(items: list[Any], schema: Schema, parts: list[str | int]) -> Iterator[FieldError]:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        keys = [repr(item) for item in items]
        describe = [repr(item) for item in items]
    elif list_type == "map":
        names = schema.get("x-kubernetes-list-map-keys", [])
        # An item whose key has the wrong type (left out of the typed view) has no key to compare.
        keys = [repr([item[name] for name in names]) if all(name in item for name in names) else None
                for item in items]
        describe = [", ".join(f"{name}={item.get(name)!r}" for name in names) for item in items]
    else:
        return
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if key is None:
            continue
        if key in seen:
            yield FieldError(format_path([*parts, index]), f"duplicate entry ({describe[index]})")
        seen.add(key)


# ---------------------------------------------------------------- layer 3: checks that need Python


def semantic_errors(spec: ModelDeploymentSpec) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, target in enumerate(spec.targets):
        errors.extend(_backend_errors(index, target, spec))
    errors.extend(_preprocess_fits_input(spec))
    return errors


def _backend_errors(index: int, target: Target, spec: ModelDeploymentSpec | None) -> list[FieldError]:
    backend = backends.get(target.backend)
    errors = [FieldError(f"spec.targets[{index}].{where}", message)
              for where, message in backend.target_errors(target, spec)]
    try:
        backend.parse_options(target)
    except ValidationError as error:
        errors.extend(_model_errors(error, target.options, ["spec", "targets", index, "options"]))
    if errors or spec is None:
        return errors
    # The plan builds each target's tool configuration; a backend raises ValueError for what its tools cannot
    # be configured for, and the spec is refused here instead of failing in the planner.
    try:
        backend.build_config(target, spec)
    except ValueError as error:
        return [FieldError(f"spec.targets[{index}].options", str(error))]
    return []


def _target_errors_alone(document: dict[str, Any]) -> list[FieldError]:
    """Backend checks for the targets that are well-formed even though the document as a whole is not."""
    spec = document.get("spec")
    targets = spec.get("targets") if isinstance(spec, dict) else None
    errors: list[FieldError] = []
    for index, raw in enumerate(targets if isinstance(targets, list) else []):
        try:
            target = Target.model_validate(raw)
        except ValidationError:
            continue
        errors.extend(_backend_errors(index, target, spec=None))
    return errors


def _preprocess_fits_input(spec: ModelDeploymentSpec) -> list[FieldError]:
    preprocess = spec.dataset.preprocess if spec.dataset else None
    if preprocess is None or len(spec.source.inputs) != 1:
        return []
    first = spec.source.inputs[0]
    if len(first.shape) != 4 or first.layout not in ("NCHW", "NHWC") or min(first.shape[1:]) < 1:
        return []
    height, width = first.shape[2:] if first.layout == "NCHW" else first.shape[1:3]
    channels = first.shape[1] if first.layout == "NCHW" else first.shape[3]
    errors = []
    side = preprocess.crop or (preprocess.resize if preprocess.resize_mode == "exact" else None)
    if side is not None and (height, width) != (side, side):
        field = "crop" if preprocess.crop else "resize"
        errors.append(
            FieldError(
                f"spec.dataset.preprocess.{field}",
                f"produces {side}x{side} images but the model input {first.name!r} is {height}x{width}",
            )
        )
    if len(preprocess.mean) not in (1, channels):
        errors.append(
            FieldError(
                "spec.dataset.preprocess.mean",
                f"has {len(preprocess.mean)} values but the model input {first.name!r} has {channels} channels",
            )
        )
    return errors


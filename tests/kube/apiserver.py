"""A Kubernetes API server for tests, on 127.0.0.1 over plain HTTP.

kmock's ``KubernetesEmulator`` answers discovery, keeps every object with its history and fans
writes out to watch buses. ``ApiEmulator`` adds what a real API server does on top: uid,
creationTimestamp, resourceVersion and generation; ``<Kind>List`` and ``Table`` responses; the
``/status`` subresource; PUT; the patch types by Content-Type; finalizers and owner garbage
collection; label and field selectors; watches that resume from a resourceVersion; CRDs served
from their objects; the namespace paths kmock 0.8 cannot parse; just enough OpenAPI v3 for
kubectl. Writes happen in kmock's fallback reactions, so a test reaction that intercepts a
request (``emulator["patch", kmock.resource(...)][:1] << 409``) also prevents its effect, as
a failed request does on a real server.

``ApiServer`` runs the emulator in a background thread and writes a kubeconfig for it;
``python -m kube.apiserver`` runs it in a process of its own.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import datetime
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import kubernetes
import yaml
from kmock._internal import parsing  # kmock's URL-to-action rules, reused for the paths it cannot parse

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"

Obj = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]
T = TypeVar("T")

NAMESPACES = kmock.resource("", "v1", "namespaces")
SECRETS = kmock.resource("", "v1", "secrets")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
BUILTINS: dict[kmock.resource, dict[str, Any]] = {
    NAMESPACES: {"kind": "Namespace", "namespaced": False, "shortnames": {"ns"}, "subresources": {"status"}},
    SECRETS: {"kind": "Secret", "namespaced": True},
    kmock.resource("", "v1", "events"): {"kind": "Event", "namespaced": True, "shortnames": {"ev"}},
    kmock.resource("batch", "v1", "jobs"): {"kind": "Job", "namespaced": True, "subresources": {"status"}},
    CRDS: {"kind": "CustomResourceDefinition", "namespaced": False, "shortnames": {"crd", "crds"},
           "subresources": {"status"}},
}
# Fields a client cannot set or change; the server owns them.
SERVER_METADATA = ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation",
                   "deletionTimestamp", "deletionGracePeriodSeconds")
# A namespace path parses in kmock 0.8 as a namespace prefix (and the bare collection not at all).
NAMESPACE_PATH = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+)(?:/(?P<subresource>status))?)?")
JSONPATH_STEP = re.compile(
    r"""\.(?P<field>[\w-]+)|\[(?P<index>\d+)\]|\[\?\(@(?P<path>(?:\.[\w-]+)+)\s*==\s*["'](?P<value>[^"']*)["']\)\]"""
)
WATCH_TRUE = {"1", "t", "T", "TRUE", "True"}  # Go's strconv.ParseBool, less the "true" kmock understands
REQUIREMENT = re.compile(r"\s*(?P<key>[^\s!=,]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=,]*)\s*")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details)


def _not_found(resource: kmock.resource, name: str) -> kmock.KubernetesError:
    qualified = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return _error(404, "NotFound", f'{qualified} "{name}" not found',
                  name=name, group=resource.group, kind=resource.plural)


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def _priority_key(priorities: tuple[float, ...], longest: int) -> tuple[float, ...]:
    """Highest first; shorter priority tuples padded with zeroes, as kmock orders its reactions."""
    return tuple(-priority for priority in priorities) + (0.0,) * (longest - len(priorities))


def _openapi_path(resource: kmock.resource) -> str:
    return f"apis/{resource.group}/{resource.version}" if resource.group else f"api/{resource.version}"


def _header(request: kmock.Request, name: str) -> str:
    return next((value for key, value in request.headers.items() if key.lower() == name), "")


def _json_object(request: kmock.Request) -> Obj:
    if not isinstance(request.data, dict):
        raise _error(400, "BadRequest", "the request body must be a JSON object")
    return request.data


def _resource_version(body: Any) -> str | None:
    """A resourceVersion in a PUT or merge-patch body is a precondition on the stored one."""
    return (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None


def _prune_nulls(value: Any) -> Any:
    """A copy of a JSON value without its nulls."""
    if isinstance(value, dict):
        return {key: _prune_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_prune_nulls(item) for item in value]
    return value


def _clone(value: Any) -> Any:
    """A deep copy of JSON data, a few times faster than copy.deepcopy (no memo, no dispatch on types)."""
    if isinstance(value, dict):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone(item) for item in value]
    return value


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return _clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _strip_directives(patch: Any) -> Any:
    """Strategic-merge directives ($patch, $setElementOrder/…, $retainKeys) dropped: the rest merges as RFC 7386."""
    if isinstance(patch, dict):
        return {key: _strip_directives(value) for key, value in patch.items() if not key.startswith("$")}
    return patch


def _json_patch(obj: Obj, operations: list[Any]) -> Obj:
    try:
        return jsonpatch.apply_patch(obj, operations)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
        raise _error(422, "Invalid", f"the JSON patch cannot be applied: {error}") from error


def _patcher(request: kmock.Request) -> Callable[[Obj], Obj]:
    content_type = _header(request, "content-type").split(";")[0].strip()
    body = request.data
    if content_type == "application/json-patch+json":
        if not isinstance(body, list):
            raise _error(400, "BadRequest", "a JSON patch must be a list of operations")
        return lambda obj: _json_patch(obj, body)
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(body, dict):
            raise _error(400, "BadRequest", f"a {content_type} body must be a JSON object")
        patch = _strip_directives(body) if "strategic" in content_type else body
        return lambda obj: _merge_patch(obj, patch)
    raise _error(415, "UnsupportedMediaType", f"the patch type {content_type!r} is not supported by the test server")


def _json_path(obj: Any, path: str) -> Any:
    """The first value of a printer column's JSONPath: .field, [N] and [?(@.field=="value")] steps."""
    values = [obj]
    for step in JSONPATH_STEP.finditer(path):
        if step["field"]:
            values = [value[step["field"]] for value in values if isinstance(value, dict) and step["field"] in value]
        elif step["index"]:
            index = int(step["index"])
            values = [value[index] for value in values if isinstance(value, list) and index < len(value)]
        else:
            values = [item for value in values if isinstance(value, list) for item in value
                      if _json_path(item, step["path"]) == step["value"]]
    return values[0] if values else None


def _age(timestamp: str) -> str:
    seconds = int((datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(timestamp)).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h" if seconds < 48 * 3600 else f"{seconds // 86400}d"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0

    @classmethod
    def of(cls, spec: Obj) -> Column:
        return cls(spec["name"], spec["type"], spec["jsonPath"], spec.get("description", ""), spec.get("priority", 0))

    def definition(self) -> Obj:
        return {"name": self.name, "type": self.type, "format": "", "description": self.description,
                "priority": self.priority}

    def cell(self, obj: Obj) -> Any:
        value = _json_path(obj, self.json_path)
        return _age(value) if self.type == "date" and isinstance(value, str) else value


NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}
AGE_COLUMN = Column("Age", "date", ".metadata.creationTimestamp", "Time since the object was created")


def _requirements(text: str) -> tuple[tuple[str, bool, str], ...]:
    """Equality-based selector requirements: (key, equal, value) for `k=v`, `k==v` and `k!=v`."""
    requirements = []
    for part in filter(None, text.split(",")):
        match = REQUIREMENT.fullmatch(part)
        if match is None:
            raise _error(400, "BadRequest", f"unable to parse requirement {part!r}: the test server supports =, ==, !=")
        requirements.append((match["key"], match["op"] != "!=", match["value"]))
    return tuple(requirements)


def _field(obj: Obj, path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else str(value)


@dataclass(frozen=True)
class Selector:
    namespace: str | None
    name: str | None
    labels: tuple[tuple[str, bool, str], ...]
    fields: tuple[tuple[str, bool, str], ...]

    @classmethod
    def of(cls, request: kmock.Request) -> Selector:
        return cls(request.namespace, request.name, _requirements(request.params.get("labelSelector", "")),
                   _requirements(request.params.get("fieldSelector", "")))

    def matches(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        return (self.namespace in (None, meta.get("namespace")) and self.name in (None, meta["name"])
                and all((labels.get(key) == value) == equal for key, equal, value in self.labels)
                and all((_field(obj, key) == value) == equal for key, equal, value in self.fields))


def _generation_part(obj: Obj) -> Obj:
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _settle(info: kmock.ResourceInfo, subresource: str | None, old: Obj, new: Obj) -> Obj:
    """What the server keeps of a client's new version: status isolation, server-owned metadata, generation."""
    if subresource == "status":
        # The rest is the old version's: shared, not copied (stored versions never change), but for the metadata
        # the new version gets its own resourceVersion in.
        result = {key: value for key, value in old.items() if key != "status"}
        result["metadata"] = _clone(old["metadata"])
        if "status" in new:
            result["status"] = new["status"]
        return result
    if "status" in info.subresources:
        new.pop("status", None)
        if "status" in old:
            new["status"] = old["status"]
    meta = new.setdefault("metadata", {})
    for field in SERVER_METADATA:
        meta.pop(field, None)
        if field in old["metadata"]:
            meta[field] = old["metadata"][field]
    new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
    if _generation_part(new) != _generation_part(old):
        meta["generation"] = old["metadata"].get("generation", 1) + 1
    return new


def _condition(kind: str, reason: str, message: str) -> Obj:
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": _now()}


def _crd_resources(crd: Obj) -> Iterator[tuple[kmock.resource, kmock.ResourceInfo, tuple[Column, ...]]]:
    spec = crd["spec"]
    names = spec["names"]
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        info = kmock.ResourceInfo(
            kind=names["kind"], singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced", verbs=VERBS,
            shortnames=names.get("shortNames", ()), categories=names.get("categories", ()),
            subresources={"status"} & set(version.get("subresources") or {}),
        )
        columns = tuple(Column.of(column) for column in version.get("additionalPrinterColumns", ()))
        yield kmock.resource(spec["group"], version["name"], names["plural"]), info, columns or (AGE_COLUMN,)


@attrs.define(kw_only=True)
class ApiEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the object semantics of a real API server (see the module docstring)."""

    _resource_version: int = attrs.field(default=0, init=False)
    _columns: dict[kmock.resource, tuple[Column, ...]] = attrs.field(factory=dict, init=False)
    _log: defaultdict[kmock.resource, list[tuple[int, Obj]]] = attrs.field(factory=lambda: defaultdict(list),
                                                                           init=False)
    _ordered: tuple[int, list[Any]] = attrs.field(default=(0, []), init=False)  # reactions counted, in kmock's order

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback["get", re.compile(r"/openapi/v3(/.*)?")] << self._serve_openapi
        for resource, info in BUILTINS.items():
            self.resources[resource] = kmock.ResourceInfo(verbs=VERBS, singular=info["kind"].lower(), **info)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.query.get("watch") in WATCH_TRUE:  # kmock knows watch=true only; the Python client sends True
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        match = NAMESPACE_PATH.fullmatch(raw_request.path)
        if match is None:
            return await super().__call__(raw_request)
        try:
            request = await self._parse_namespace_request(raw_request, match["name"], match["subresource"])
            self._requests.append(request)
            return await self._handle(request)
        except Exception as error:  # noqa: BLE001 - rendered as a Status, as kmock does for what it parses
            return await self._render_error(error)

    async def _parse_namespace_request(
        self, raw_request: aiohttp.web.BaseRequest, name: str | None, subresource: str | None
    ) -> kmock.Request:
        neutral = raw_request.clone(rel_url=raw_request.rel_url.with_path("/").with_query(raw_request.query))
        request = await kmock.Request._parse(neutral, id=len(self._requests))
        path = parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name, subresource=subresource)
        action = parsing.guess_k8s(path, request.method, dict(request.params))
        return attrs.evolve(request, raw_request=raw_request, url=raw_request.url, action=action,
                            resource=NAMESPACES, name=name, subresource=subresource)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """kmock's reaction dispatch (RawHandler._handle), without KubernetesEmulator's object tracking, which the
        fallbacks below replace, and without rescanning the request history for plain filters (see `_sees`)."""
        for reaction in self._reactions():
            if not reaction._disabled.is_set() and self._sees(reaction._source, request):
                try:
                    return await reaction(request)
                except kmock.ReactionMismatchError:  # declined or depleted: disabled for good, as in kmock
                    reaction._disabled.set()
                except NotImplementedError:  # matched, but with nothing to respond
                    pass
        raise NotImplementedError("no reaction matches the request")

    def _reactions(self) -> list[Any]:
        """The reactions in kmock's order, sorted again only once one was added (they are only ever added)."""
        if self._ordered[0] != len(self._payloads):
            longest = max((len(reaction.priorities) for reaction in self._payloads), default=0)
            self._ordered = (len(self._payloads), sorted(
                self._payloads, key=lambda reaction: _priority_key(reaction.priorities, longest)))
        return self._ordered[1]

    def _sees(self, view: kmock.View, request: kmock.Request) -> bool:
        """Whether a reaction's view takes the request. kmock answers by passing every request so far through the
        view, so each request costs O(requests so far); a chain of plain filters can judge the request alone."""
        node = view
        while type(node) in (kmock.Filter, kmock.Priority):
            if isinstance(node, kmock.Filter) and not node.criteria(request):
                return False
            node = node._source
        return node is self or request in view

    # Discovery

    async def _serve_version(self, request: kmock.Request) -> Obj:
        listing: Obj = await super()._serve_version(request)
        listing["groupVersion"] = _api_version(request.resource)
        for entry in listing["resources"]:
            if "/" in entry["name"]:  # a subresource: no names of its own for kubectl to match
                entry.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return listing

    def _serve_openapi(self, request: kmock.Request) -> Obj:
        """Just enough OpenAPI v3 for kubectl to see that the server validates fields (so kubectl does not)."""
        wanted = request.url.path.removeprefix("/openapi/v3").strip("/")
        served = {_openapi_path(resource) for resource in self.resources}
        if not wanted:
            return {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}"} for path in sorted(served)}}
        if wanted not in served:
            raise _error(404, "NotFound", f"no OpenAPI document for {wanted}")
        paths = {}
        for resource in self.resources:
            info = self.resources[resource]
            if _openapi_path(resource) == wanted:
                scope = "/namespaces/{namespace}" if info.namespaced else ""
                paths[f"/{wanted}{scope}/{resource.plural}/{{name}}"] = {"patch": {
                    "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version,
                                                        "kind": info.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                }}
        return {"openapi": "3.0.0", "info": {"title": "test API server", "version": "v0"}, "paths": paths}

    # Reading

    async def _serve_list(self, request: kmock.Request) -> Obj:
        info = self._info(request)
        selector = Selector.of(request)
        async with self._lock:
            objs = [obj for obj in self._select(request.resource) if selector.matches(obj)]
            version = str(self._resource_version)
        if "as=Table" in _header(request, "accept"):
            return self._table(request, objs, version)
        return {"apiVersion": _api_version(request.resource), "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": version}, "items": objs}

    async def _serve_fetch(self, request: kmock.Request) -> Obj:
        key = self._key(request, self._info(request))
        async with self._lock:
            obj = self._stored(key)
            version = str(self._resource_version)
        if obj is None:
            raise _not_found(request.resource, request.name)
        return self._table(request, [obj], version) if "as=Table" in _header(request, "accept") else obj

    def _serve_watch(self, request: kmock.Request) -> kmock.Response:
        self._info(request)
        events = self._watch(request, Selector.of(request))
        return kmock.Response(headers={"Content-Type": "application/json"}, payload=events)

    async def _watch(self, request: kmock.Request, selector: Selector) -> AsyncIterator[Obj | bytes]:
        """Events after the request's resourceVersion, or all objects as ADDED without one, then live events."""
        bus = self._buses[request.resource]
        since = request.params.get("resourceVersion", "")
        async with self._lock:
            marker = await bus.mark()
            if since in ("", "0"):
                backlog = [{"type": "ADDED", "object": obj} for obj in self._select(request.resource)]
            else:
                log = self._log[request.resource]
                backlog = [event for _, event in log[bisect.bisect_right(log, int(since), key=lambda entry: entry[0]):]]
        loop = asyncio.get_running_loop()
        timeout = float(request.params.get("timeoutSeconds") or 0)
        deadline = loop.time() + timeout if timeout else None
        live = bus.stream(since=marker)
        try:
            yield b""  # the response headers go out now, before the first event
            for event in backlog:
                if selector.matches(event["object"]):
                    yield self._render_event(request, event)
            while True:
                event = await asyncio.wait_for(anext(live), None if deadline is None else deadline - loop.time())
                if selector.matches(event["object"]):
                    yield self._render_event(request, event)
        except TimeoutError:
            return
        finally:
            await live.aclose()
            await bus.unmark(marker)

    def _render_event(self, request: kmock.Request, event: Obj) -> Obj:
        if "as=Table" not in _header(request, "accept"):
            return event
        obj = event["object"]
        return {"type": event["type"], "object": self._table(request, [obj], obj["metadata"]["resourceVersion"])}

    def _table(self, request: kmock.Request, objs: list[Obj], version: str) -> Obj:
        columns = self._columns.get(request.resource, (AGE_COLUMN,))
        include = request.params.get("includeObject", "Metadata")
        rows = []
        for obj in objs:
            row: Obj = {"cells": [obj["metadata"]["name"], *(column.cell(obj) for column in columns)]}
            if include == "Object":
                row["object"] = obj
            elif include == "Metadata":
                row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": obj["metadata"]}
            rows.append(row)
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": version},
                "columnDefinitions": [NAME_COLUMN, *(column.definition() for column in columns)], "rows": rows}

    # Writing

    async def _serve_create(self, request: kmock.Request) -> kmock.Response:
        info = self._info(request)
        body = _json_object(request)
        async with self._lock:
            obj = await self._create(request.resource, info, request.namespace, body)
        return kmock.Response(status=201, payload=obj)

    async def _serve_update(self, request: kmock.Request) -> Obj:
        return await self._update(request, _patcher(request), _resource_version(request.data))

    async def _serve_replace(self, request: kmock.Request) -> Obj:
        body = _prune_nulls(_json_object(request))
        return await self._update(request, lambda _: _clone(body), _resource_version(body))

    async def _serve_delete(self, request: kmock.Request) -> Obj:
        key = self._key(request, self._info(request))
        async with self._lock:
            obj = self._stored(key)
            if obj is None:
                raise _not_found(request.resource, request.name)
            return await self._delete(key, _clone(obj))

    async def create(self, resource: kmock.resource, obj: Obj) -> Obj:
        """Store an object as a POST would, e.g. to seed the server before it serves."""
        async with self._lock:
            return await self._create(resource, self.resources[resource], obj["metadata"].get("namespace"), obj)

    async def _create(self, resource: kmock.resource, info: kmock.ResourceInfo, namespace: str | None, body: Obj
                      ) -> Obj:
        obj = _prune_nulls(body)  # a copy: the request's body stays as it came
        meta = obj.setdefault("metadata", {})
        namespace = self._namespace_of(info, namespace, meta)
        if not meta.get("name") and not meta.get("generateName"):
            raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
        meta["name"] = meta.get("name") or meta["generateName"] + "".join(
            secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        key = (resource, namespace, meta["name"])
        if self._stored(key) is not None:
            raise _error(409, "AlreadyExists", f'{resource.plural} "{meta["name"]}" already exists',
                         name=meta["name"], group=resource.group, kind=resource.plural)
        if namespace is not None and self._stored((NAMESPACES, None, namespace)) is None:
            await self._create(NAMESPACES, self.resources[NAMESPACES], None, {"metadata": {"name": namespace}})
        for field in SERVER_METADATA[2:]:
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        obj["apiVersion"], obj["kind"] = _api_version(resource), info.kind
        if "status" in info.subresources:
            obj.pop("status", None)
        self._admit(resource, obj)
        return await self._commit(key, obj, "ADDED")

    def _namespace_of(self, info: kmock.ResourceInfo, namespace: str | None, meta: Obj) -> str | None:
        if not info.namespaced:
            if namespace is not None:
                raise _error(404, "NotFound", "a cluster-scoped resource has no namespaced path")
            meta.pop("namespace", None)
            return None
        if namespace is None:
            raise _error(404, "NotFound", "a namespaced resource is created under /namespaces/NAME/")
        if meta.get("namespace", namespace) != namespace:
            raise _error(400, "BadRequest",
                         "the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = namespace
        return namespace

    async def _update(self, request: kmock.Request, change: Callable[[Obj], Obj], precondition: str | None) -> Obj:
        info = self._info(request)
        key = self._key(request, info)
        async with self._lock:
            old = self._stored(key)
            if old is None:
                raise _not_found(request.resource, request.name)
            if precondition is not None and precondition != old["metadata"]["resourceVersion"]:
                raise _error(409, "Conflict", f'Operation cannot be fulfilled on {request.resource.plural} '
                             f'"{request.name}": the object has been modified; please apply your changes to the '
                             'latest version and try again', name=request.name, kind=request.resource.plural)
            new = _settle(info, request.subresource, old, change(_clone(old)))
            self._admit(key[0], new)
            if new == old:
                return old  # a no-op write neither bumps the resourceVersion nor notifies watchers
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                return await self._remove(key, new)
            return await self._commit(key, new, "MODIFIED")

    async def _delete(self, key: Key, obj: Obj) -> Obj:
        meta = obj["metadata"]
        if not meta.get("finalizers"):
            return await self._remove(key, obj)
        if "deletionTimestamp" in meta:
            return obj
        meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        self._admit(key[0], obj)
        return await self._commit(key, obj, "MODIFIED")

    async def _remove(self, key: Key, obj: Obj) -> Obj:
        """Really delete, then garbage-collect the dependents left without any live owner (background)."""
        gone = await self._commit(key, obj, "DELETED")
        live_uids = {other["metadata"]["uid"] for other in map(self._stored, list(self._objects)) if other is not None}
        for other_key in list(self._objects):
            other = self._stored(other_key)  # read now: an earlier collection may have removed it already
            owners = {ref.get("uid") for ref in (other or {}).get("metadata", {}).get("ownerReferences") or ()}
            if other is not None and gone["metadata"]["uid"] in owners and not owners & live_uids:
                await self._delete(other_key, _clone(other))
        return gone

    def _admit(self, resource: kmock.resource, obj: Obj) -> None:
        """What built-in controllers and registry strategies add to an object on every write."""
        meta = obj["metadata"]
        if resource == SECRETS and "stringData" in obj:
            obj.setdefault("data", {}).update(
                {key: base64.b64encode(value.encode()).decode() for key, value in obj.pop("stringData").items()})
        elif resource == NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj["status"] = {"phase": "Terminating" if meta.get("deletionTimestamp") else "Active"}
        elif resource == CRDS and "status" not in obj:
            obj["status"] = {
                "acceptedNames": obj["spec"]["names"],
                "conditions": [_condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                               _condition("Established", "InitialNamesAccepted",
                                          "the initial names have been accepted")],
                "storedVersions": [version["name"] for version in obj["spec"]["versions"] if version.get("storage")],
            }

    async def _commit(self, key: Key, obj: Obj, event_type: str) -> Obj:
        """Store a new version (or the deletion) under the next resourceVersion and tell the watchers."""
        resource = key[0]
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)
        if event_type == "DELETED":
            self._objects[key].delete()
        elif key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        if resource == CRDS:
            self._serve_crd(obj, served=event_type != "DELETED")
        event = {"type": event_type, "object": obj}
        self._log[resource].append((self._resource_version, event))
        await self._buses[resource].put(event)
        return obj

    def _serve_crd(self, crd: Obj, served: bool) -> None:
        for resource, info, columns in _crd_resources(crd):
            if served:
                self.resources[resource] = info
                self._columns[resource] = columns
            elif resource in self.resources:
                del self.resources[resource]

    # Lookups

    def _info(self, request: kmock.Request) -> kmock.ResourceInfo:
        if request.resource is None or request.resource not in self.resources:
            raise _error(404, "NotFound", "the server could not find the requested resource")
        info = self.resources[request.resource]
        if request.subresource is not None and request.subresource not in info.subresources:
            raise _error(404, "NotFound", f"the server could not find the subresource {request.subresource!r}")
        return info

    def _key(self, request: kmock.Request, info: kmock.ResourceInfo) -> Key:
        if request.name is None:
            raise _error(405, "MethodNotAllowed", "the test server supports this method on named objects only")
        if info.namespaced != (request.namespace is not None):
            raise _error(404, "NotFound", "the server could not find the requested resource")
        return request.resource, request.namespace, request.name

    def _stored(self, key: Key) -> Obj | None:
        """The current version, not a copy: a stored version never changes (a write stores a new one), so what is
        only read and rendered is served as it is; whoever changes an object changes a copy."""
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _select(self, resource: kmock.resource | None) -> list[Obj]:
        keys = sorted((key for key in self._objects if key[0] == resource), key=lambda key: key[1:])
        return [obj for obj in map(self._stored, keys) if obj is not None]

    def resolve(self, name: str) -> kmock.resource:
        """A resource by its plural, singular, kind or short name, optionally `.group`-qualified, or `group/v/plural`."""
        for resource in self.resources:
            info = self.resources[resource]
            names = {resource.plural, info.singular, (info.kind or "").lower(), *info.shortnames}
            if name in names | {f"{each}.{resource.group}" for each in names} or name == \
                    f"{_api_version(resource)}/{resource.plural}":
                return resource
        raise KeyError(f"no resource {name!r} is served")

    async def read(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        async with self._lock:
            return _clone(self._stored((self.resolve(resource), namespace, name)))

    async def read_all(self, resource: str, namespace: str | None, label_selector: str) -> list[Obj]:
        selector = Selector(namespace, None, _requirements(label_selector), ())
        async with self._lock:
            return [_clone(obj) for obj in self._select(self.resolve(resource)) if selector.matches(obj)]


class ApiServer:
    """An ``ApiEmulator`` on a free port of 127.0.0.1, in a thread with its own event loop, and a kubeconfig for it."""

    def __init__(self, crds: Sequence[Path] = (CRD_PATH,), namespaces: Sequence[str] = ("default",)) -> None:
        self._crds = [yaml.safe_load(path.read_text()) for path in crds]
        self._namespaces = tuple(namespaces)
        self._dir = Path(tempfile.mkdtemp(prefix="apiserver-"))
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiserver", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.emulator: ApiEmulator | None = None
        self.url = ""
        self.kubeconfig = self._dir / "kubeconfig"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
                 ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._failure is not None:
            self.stop()  # raises the failure, if there is one
            raise RuntimeError("the test API server did not start within 30 s")
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}],
        }))

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._thread.is_alive():
            raise RuntimeError("the test API server did not stop")
        if self._failure is not None:
            raise RuntimeError("the test API server failed") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # noqa: BLE001 - raised again by stop()
            self._failure = error
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.emulator = ApiEmulator()
        for crd in self._crds:
            await self.emulator.create(CRDS, crd)
        for namespace in self._namespaces:
            await self.emulator.create(NAMESPACES, {"metadata": {"name": namespace}})
        async with self.emulator:
            # Handlers are cancelled when their client goes away, so abandoned watches end too.
            server = aiohttp.web.Server(self.emulator, handler_cancellation=True, access_log=None)
            runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.2)
            await runner.setup()
            try:
                await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
                host, port = runner.addresses[0][:2]
                self.url = f"http://{host}:{port}"
                self._ready.set()
                await self._stopping.wait()
            finally:
                await runner.cleanup()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the test API server is not running"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object, or None; `resource` as kubectl names it: "mdep", "jobs.batch", "batch/v1/jobs"."""
        assert self.emulator is not None
        return self._call(self.emulator.read(resource, namespace, name))

    def list(self, resource: str, namespace: str | None = None, label_selector: str = "") -> list[Obj]:
        assert self.emulator is not None
        return self._call(self.emulator.read_all(resource, namespace, label_selector))

    def api_client(self) -> kubernetes.client.ApiClient:
        """A `kubernetes` client for this server; close it (or use it as a context manager)."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl_command(self, *args: str) -> list[str]:
        """kubectl with this server's kubeconfig and a discovery cache of its own, for a process of your own."""
        return ["kubectl", f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self._dir / 'kubectl-cache'}", *args]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = self.kubectl_command(*args)
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited with {result.returncode}:\n{result.stderr}")
        return result


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll until `condition()` returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
    return result


def main() -> None:
    """Serve until stdin closes, for a client that must not share the server's GIL (a benchmark's load).

    Prints the kubeconfig's path first; answers each line `requests` with the number of requests served so far.
    """
    with ApiServer() as server:
        assert server.emulator is not None
        print(server.kubeconfig, flush=True)
        for line in sys.stdin:
            if line.strip() == "requests":
                print(len(server.emulator._requests), flush=True)


if __name__ == "__main__":
    main()

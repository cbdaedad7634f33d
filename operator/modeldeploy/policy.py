"""What a tenant's spec may ask of an installation that several teams share.

A ModelDeployment is written by whoever may create one in a namespace, but its Jobs run with the
installation's images, nodes and network, and a spec without its own Secret is served with the
installation's credentials. `Policy` (the operator configuration's `policy`) says which of those
choices a spec may make; `violations` names every field of a spec that goes beyond it, and
`admission_policy` renders the rules CEL can express as a ValidatingAdmissionPolicy, so the API
server refuses such a spec at `kubectl apply` already.

Pure: nothing here reads the network or a file. Hosts are judged as written, never resolved, so a
name that resolves to a refused address passes (docs/policy.md: the NetworkPolicy for Job pods
is the control at the network level).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modeldeploy.spec import GROUP, PLURAL, VERSION, ModelDeploymentSpec, Placement, Target
from modeldeploy.validation import FieldError

Scheme = Literal["s3", "https", "http"]
PlacementField = Literal["nodeSelector", "tolerations", "affinity", "resources"]

# Every spec field that holds a URI: the inputs a stage fetches, the store, and the store's endpoint.
URI_FIELDS = (
    "spec.source.weights",
    "spec.source.uri",
    "spec.source.code",
    "spec.dataset.uri",
    "spec.dataset.labels",
    "spec.artifacts.uri",
    "spec.artifacts.endpoint",
)
RESERVED_ENV_PREFIX = "MODELDEPLOY_"  # the operator's: the task document and the installation's limits

# Regular expressions in the syntax Python's re and RE2 (the API server's CEL) share. A URI is well-formed
# only when its authority is plain: an optional user@, an ASCII DNS name or a bracketed IPv6 address, an
# optional port; whatever a URL parser might read otherwise (whitespace, a second @, a backslash, which
# WHATWG parsers take for a slash, a percent-encoded or non-ASCII host) is refused rather than interpreted.
# Hosts are matched without regard to case by ASCII classes rather than the (?i) flag: with it both engines
# match the long s and the Kelvin sign, which IDNA then turns into s and k (localhoſt is localhost to urllib).
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_NAME = rf"{_LABEL}(?:\.{_LABEL})*"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
# What a resolver takes for an IPv4 address besides the dotted quad: 2852039166, 0xa9fea9fe, 0251.0376.0.1 ...
_NUMERIC = r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+))*\.?"
_IPV6 = r"\[[0-9a-fA-F:.]+\]"
_GLOBAL_IPV6 = r"\[[23][0-9a-fA-F]{3}:[0-9a-fA-F:.]*\]"  # 2000::/3: a first group of four digits, 2xxx or 3xxx
_HOST = rf"{_NAME}\.?|{_IPV6}"
_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


def _web(host: str, schemes: str = "https?") -> str:
    """An http(s) URI whose host matches `host`."""
    return rf"(?s)^(?:{schemes})://(?:[^/?#@\s\\]*@)?(?:{host})(?::[0-9]{{1,5}})?(?:[/?#].*)?$"


def _s3(bucket: str = _BUCKET) -> str:
    return rf"(?s)^s3://(?:{bucket})(?:/.*)?$"


# ---------------------------------------------------------------- address classes

LOOPBACK_NETWORKS = ("127.0.0.0/8", "0.0.0.0/8")  # 0.0.0.0 reaches the local host on Linux
LINK_LOCAL_NETWORKS = ("169.254.0.0/16",)
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
LOOPBACK_NAMES = ("localhost",)  # and every name under it
# Names under these suffixes, and names of one label (which a pod's DNS search path completes to a
# Service: minio -> minio.<namespace>.svc.cluster.local), are the cluster's or the site's own.
PRIVATE_NAME_SUFFIXES = ("svc", "local", "internal", "home.arpa")
IPV6_GLOBAL = ipaddress.IPv6Network("2000::/3")
HOST_CLASSES = {"allowLoopback": "a loopback host", "allowLinkLocal": "a link-local host",
                "allowPrivateNetworks": "a private or cluster-internal host"}

DEFAULT_METADATA_HOSTS = (
    "169.254.169.254",  # AWS, Azure, GCP, OpenStack, Oracle and most others
    "169.254.170.2",  # AWS ECS task credentials
    "fd00:ec2::254",  # AWS, over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "metadata.google.internal",
    "metadata",
    "instance-data",
)


def _network_regex(cidr: str) -> str:
    """A dotted quad inside the network, for a host already known to be a dotted quad."""
    network = ipaddress.IPv4Network(cidr)
    octets = network.network_address.packed
    whole, partial = divmod(network.prefixlen, 8)
    parts = [str(octet) for octet in octets[:whole]]
    if partial:
        first = octets[whole]
        parts.append("(?:" + "|".join(str(n) for n in range(first, first + (1 << (8 - partial)))) + ")")
    parts += ["[0-9]{1,3}"] * (4 - len(parts))
    return r"\.".join(parts)


def _caseless(text: str) -> str:
    """A DNS name, dotted quad or IPv6 address as a regular expression matching it in any ASCII case."""
    return "".join(rf"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha() else re.escape(c) for c in text)


def _name_regex(name: str) -> str:
    """The name and every name under it, with or without the final dot."""
    return rf"(?:{_LABEL}\.)*{_caseless(name)}\.?"


def _host_regex(entry: str) -> str:
    """A uriHosts entry: the name (or dotted quad) itself, or with *. any name under it."""
    if entry.startswith("*."):
        return rf"(?:{_LABEL}\.)+{_caseless(entry[2:])}\.?"
    return rf"{_caseless(entry)}\.?"


def _metadata_host(value: str) -> str:
    value = value.strip().lower().removesuffix(".")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    if not _fullmatch(_NAME, value):
        raise ValueError(f"{value!r} is neither a DNS name nor an IP address")
    return value


def _fullmatch(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


# ---------------------------------------------------------------- the policy

HostPattern = Annotated[str, Field(pattern=rf"^(?:(?:\*\.)?{_NAME}|{_IPV4})$", max_length=253), AfterValidator(str.lower)]
BucketPattern = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]*\*?$", max_length=63)]
Registry = Annotated[
    str,
    Field(
        pattern=r"^(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+|[a-z0-9-]+:[0-9]{1,5})(?::[0-9]{1,5})?"
        r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$",
        max_length=255,
    ),
]
EnvNamePattern = Annotated[str, Field(pattern=r"^(?:\*|[A-Za-z_][A-Za-z0-9_]*\*?)$", max_length=128)]
MetadataHost = Annotated[str, AfterValidator(_metadata_host)]


class Policy(BaseModel):
    """What a spec may choose: code, images, placement, where its URIs point and whose credentials serve it.

    The defaults suit a cluster that several teams share. One team alone on its cluster runs the
    quickstart (a python: architecture with its code file) with `allowPythonArchitectures: true`.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    allow_python_architectures: bool = Field(
        default=False,
        description="Whether a spec may use a python:<module>:<callable> architecture and source.code, the file "
        "put on its import path. Either runs code of the spec's choosing in the stage containers (python:os:system "
        "is a command), with the Job's store credentials in its environment.",
    )
    image_registries: list[Registry] = Field(
        default_factory=list,
        description="Registries, or registry/path prefixes, from which a target's image may come "
        "(registry.example.com, registry.example.com/ml). An image must name its registry. Empty: a spec may not "
        "set an image, and its Jobs run the installation's images.",
    )
    placement_fields: list[PlacementField] = Field(
        default_factory=lambda: ["resources"],
        description="The placement fields a target may set. nodeSelector, tolerations and affinity choose nodes "
        "(a toleration with operator Exists and no key tolerates every taint, the control plane's included); "
        "resources is bounded by the namespace's ResourceQuota and LimitRange. placement.env is governed by envNames.",
    )
    env_names: list[EnvNamePattern] = Field(
        default_factory=list,
        description="Environment variable names a target's placement.env may set; NAME_* matches a prefix, * any "
        "name. Empty: none. Variables such as LD_PRELOAD, PYTHONPATH or PYTHONSTARTUP run code of the spec's "
        "choosing. Names starting with MODELDEPLOY_ stay the operator's whatever this says.",
    )
    uri_schemes: list[Scheme] = Field(
        default_factory=lambda: ["s3", "https"],
        description="Schemes a spec's URIs may use (every input, the store, the store's endpoint). http is "
        "plain text, readable and changeable on the way.",
    )
    uri_hosts: list[HostPattern] = Field(
        default_factory=list,
        description="Hosts an http(s) URI or the store's endpoint may name: a DNS name, *.name for any name under "
        "it, or a dotted-quad IPv4 address. Empty: any host the address classes below do not refuse.",
    )
    uri_buckets: list[BucketPattern] = Field(
        default_factory=list,
        description="Buckets an s3:// URI may name; a trailing * matches a prefix (team-a-*). Empty: any. Inputs "
        "of a spec that uses the installation's default store are read with the installation's credentials.",
    )
    allow_loopback: bool = Field(
        default=False,
        description="Whether a host may be a loopback or unspecified address (127.0.0.0/8, 0.0.0.0/8) or "
        "localhost: the operator's own pod and the node's local services.",
    )
    allow_link_local: bool = Field(
        default=False,
        description="Whether a host may be link-local (169.254.0.0/16), where cloud metadata services hand out "
        "node credentials. metadataHosts stay refused either way.",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Whether a host may be a private address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
        "100.64.0.0/10) or a cluster-internal name (one label, or under .svc, .local, .internal, .home.arpa): "
        "the cluster's Services and the site's internal network. An in-cluster S3 endpoint needs it.",
    )
    metadata_hosts: list[MetadataHost] = Field(
        default_factory=lambda: list(DEFAULT_METADATA_HOSTS),
        description="Cloud metadata addresses and names (and names under them), refused whatever the other fields "
        "allow.",
    )
    allow_operator_credentials: bool = Field(
        default=False,
        description="Whether a spec whose artifacts name no secretRef is served with the installation's credentials "
        "(defaultSecret, or else the operator's own identity), for a store, endpoint and deletions it chooses. "
        "False: such a spec must name its Secret, or omit artifacts to use the installation's defaultStore.",
    )

    def allows_env(self, name: str) -> bool:
        if name.startswith(RESERVED_ENV_PREFIX):
            return False
        return any(pattern == "*" or name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1]))
                   for pattern in self.env_names)


# ---------------------------------------------------------------- the operator's check


def violations(spec: ModelDeploymentSpec, policy: Policy) -> list[FieldError]:
    """Every field of `spec` that goes beyond `policy`, with what the policy allows there."""
    errors: list[FieldError] = []
    architecture = spec.source.architecture
    if not policy.allow_python_architectures:
        if architecture is not None and architecture.startswith("python:"):
            errors.append(FieldError("spec.source.architecture", "python: architectures run code the spec chooses; "
                                     "this installation allows timm: and torchvision: (policy.allowPythonArchitectures)"))
        if spec.source.code is not None:
            errors.append(FieldError("spec.source.code", "code files run in the stage; this installation does not "
                                     "allow them (policy.allowPythonArchitectures)"))
    for path, uri in _uris(spec):
        problem = uri_problem(uri, policy)
        if problem is not None:
            errors.append(FieldError(path, problem))
    for index, target in enumerate(spec.targets):
        errors.extend(_target_violations(f"spec.targets[{index}]", target, policy))
    if spec.artifacts is not None and spec.artifacts.secret_ref is None and not policy.allow_operator_credentials:
        errors.append(FieldError("spec.artifacts.secretRef", "is required: this installation lends its own "
                                 "credentials to no store a spec names (omit artifacts to use its default store)"))
    return errors


def _uris(spec: ModelDeploymentSpec) -> Iterator[tuple[str, str]]:
    document = {"spec": spec.model_dump(by_alias=True, exclude_none=True)}
    for path in URI_FIELDS:
        node: Any = document
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            yield path, node


def _target_violations(path: str, target: Target, policy: Policy) -> list[FieldError]:
    errors: list[FieldError] = []
    if target.image is not None and not any(target.image.startswith(registry + "/")
                                            for registry in policy.image_registries):
        allowed = (f"images from {', '.join(policy.image_registries)}" if policy.image_registries
                   else "no image in a spec: its Jobs run the installation's images")
        errors.append(FieldError(f"{path}.image", f"this installation allows {allowed} (policy.imageRegistries)"))
    placement = target.placement
    if placement is None:
        return errors
    allowed_fields = ", ".join(policy.placement_fields) or "none"
    written = {Placement.model_fields[name].alias for name in placement.model_fields_set}
    for field in get_args(PlacementField):
        if field in written and field not in policy.placement_fields:
            errors.append(FieldError(f"{path}.placement.{field}", f"is the installation's to choose; the placement "
                                     f"fields a spec may set: {allowed_fields} (policy.placementFields)"))
    for name in placement.env:
        if name.startswith(RESERVED_ENV_PREFIX):
            errors.append(FieldError(f"{path}.placement.env.{name}", f"{RESERVED_ENV_PREFIX} variables are the "
                                     "operator's (the task and the installation's limits)"))
        elif not policy.allows_env(name):
            allowed = ", ".join(policy.env_names) or "none"
            errors.append(FieldError(f"{path}.placement.env.{name}", f"is not among the variables a spec may set: "
                                     f"{allowed} (policy.envNames)"))
    return errors


def uri_problem(uri: str, policy: Policy) -> str | None:
    """What is wrong with `uri` under `policy`, or None; names the host, never anything fetched from it."""
    scheme_match = re.match(r"([a-z][a-z0-9+.-]*)://", uri)
    allowed_schemes = ", ".join(f"{scheme}://" for scheme in policy.uri_schemes)
    if scheme_match is None:
        return f"is not a URI; this installation allows {allowed_schemes} (policy.uriSchemes)"
    scheme = scheme_match.group(1)
    if scheme not in policy.uri_schemes:
        return f"{scheme}:// is not allowed; this installation allows {allowed_schemes} (policy.uriSchemes)"
    if scheme == "s3":
        found = re.fullmatch(_s3(f"(?P<bucket>{_BUCKET})"), uri)
        if found is None:
            return "is not a well-formed s3://bucket/key URI"
        return _bucket_problem(found.group("bucket"), policy)
    found = re.fullmatch(_web(f"(?P<host>{_HOST})"), uri)
    if found is None:
        return "has no well-formed host (an optional user@, a DNS name, a dotted quad or a bracketed IPv6 address)"
    return host_problem(found.group("host").lower(), policy)


def _bucket_problem(bucket: str, policy: Policy) -> str | None:
    if not policy.uri_buckets or any(bucket == pattern or (pattern.endswith("*") and bucket.startswith(pattern[:-1]))
                                     for pattern in policy.uri_buckets):
        return None
    return f"bucket {bucket} is not among the buckets this installation allows: {', '.join(policy.uri_buckets)} " \
           "(policy.uriBuckets)"


def host_problem(host: str, policy: Policy) -> str | None:
    """What refuses `host` (lowercase, as written in a URI), or None."""
    if _fullmatch(_NUMERIC, host) and not _fullmatch(_IPV4, host):
        return f"host {host} is a number; an IPv4 host must be written as a dotted quad (a.b.c.d, no leading zeros)"
    name = host.removesuffix(".")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"host {host} is not an IPv6 address"
    elif _fullmatch(_IPV4, host):
        address = ipaddress.IPv4Address(host)
    if _is_metadata(name, address, policy):
        return f"host {host} is a cloud metadata service, which this installation refuses (policy.metadataHosts)"
    if isinstance(address, ipaddress.IPv6Address):
        if address not in IPV6_GLOBAL and not (policy.allow_loopback and policy.allow_link_local
                                               and policy.allow_private_networks):
            return (f"host {host} is not a global unicast IPv6 address (2000::/3); other IPv6 hosts need "
                    "policy.allowLoopback, allowLinkLocal and allowPrivateNetworks")
    else:
        refused = sorted(_classes(name, address) - _allowed_classes(policy))
        if refused:
            return f"host {host} is {HOST_CLASSES[refused[0]]}, which this installation refuses (policy.{refused[0]})"
    if policy.uri_hosts and not _listed(name, address, policy.uri_hosts):
        return f"host {host} is not among the hosts this installation allows: {', '.join(policy.uri_hosts)} " \
               "(policy.uriHosts)"
    return None


def _is_metadata(name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, policy: Policy) -> bool:
    if address is None:
        return any(name == entry or name.endswith("." + entry) for entry in policy.metadata_hosts)
    candidates: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = {address}
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.add(address.ipv4_mapped)
    for entry in policy.metadata_hosts:
        try:
            if ipaddress.ip_address(entry) in candidates:
                return True
        except ValueError:
            continue
    return False


def _classes(name: str, address: ipaddress.IPv4Address | None) -> set[str]:
    """The policy switches a host needs: allowLoopback, allowLinkLocal, allowPrivateNetworks."""
    if address is not None:
        networks = {"allowLoopback": LOOPBACK_NETWORKS, "allowLinkLocal": LINK_LOCAL_NETWORKS,
                    "allowPrivateNetworks": PRIVATE_NETWORKS}
        return {switch for switch, cidrs in networks.items()
                if any(address in ipaddress.IPv4Network(cidr) for cidr in cidrs)}
    classes = set()
    if any(name == loopback or name.endswith("." + loopback) for loopback in LOOPBACK_NAMES):
        classes.add("allowLoopback")
    if "." not in name or any(name.endswith("." + suffix) for suffix in PRIVATE_NAME_SUFFIXES):
        classes.add("allowPrivateNetworks")
    return classes


def _allowed_classes(policy: Policy) -> set[str]:
    switches = {"allowLoopback": policy.allow_loopback, "allowLinkLocal": policy.allow_link_local,
                "allowPrivateNetworks": policy.allow_private_networks}
    return {switch for switch, on in switches.items() if on}


def _listed(name: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, hosts: list[str]) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        return False  # the list holds names and dotted quads only
    return any(name == entry or (entry.startswith("*.") and name.endswith(entry[1:])) for entry in hosts)


# ---------------------------------------------------------------- the admission policy

ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"


def admission_policy(policy: Policy, name: str = "modeldeploy-policy") -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding that refuse, at admission, what CEL can tell of `policy`.

    Regular expressions stand in for CEL's url and ip libraries, which other CEL implementations lack:
    hosts are checked as written, as `violations` checks them; `violations` alone also compares IPv6
    addresses by value. An update that leaves the spec as it was (a finalizer, a label) is not checked,
    so a deployment admitted under an earlier policy can still be deleted.
    """
    labels = {"app.kubernetes.io/part-of": "modeldeploy"}
    validations = [{"expression": expression, "message": message, "reason": "Forbidden"}
                   for expression, message in _rules(policy)]
    return [
        {
            "apiVersion": ADMISSION_API_VERSION,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [GROUP], "apiVersions": [VERSION], "operations": ["CREATE", "UPDATE"],
                    "resources": [PLURAL],
                }]},
                "matchConditions": [{
                    "name": "spec-written",
                    "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
                }],
                "validations": validations,
            },
        },
        {
            "apiVersion": ADMISSION_API_VERSION,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        },
    ]


def _text(value: str) -> str:
    """A CEL raw string literal."""
    if "'" in value or "\n" in value:
        raise ValueError(f"{value!r} cannot be a raw CEL string")
    return f"r'{value}'"


def _present(path: str) -> str:
    """CEL: the optional field at `path` (spec.dataset.uri) is set, and so is every field above it."""
    parts = path.split(".")
    return " && ".join(f"has(object.{'.'.join(parts[:end])})" for end in range(2, len(parts) + 1))


def _rules(policy: Policy) -> Iterator[tuple[str, str]]:
    if not policy.allow_python_architectures:
        yield ("!has(object.spec.source.architecture) || !object.spec.source.architecture.startsWith('python:')",
               "spec.source.architecture: python: architectures are not allowed here (policy.allowPythonArchitectures)")
        yield ("!has(object.spec.source.code)",
               "spec.source.code: code files are not allowed here (policy.allowPythonArchitectures)")
    for path in URI_FIELDS:
        value = "object." + path
        for check, message in _uri_rules(policy, value):
            yield f"!({_present(path)}) || ({check})", f"{path}: {message}"
    yield from _target_rules(policy)
    if not policy.allow_operator_credentials:
        yield ("!has(object.spec.artifacts) || has(object.spec.artifacts.secretRef)",
               ("spec.artifacts.secretRef: is required; omit artifacts to use the installation's default store "
                "(policy.allowOperatorCredentials)"))


def _matches(value: str, pattern: str) -> str:
    return f"{value}.matches({_text(pattern)})"


def _uri_rules(policy: Policy, uri: str) -> Iterator[tuple[str, str]]:
    forms = {"s3": _s3(), "https": _web(_HOST, "https"), "http": _web(_HOST, "http")}
    yield (" || ".join(_matches(uri, forms[scheme]) for scheme in policy.uri_schemes) or "false",
           f"must be a well-formed {' or '.join(f'{s}://' for s in policy.uri_schemes)} URI (policy.uriSchemes)")
    if policy.uri_buckets:
        buckets = "|".join(re.escape(pattern.removesuffix("*")) + ("[a-z0-9.-]*" if pattern.endswith("*") else "")
                           for pattern in policy.uri_buckets)
        yield (f"!{uri}.startsWith('s3://') || {_matches(uri, _s3(buckets))}",
               f"the bucket must be one of {', '.join(policy.uri_buckets)} (policy.uriBuckets)")
    yield (f"!{_matches(uri, _web(_NUMERIC))} || {_matches(uri, _web(_IPV4))}",
           "an IPv4 host must be written as a dotted quad")
    if policy.metadata_hosts:
        yield (f"!{_matches(uri, _web(_metadata_regex(policy.metadata_hosts)))}",
               "the host is a cloud metadata service (policy.metadataHosts)")
    if not (policy.allow_loopback and policy.allow_link_local and policy.allow_private_networks):
        yield (f"!{_matches(uri, _web(_IPV6))} || {_matches(uri, _web(_GLOBAL_IPV6))}",
               "an IPv6 host must be a global unicast address (2000::/3)")
    classes = {
        "allowLoopback": (policy.allow_loopback, [*map(_network_regex, LOOPBACK_NETWORKS),
                                                  *map(_name_regex, LOOPBACK_NAMES)]),
        "allowLinkLocal": (policy.allow_link_local, list(map(_network_regex, LINK_LOCAL_NETWORKS))),
        "allowPrivateNetworks": (policy.allow_private_networks, [
            *map(_network_regex, PRIVATE_NETWORKS), rf"{_LABEL}\.?",
            rf"(?:{_LABEL}\.)+(?:{'|'.join(map(_caseless, PRIVATE_NAME_SUFFIXES))})\.?"]),
    }
    for switch, (allowed, patterns) in classes.items():
        if not allowed:
            yield (f"!{_matches(uri, _web('|'.join(patterns)))}",
                   f"the host is {HOST_CLASSES[switch]}, refused here (policy.{switch})")
    if policy.uri_hosts:
        hosts = "|".join(map(_host_regex, policy.uri_hosts))
        yield (f"!{_matches(uri, '(?s)^https?://')} || {_matches(uri, _web(hosts))}",
               f"the host must be one of {', '.join(policy.uri_hosts)} (policy.uriHosts)")


def _metadata_regex(entries: list[str]) -> str:
    patterns = []
    for entry in entries:
        try:
            address = ipaddress.ip_address(entry)
        except ValueError:
            patterns.append(_name_regex(entry))
            continue
        patterns.append(_caseless(entry) if address.version == 4 else rf"\[{_caseless(address.compressed)}\]")
    return "|".join(patterns)


def _target_rules(policy: Policy) -> Iterator[tuple[str, str]]:
    def every_target(check: str) -> str:
        return f"object.spec.targets.all(t, {check})"

    if policy.image_registries:
        prefixes = ", ".join(_text(registry + "/") for registry in policy.image_registries)
        yield (every_target(f"!has(t.image) || [{prefixes}].exists(r, t.image.startsWith(r))"),
               (f"spec.targets[*].image: images must come from {', '.join(policy.image_registries)} "
                "(policy.imageRegistries)"))
    else:
        yield every_target("!has(t.image)"), "spec.targets[*].image: a spec may not set an image (policy.imageRegistries)"
    for field in get_args(PlacementField):
        if field not in policy.placement_fields:
            yield (every_target(f"!has(t.placement) || !has(t.placement.{field})"),
                   f"spec.targets[*].placement.{field}: is the installation's to choose (policy.placementFields)")
    env = "!has(t.placement) || !has(t.placement.env) || t.placement.env.all(name, {})"
    yield (every_target(env.format(f"!name.startsWith('{RESERVED_ENV_PREFIX}')")),
           f"spec.targets[*].placement.env: {RESERVED_ENV_PREFIX} variables are the operator's")
    if "*" not in policy.env_names:
        names = "|".join(pattern.replace("*", ".*") for pattern in policy.env_names)
        yield (every_target(env.format(_matches("name", f"^(?:{names})$") if names else "false")),
               (f"spec.targets[*].placement.env: a spec may set {', '.join(policy.env_names) or 'no variable'} "
                "(policy.envNames)"))

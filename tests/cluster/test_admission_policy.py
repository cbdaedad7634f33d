"""The rendered admission policy on the real API server (v1.36.5): accepted, type-checked, and in agreement with
`violations` on every case.

`tests/test_policy.py` evaluates the policy's CEL with cel-python. This module applies what
`admission_policy(policy)` renders to kube-apiserver itself, so its CEL library, its RE2, its cost budget and its
type checker (the status controller of kube-controller-manager, which reads the CRD's schema) judge it:

1. the project's CRD is applied and Established;
2. a probe policy with a deliberately wrong field shows that the type checker resolves the CRD's schema;
3. the rendered ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding are applied as rendered, and must be
   accepted, with no type-checking warnings in the policy's status. The type checker skips a policy whose rules
   match `apiVersions: ["*"]`, as the rendered one does, so a twin of it naming the CRD's version (and bound to
   nothing) is type-checked too, and must have no warnings either;
4. every case is first created with `dryRun=All` before the policy exists: the CRD alone admits them all, so a
   refusal afterwards is the policy's;
5. once the policy refuses a known-denied spec (it takes a moment to load), every case goes through
   `kubectl apply --dry-run=server` and must be refused exactly when `violations(spec, policy)` is non-empty, with
   a message naming a field `violations` names.

The API server reports only the first refused rule in its error. To compare every rule, not just the first, the
policy also gets a second binding of ours with `validationActions: [Warn]`: the server then answers with one
warning per failed rule, and the fields those name must be the fields `violations` names (with `[*]` for the
target index and `placement.env` for the variable, as the rendered messages write them).
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from modeldeploy.policy import URI_FIELDS, Policy, admission_policy, violations
from modeldeploy.spec import GROUP, PLURAL, VERSION
from modeldeploy.validation import load_documents, load_resource
from specs import Doc, base
from test_policy import ALLOWED_BY_DEFAULT, REFUSED_BY_DEFAULT, with_uri_at

from cluster.control_plane import ApiError, ControlPlane, ControlPlaneError, wait_for

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
EXAMPLES = REPO / "examples"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
POLICY_NAME = "modeldeploy-policy"
WARN_BINDING = f"{POLICY_NAME}-every-rule"
# Refused by every policy: 169.254.169.254 is among the default metadataHosts, which no switch lifts.
SENTINEL_URI = "https://169.254.169.254/latest/meta-data/iam/security-credentials/node"

DEFAULT = Policy()
# A policy of a shared installation that trusts its tenants more: each field away from its default.
OPENED = Policy(
    allow_python_architectures=True,
    image_registries=["registry.example.com/ml", "ghcr.io"],
    placement_fields=["nodeSelector", "tolerations", "resources"],
    env_names=["ASCEND_*", "OMP_NUM_THREADS"],
    uri_schemes=["s3", "https", "http"],
    uri_hosts=["huggingface.co", "*.example.com", "203.0.113.7", "minio.storage.svc"],
    uri_buckets=["models", "data", "artifacts", "modeldeploy-*", "team-a-*"],
    allow_private_networks=True,
    allow_operator_credentials=True,
)


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    name: str
    document: Doc


def _named(document: Doc, name: str) -> Doc:
    document = copy.deepcopy(document)
    document["metadata"] = {"name": name}
    return document


def _mutated(name: str, change: Callable[[Doc], None]) -> Case:
    document = base()
    change(document)
    return Case(name, _named(document, "cases"))


def _weights(uri: str) -> Callable[[Doc], None]:
    def change(document: Doc) -> None:
        document["spec"]["source"]["weights"] = uri
    return change


def _target(index: int, key: str, value: Any) -> Callable[[Doc], None]:
    def change(document: Doc) -> None:
        document["spec"]["targets"][index][key] = value
    return change


def _python_architecture(document: Doc) -> None:
    document["spec"]["source"]["architecture"] = "python:resnet_cifar:resnet50_cifar"


def _python_code(document: Doc) -> None:
    document["spec"]["source"]["architecture"] = "python:resnet_cifar:resnet50_cifar"
    document["spec"]["source"]["code"] = "s3://models/code/resnet_cifar.py"


def _no_secret(document: Doc) -> None:
    del document["spec"]["artifacts"]["secretRef"]


def _no_secret_on_delete(document: Doc) -> None:
    del document["spec"]["artifacts"]["secretRef"]
    document["spec"]["artifacts"]["onDelete"] = "Delete"


def _no_artifacts(document: Doc) -> None:
    del document["spec"]["artifacts"]


def _everything_at_once(document: Doc) -> None:
    document["spec"]["source"]["weights"] = "https://169.254.169.254/latest/"
    document["spec"]["targets"][0]["image"] = "docker.io/someone/tools:latest"
    document["spec"]["targets"][1]["placement"] = {"tolerations": [{"operator": "Exists"}],
                                                   "affinity": {"nodeAffinity": {}}}
    document["spec"]["targets"][2]["placement"] = {"env": {"MODELDEPLOY_MAX_MODEL_BYTES": "1", "LD_PRELOAD": "/x.so"}}
    del document["spec"]["artifacts"]["secretRef"]


def _longest(prefix: str, length: int) -> str:
    return prefix + "k" * (length - len(prefix))


def _longest_uris(document: Doc) -> None:
    """Every URI the pytorch source, an imagenet dataset and the store have, at the CRD's maxLength: what costs
    the admission policy's regular expressions most."""
    spec = document["spec"]
    spec["source"]["weights"] = _longest("s3://models/", 2048)
    spec["dataset"] = {**spec["dataset"], "kind": "imagenet", "uri": _longest("https://data.example.com/", 2048),
                       "labels": _longest("s3://data/", 2048)}
    spec["artifacts"]["uri"] = _longest("s3://artifacts/", 1024)
    spec["artifacts"]["endpoint"] = _longest("https://s3.example.com:9000/", 512)


def _largest(document: Doc) -> None:
    _longest_uris(document)
    document["spec"]["targets"] = [
        {"name": f"cpu-{index}", "backend": "openvino" if index % 2 else "onnxruntime", "precisions": ["fp32"],
         "batchSizes": [1], "placement": {"env": {f"ASCEND_VARIABLE_{number:02d}": "1" for number in range(64)}}}
        for index in range(16)]


def example_cases() -> list[Case]:
    cases = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for index, document in enumerate(load_documents(path)):
            if isinstance(document, dict) and document.get("kind") == "ModelDeployment":
                # created in the test's namespace: an example may name its own (examples/gitops does)
                metadata = {key: value for key, value in document["metadata"].items() if key != "namespace"}
                cases.append(Case(f"example {path.relative_to(EXAMPLES)}#{index}", {**document, "metadata": metadata}))
    return cases


def mutation_cases() -> list[Case]:
    """The base spec (every section written), and mutations that each break one rule of one policy or another."""
    cases = [
        Case("base", _named(base(), "cases")),
        _mutated("uri to the metadata service", _weights(SENTINEL_URI)),
        _mutated("uri to localhost", _weights("https://localhost:8080/x")),
        _mutated("uri to 127.0.0.1", _weights("https://127.0.0.1/x")),
        _mutated("http uri", _weights("http://models.example.com/resnet.pth")),
        _mutated("http uri to a listed host", _weights("http://models.example.com:8080/resnet.pth")),
        _mutated("uri to a listed host", _weights("https://huggingface.co/timm/resnet18/resolve/main/x.pth")),
        _mutated("uri to a listed host, other case and final dot", _weights("https://HuggingFace.co./x")),
        _mutated("uri to a listed host's lookalike", _weights("https://huggingface.co.evil.io/x")),
        _mutated("uri to a listed address", _weights("https://203.0.113.7/x")),
        _mutated("uri to an unlisted address", _weights("https://203.0.113.8/x")),
        _mutated("uri to a name under a listed suffix", _weights("https://a.b.example.com/x")),
        _mutated("uri to a listed suffix itself", _weights("https://example.com/x")),
        _mutated("uri to an in-cluster listed service", _weights("https://minio.storage.svc:9000/x")),
        _mutated("uri to an in-cluster unlisted service", _weights("https://minio.other.svc/x")),
        _mutated("uri to a private address", _weights("https://10.1.2.3/x")),
        _mutated("uri in an unlisted bucket", _weights("s3://elsewhere/x")),
        _mutated("uri in a prefixed bucket", _weights("s3://team-a-models/x")),
        _mutated("uri to the metadata service over http", _weights("http://169.254.169.254/latest/")),
        _mutated("python architecture", _python_architecture),
        _mutated("python architecture with its code", _python_code),
        _mutated("tolerations placement", _target(1, "placement", {"tolerations": [{"operator": "Exists"}]})),
        _mutated("node selector placement", _target(1, "placement", {"nodeSelector": {"pool": "npu"}})),
        _mutated("empty node selector placement", _target(1, "placement", {"nodeSelector": {}})),
        _mutated("affinity placement", _target(1, "placement", {"affinity": {"nodeAffinity": {}}})),
        _mutated("resources placement", _target(1, "placement", {"resources": {"limits": {"memory": "16Gi"}}})),
        _mutated("env MODELDEPLOY_X", _target(2, "placement", {"env": {"MODELDEPLOY_X": "1"}})),
        _mutated("env LD_PRELOAD", _target(2, "placement", {"env": {"LD_PRELOAD": "/tmp/x.so"}})),
        _mutated("env ASCEND_GLOBAL_LOG_LEVEL", _target(2, "placement", {"env": {"ASCEND_GLOBAL_LOG_LEVEL": "1"}})),
        _mutated("env OMP_NUM_THREADS", _target(0, "placement", {"env": {"OMP_NUM_THREADS": "4"}})),
        _mutated("image from an unlisted registry", _target(0, "image", "docker.io/someone/tools:latest")),
        _mutated("image without a registry", _target(0, "image", "ubuntu:24.04")),
        _mutated("image from a listed registry path", _target(2, "image", "registry.example.com/ml/ascend:1")),
        _mutated("image from a listed registry by digest", _target(3, "image", "ghcr.io/modeldeploy/jobs@sha256:"
                                                                              + "0" * 64)),
        _mutated("image from a listed path's lookalike", _target(2, "image", "registry.example.com/ml-evil/x:1")),
        _mutated("image from a listed registry on another port", _target(2, "image", "ghcr.io:5000/x:1")),
        _mutated("artifacts without secretRef", _no_secret),
        _mutated("artifacts without secretRef, onDelete Delete", _no_secret_on_delete),
        _mutated("no artifacts (the default store)", _no_artifacts),
        _mutated("everything at once", _everything_at_once),
    ]
    cases += [_mutated("the longest URIs", _longest_uris),
              _mutated("16 targets of 64 variables each, the longest URIs", _largest)]
    for path in URI_FIELDS:
        # artifacts.uri is s3:// or file:/// by the CRD: a local path stands in for a host there.
        refused = "file:///var/run/secrets/artifacts" if path == "spec.artifacts.uri" else SENTINEL_URI
        cases.append(Case(f"refused uri at {path}", _named(with_uri_at(path, refused), "cases")))
        if path != "spec.artifacts.endpoint":  # an http(s) endpoint by the CRD
            cases.append(Case(f"unlisted bucket at {path}", _named(with_uri_at(path, "s3://elsewhere/x"), "cases")))
        allowed = "https://models.example.com/x" if path == "spec.artifacts.endpoint" else "s3://models/x"
        cases.append(Case(f"plain uri at {path}", _named(with_uri_at(path, allowed), "cases")))
    return cases


def uri_cases() -> list[Case]:
    """The URIs tests/test_policy.py judges, as source.weights: the RE2 of the API server on each."""
    return [_mutated(f"weights {uri!r}", _weights(uri)) for uri in [*REFUSED_BY_DEFAULT, *ALLOWED_BY_DEFAULT]]


CASES = [*example_cases(), *mutation_cases(), *uri_cases()]


# ---------------------------------------------------------------- what the server and `violations` say


def admission_field(path: str) -> str:
    """The field a rendered rule's message names for a path `violations` names: spec.targets[2].placement.env.X
    -> spec.targets[*].placement.env."""
    path = re.sub(r"\[\d+\]", "[*]", path)
    return re.sub(r"(\.placement\.env)\..*$", r"\1", path)


def expected_fields(document: Doc, policy: Policy) -> list[str]:
    return list(dict.fromkeys(admission_field(error.path) for error in violations(load_resource(document).spec,
                                                                                   policy)))


def _field_of(message: str) -> str:
    return message.split(": ", 1)[0]


@dataclass
class Verdict:
    refused: bool
    denial: str = ""  # the server's error, when it refused
    denied_field: str = ""  # the field the rule that refused names
    warned_fields: list[str] = field(default_factory=list)  # the fields of every failed rule (the Warn binding)
    other: str = ""  # an error that is no policy refusal


DENIAL = re.compile(rf"ValidatingAdmissionPolicy '{POLICY_NAME}' with binding '{POLICY_NAME}' denied request: (.*)")
WARNING = re.compile(rf"Warning: Validation failed for ValidatingAdmissionPolicy '{POLICY_NAME}' with binding "
                     rf"'{WARN_BINDING}': (.*)")


def server_verdict(control_plane: ControlPlane, namespace: str, document: Doc) -> Verdict:
    """`kubectl apply --dry-run=server` of the document, as a tenant would apply it."""
    result = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-o", "name", "-f", "-",
                                   input=json.dumps(document), check=False)
    warned = [_field_of(found.group(1)) for found in WARNING.finditer(result.stderr)]
    if result.returncode == 0:
        return Verdict(refused=False, warned_fields=list(dict.fromkeys(warned)))
    denial = DENIAL.search(result.stderr)
    if denial is None:
        return Verdict(refused=True, other=result.stderr.strip())
    return Verdict(refused=True, denial=denial.group(1).strip(), denied_field=_field_of(denial.group(1)),
                   warned_fields=list(dict.fromkeys(warned)))


def disagreement(case: Case, policy: Policy, verdict: Verdict) -> str | None:
    expected = expected_fields(case.document, policy)
    if verdict.other:
        return f"{case.name}: refused for another reason than the policy: {verdict.other}"
    if bool(expected) != verdict.refused:
        said = f"refused: {verdict.denial}" if verdict.refused else "admitted"
        return f"{case.name}: violations names {expected or 'nothing'}, the API server {said}"
    if verdict.refused and verdict.denied_field not in expected:
        return f"{case.name}: violations names {expected}, the API server's refusal names {verdict.denial!r}"
    if sorted(verdict.warned_fields) != sorted(expected):
        return f"{case.name}: violations names {expected}, the failed rules name {verdict.warned_fields}"
    return None


# ---------------------------------------------------------------- the cluster side


def cr_path(namespace: str, name: str = "") -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}" + (f"/{name}" if name else "")


def dry_run_create(control_plane: ControlPlane, namespace: str, document: Doc) -> None:
    control_plane.api.request("POST", cr_path(namespace), document, query={"dryRun": "All"})


@pytest.fixture(scope="module")
def type_checker_reads_the_crd(control_plane: ControlPlane, crd: str) -> Iterator[None]:
    """A policy whose one expression reads a field the CRD does not have: once the status controller warns about
    it, the type checker knows the CRD's schema, and the absence of warnings on ours means something."""
    name = "modeldeploy-type-probe"
    path = f"{ADMISSION}/validatingadmissionpolicies/{name}"
    probe = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [GROUP], "apiVersions": [VERSION],
                                                    "operations": ["CREATE"], "resources": [PLURAL]}]},
            "validations": [{"expression": "object.spec.source.noSuchField == 'attempt-0'"}],
        },
    }
    control_plane.api.create(f"{ADMISSION}/validatingadmissionpolicies", probe)
    attempt = 0

    def warned() -> list[dict[str, str]]:
        # A check made before the CRD's schema was resolvable has no warnings and is not made again for the same
        # generation: a new expression makes a new generation.
        nonlocal attempt
        policy = control_plane.api.get(path)
        if policy.get("status", {}).get("observedGeneration") != policy["metadata"]["generation"]:
            return []
        warnings: list[dict[str, str]] = policy["status"].get("typeChecking", {}).get("expressionWarnings", [])
        if not warnings:
            attempt += 1
            control_plane.api.merge_patch(path, {"spec": {"validations": [
                {"expression": f"object.spec.source.noSuchField == 'attempt-{attempt}'"}]}})
        return warnings

    try:
        warnings = wait_for("the type checker to warn about object.spec.source.noSuchField", warned, timeout=90,
                            interval=1)
        print(f"\ntype-check probe (attempt {attempt}): {warnings}")
        assert "noSuchField" in warnings[0]["warning"]
        yield
    finally:
        control_plane.api.delete(path)


def _rule_message(policy: dict[str, Any], field_ref: str) -> str:
    index = re.match(r"spec\.validations\[([0-9]+)\]", field_ref)
    return policy["spec"]["validations"][int(index.group(1))]["message"] if index else field_ref


def wildcard_versions(policy: dict[str, Any]) -> bool:
    return any("*" in version for rule in policy["spec"]["matchConstraints"]["resourceRules"]
               for version in rule["apiVersions"])


def type_check_twin(control_plane: ControlPlane, rendered: dict[str, Any]) -> list[dict[str, str]]:
    """The status controller's type checker skips a policy whose resource rules name versions by a wildcard
    (apiVersions: ["*"]): it cannot tell which schema to check against, so the policy's own status.typeChecking
    is empty whatever its expressions say. A twin of the policy, identical but for naming the CRD's version and
    having no binding (it refuses nothing), gets every expression checked against the CRD's schema."""
    twin = copy.deepcopy(rendered)
    twin["metadata"] = {"name": f"{POLICY_NAME}-type-twin"}
    for rule in twin["spec"]["matchConstraints"]["resourceRules"]:
        rule["apiVersions"] = [VERSION]
    path = f"{ADMISSION}/validatingadmissionpolicies/{twin['metadata']['name']}"
    try:
        control_plane.api.delete(path)
    except ApiError as err:
        if err.status != 404:
            raise
    wait_for("the previous twin to be gone", lambda: _absent(control_plane, path), timeout=30)
    control_plane.api.create(f"{ADMISSION}/validatingadmissionpolicies", twin)
    try:
        checked = wait_for("the type check of the twin", lambda: _type_checked(control_plane, path), timeout=90,
                           interval=0.5)
        warnings: list[dict[str, str]] = checked["status"]["typeChecking"].get("expressionWarnings", [])
        return warnings
    finally:
        control_plane.api.delete(path)


def _absent(control_plane: ControlPlane, path: str) -> bool:
    try:
        control_plane.api.get(path)
    except ApiError as err:
        return err.status == 404
    return False


def _type_checked(control_plane: ControlPlane, path: str) -> dict[str, Any] | None:
    current: dict[str, Any] = control_plane.api.get(path)
    status = current.get("status", {})
    if status.get("observedGeneration") == current["metadata"]["generation"] and "typeChecking" in status:
        return current
    return None


@dataclass
class Installed:
    policy: dict[str, Any]
    seconds_until_in_force: float


def install(control_plane: ControlPlane, namespace: str, policy: Policy) -> Installed:
    """Applies what admission_policy renders, plus the Warn binding of ours, and waits until it refuses."""
    rendered = admission_policy(policy)
    assert [item["kind"] for item in rendered] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    every_rule = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                  "metadata": {"name": WARN_BINDING}, "spec": {"policyName": POLICY_NAME, "validationActions": ["Warn"]}}
    applied = control_plane.kubectl("apply", "--server-side", "--field-manager=modeldeploy-tests", "-o", "json",
                                    "-f", "-", input=yaml.safe_dump_all([*rendered, every_rule]), check=False)
    assert applied.returncode == 0, f"the API server refused the rendered admission policy:\n{applied.stderr}"
    stored = control_plane.api.get(f"{ADMISSION}/validatingadmissionpolicies/{POLICY_NAME}")
    assert stored["spec"]["validations"] == rendered[0]["spec"]["validations"]
    binding = control_plane.api.get(f"{ADMISSION}/validatingadmissionpolicybindings/{POLICY_NAME}")
    assert binding["spec"]["policyName"] == POLICY_NAME and binding["spec"]["validationActions"] == ["Deny"]

    checked = wait_for("the type check of the admission policy",
                       lambda: _type_checked(control_plane, f"{ADMISSION}/validatingadmissionpolicies/{POLICY_NAME}"),
                       timeout=90, interval=0.5)
    if wildcard_versions(rendered[0]):
        print("\nnote: the rendered policy matches apiVersions '*', so the status controller does not type-check it "
              "(its status.typeChecking is empty by construction); its twin naming the version is checked instead")
    warnings = checked["status"]["typeChecking"].get("expressionWarnings", [])
    assert warnings == [], "the type checker warned:\n" + "\n".join(
        f"{warning['fieldRef']}: {warning['warning']}" for warning in warnings)

    twin_warnings = type_check_twin(control_plane, rendered[0])
    assert twin_warnings == [], "the type checker warned (on the policy's twin of one version):\n" + "\n".join(
        f"{warning['fieldRef']} ({_rule_message(rendered[0], warning['fieldRef'])}): {warning['warning']}"
        for warning in twin_warnings)

    sentinel = _named(base(), "sentinel")
    sentinel["spec"]["source"]["weights"] = SENTINEL_URI
    started = time.monotonic()
    verdict = wait_for("the admission policy to refuse a spec with the metadata service as its weights",
                       lambda: (v := server_verdict(control_plane, namespace, sentinel)).refused and v, timeout=60,
                       interval=0.5)
    in_force = time.monotonic() - started
    assert verdict.denied_field == "spec.source.weights", verdict
    return Installed(checked, in_force)


def uninstall(control_plane: ControlPlane, namespace: str) -> None:
    for kind, name in (("validatingadmissionpolicybindings", WARN_BINDING),
                       ("validatingadmissionpolicybindings", POLICY_NAME),
                       ("validatingadmissionpolicies", POLICY_NAME)):
        try:
            control_plane.api.delete(f"{ADMISSION}/{kind}/{name}")
        except ApiError as err:
            if err.status != 404:
                raise
    sentinel = _named(base(), "sentinel")
    sentinel["spec"]["source"]["weights"] = SENTINEL_URI
    wait_for("the admission policy to be gone", lambda: not server_verdict(control_plane, namespace, sentinel).refused,
             timeout=60, interval=0.5)


@pytest.fixture
def admission(control_plane: ControlPlane, namespace: str, type_checker_reads_the_crd: None) -> Iterator[None]:
    """Nothing of ours is installed before the test, and nothing stays after it."""
    yield
    uninstall(control_plane, namespace)


def the_crd_admits_every_case(control_plane: ControlPlane, namespace: str) -> None:
    refused = []
    for case in CASES:
        try:
            dry_run_create(control_plane, namespace, case.document)
        except ApiError as err:
            refused.append(f"{case.name}: {err}")
    assert refused == [], "the CRD alone refuses cases, which therefore cannot judge the policy:\n" + "\n".join(refused)


def judge_every_case(control_plane: ControlPlane, namespace: str, policy: Policy, label: str) -> None:
    started = time.monotonic()
    disagreements, refused = [], 0
    for case in CASES:
        verdict = server_verdict(control_plane, namespace, case.document)
        refused += verdict.refused
        problem = disagreement(case, policy, verdict)
        if problem is not None:
            disagreements.append(problem)
    elapsed = time.monotonic() - started
    print(f"\n{label}: {len(CASES)} cases, {len(CASES) - len(disagreements)} agree with violations, "
          f"{len(disagreements)} disagree; the API server refused {refused}, admitted {len(CASES) - refused} "
          f"({elapsed:.1f}s for all)")
    for problem in disagreements:
        print(f"  DISAGREES {problem}")
    assert disagreements == [], f"{len(disagreements)} of {len(CASES)} cases disagree:\n" + "\n".join(disagreements)


# ---------------------------------------------------------------- the proof


def test_every_case_is_valid_for_the_operator() -> None:
    """`violations` can judge every case: each loads as the operator loads a spec."""
    for case in CASES:
        load_resource(case.document)
    assert len(CASES) > 100
    assert {bool(expected_fields(case.document, DEFAULT)) for case in CASES} == {True, False}
    assert {bool(expected_fields(case.document, OPENED)) for case in CASES} == {True, False}


def test_the_default_policy_is_accepted_and_refuses_what_violations_refuses(
    control_plane: ControlPlane, namespace: str, admission: None,
) -> None:
    the_crd_admits_every_case(control_plane, namespace)
    installed = install(control_plane, namespace, DEFAULT)
    print(f"\ndefault policy: {len(installed.policy['spec']['validations'])} rules accepted, no type-check warnings, "
          f"in force after {installed.seconds_until_in_force:.1f}s")
    judge_every_case(control_plane, namespace, DEFAULT, "default policy")


def test_an_opened_policy_is_accepted_and_refuses_what_violations_refuses(
    control_plane: ControlPlane, namespace: str, admission: None,
) -> None:
    the_crd_admits_every_case(control_plane, namespace)
    installed = install(control_plane, namespace, OPENED)
    print(f"\nopened policy: {len(installed.policy['spec']['validations'])} rules accepted, no type-check warnings, "
          f"in force after {installed.seconds_until_in_force:.1f}s")
    judge_every_case(control_plane, namespace, OPENED, "opened policy")


def test_a_deployment_stored_before_the_policy_can_still_be_labelled_and_deleted_but_not_edited(
    control_plane: ControlPlane, namespace: str, admission: None,
) -> None:
    """The matchCondition (`object.spec != oldObject.spec`) on real UPDATEs: a spec the default policy refuses,
    stored before the policy, may be labelled and deleted; an edit of its spec is refused; a new one is refused."""
    (quickstart,) = (case.document for case in CASES if case.name == "example cluster/quickstart.yaml#0")
    name = f"stored-{uuid.uuid4().hex[:6]}"
    old = _named(quickstart, name)
    assert expected_fields(old, DEFAULT) == ["spec.source.architecture", "spec.source.code"]
    control_plane.api.create(cr_path(namespace), old)
    install(control_plane, namespace, DEFAULT)

    labelled = control_plane.kubectl("label", "-n", namespace, f"{PLURAL}.{GROUP}/{name}", "team=a", check=False)
    assert labelled.returncode == 0, labelled.stderr
    edited = control_plane.kubectl("patch", "-n", namespace, f"{PLURAL}.{GROUP}/{name}", "--type=merge", "-p",
                                   json.dumps({"spec": {"performance": {"iterations": 10}}}), check=False)
    assert edited.returncode != 0
    denial = DENIAL.search(edited.stderr)
    assert denial is not None, edited.stderr
    assert _field_of(denial.group(1)) == "spec.source.architecture"
    assert "(Forbidden)" in edited.stderr  # the rules' reason, as the HTTP status
    again = server_verdict(control_plane, namespace, _named(quickstart, f"{name}-again"))
    assert again.refused and again.denied_field == "spec.source.architecture", again

    # A spec the policy admits is stored for real, and its own edits within the policy are admitted.
    allowed = _named(base(), f"allowed-{uuid.uuid4().hex[:6]}")
    control_plane.api.create(cr_path(namespace), allowed)
    control_plane.api.merge_patch(cr_path(namespace, allowed["metadata"]["name"]),
                                  {"spec": {"performance": {"iterations": 10}}})
    try:
        control_plane.api.merge_patch(cr_path(namespace, allowed["metadata"]["name"]),
                                      {"spec": {"source": {"weights": SENTINEL_URI}}})
    except ApiError as err:
        assert err.status == 403 and err.reason == "Forbidden", err
        assert "denied request: spec.source.weights: " in str(err), err
    else:
        raise AssertionError("an edit to the metadata service was admitted")

    deleted = control_plane.kubectl("delete", "-n", namespace, f"{PLURAL}.{GROUP}/{name}", "--wait=false",
                                    check=False)
    assert deleted.returncode == 0, deleted.stderr

    try:
        wait_for(f"{name} to be deleted", lambda: _absent(control_plane, cr_path(namespace, name)), timeout=30)
    except ControlPlaneError as err:
        raise AssertionError(f"the deployment stored before the policy was not deleted: {err}") from None

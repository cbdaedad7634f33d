"""The installation's policy: the operator's check (`violations`) and the admission policy's CEL, on the same specs.

Each case is judged twice: by `violations`, and by the rendered ValidatingAdmissionPolicy's expressions
evaluated with cel-python (whose `matches` is RE2, the API server's engine) on the document as the API
server holds it, with the CRD's defaults filled in.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes
from modeldeploy.controller.config import load
from modeldeploy.crd import resource_schema
from modeldeploy.policy import URI_FIELDS, Policy, admission_policy, violations
from modeldeploy.validation import load_resource, with_defaults
from pydantic import ValidationError
from specs import Doc, base

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEFAULT = Policy()


def admission_errors(document: Doc, policy: Policy, old: Doc | None = None) -> list[str]:
    """The messages the admission policy denies `document` with; `old` makes it an UPDATE."""
    admission, binding = admission_policy(policy)
    assert binding["spec"] == {"policyName": admission["metadata"]["name"], "validationActions": ["Deny"]}
    environment = celpy.Environment()
    schema = resource_schema()
    activation = {
        "object": celpy.json_to_cel(with_defaults(document, schema)),
        "oldObject": celpy.json_to_cel(with_defaults(old, schema) if old is not None else None),
        "request": celpy.json_to_cel({"operation": "UPDATE" if old is not None else "CREATE"}),
    }

    def holds(expression: str) -> bool:
        result = environment.program(environment.compile(expression)).evaluate(activation)
        assert isinstance(result, celtypes.BoolType), f"{expression} gave {result!r}"
        return bool(result)

    if not all(holds(condition["expression"]) for condition in admission["spec"]["matchConditions"]):
        return []
    return [rule["message"] for rule in admission["spec"]["validations"] if not holds(rule["expression"])]


def judged(document: Doc, policy: Policy = DEFAULT) -> tuple[list[str], list[str]]:
    """(the paths `violations` names, the paths the admission policy's denials name, each once)."""
    spec = load_resource(document).spec
    denied = [message.split(": ", 1)[0] for message in admission_errors(document, policy)]
    return [error.path for error in violations(spec, policy)], list(dict.fromkeys(denied))


def with_weights(uri: str) -> Doc:
    document = base()
    document["spec"]["source"]["weights"] = uri
    return document


# ---------------------------------------------------------------- defaults


def test_a_spec_of_timm_s3_and_its_own_secret_passes_the_default_policy() -> None:
    assert judged(base()) == ([], [])


def test_the_cluster_quickstart_needs_python_architectures_and_nothing_else() -> None:
    quickstart = yaml.safe_load((EXAMPLES / "cluster" / "quickstart.yaml").read_text())
    paths, denied = judged(quickstart)
    assert paths == ["spec.source.architecture", "spec.source.code"]
    assert denied == paths
    assert judged(quickstart, Policy(allow_python_architectures=True)) == ([], [])


@pytest.mark.parametrize("seed", sorted((EXAMPLES / "seeds").glob("*.yaml")), ids=lambda path: path.stem)
def test_the_seed_guides_pass_unless_they_bring_their_own_architecture(seed: Path) -> None:
    document = yaml.safe_load(seed.read_text())
    python = document["spec"]["source"].get("architecture", "").startswith("python:")
    paths, denied = judged(document)
    assert paths == denied == (["spec.source.architecture", "spec.source.code"] if python else [])


def test_messages_say_what_the_policy_allows() -> None:
    document = with_weights("https://169.254.169.254/latest/meta-data/iam/security-credentials/node")
    document["spec"]["targets"][0]["image"] = "docker.io/someone/tools:latest"
    document["spec"]["targets"][1]["placement"] = {"tolerations": [{"operator": "Exists"}]}
    messages = {str(error) for error in violations(load_resource(document).spec, DEFAULT)}
    assert messages == {
        ("spec.source.weights: host 169.254.169.254 is a cloud metadata service, which this installation refuses "
         "(policy.metadataHosts)"),
        ("spec.targets[0].image: this installation allows no image in a spec: its Jobs run the installation's images "
         "(policy.imageRegistries)"),
        ("spec.targets[1].placement.tolerations: is the installation's to choose; the placement fields a spec may "
         "set: resources (policy.placementFields)"),
    }


# ---------------------------------------------------------------- URIs


REFUSED_BY_DEFAULT = [
    "http://models.example.com/resnet.pth",  # a scheme not allowed
    "file:///etc/shadow",
    "https://169.254.169.254/latest/meta-data/",
    "https://169.254.170.2/v2/credentials/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://METADATA.google.internal./computeMetadata/v1/",
    "https://100.100.100.200/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://169.254.1.1/x",  # link-local
    "https://127.0.0.1:8080/x",
    "https://0.0.0.0/x",
    "https://localhost/x",
    "https://LocalHost/x",
    "https://localho\u017ft/x",  # the long s: IDNA makes it localhost
    "https://api.localhost/x",
    "https://Instance-Data/latest/",
    "https://[::1]/x",
    "https://[::ffff:169.254.169.254]/x",
    "https://[fe80::1]/x",
    "https://2852039166/x",  # 169.254.169.254 as one number
    "https://0xa9fea9fe/x",
    "https://0251.0376.0251.0376/x",
    "https://169.254.43518/x",
    "https://127.0.0.1./x",
    "https://10.0.0.8/x",
    "https://172.20.1.1/x",
    "https://192.168.1.10/x",
    "https://100.64.0.1/x",
    "https://minio/x",  # one label: the pod's DNS search path makes it a Service
    "https://minio.storage.svc/x",
    "https://minio.storage.svc.cluster.local:9000/x",
    "https://printer.local/x",
    "https://user:pass@169.254.169.254/x",
    "https://models.example.com@169.254.169.254/x",
    "https://a@b@models.example.com/x",  # two @: refused rather than guessed
    "https://models.example.com\\@169.254.169.254/x",
    "https://169.254.169.254\\@models.example.com/x",  # a WHATWG parser goes to 169.254.169.254
    "https://models_example.com/x",
    "https://%31%36%39.254.169.254/x",
]
ALLOWED_BY_DEFAULT = [
    "s3://models/resnet18.pth",
    "s3://models/a key with spaces.pth",
    "https://models.example.com/resnet.pth",
    "https://models.example.com:8443/resnet.pth?version=2#top",
    "https://user@models.example.com/resnet.pth",
    "https://8.8.8.8/x",
    "https://172.32.0.1/x",  # just outside 172.16.0.0/12
    "https://100.128.0.1/x",  # just outside 100.64.0.0/10
    "https://[2001:db8::1]/x",
    "https://localhost.example.com/x",
    "https://0xdead.example.com/x",  # a name, not a number
]


@pytest.mark.parametrize("uri", REFUSED_BY_DEFAULT)
def test_uris_the_default_policy_refuses_are_refused_by_both_checks(uri: str) -> None:
    assert judged(with_weights(uri)) == (["spec.source.weights"], ["spec.source.weights"])


@pytest.mark.parametrize("uri", ALLOWED_BY_DEFAULT)
def test_uris_the_default_policy_allows_pass_both_checks(uri: str) -> None:
    assert judged(with_weights(uri)) == ([], [])


def test_each_address_class_has_its_own_switch() -> None:
    cases = {"https://127.0.0.1/x": "allow_loopback", "https://localhost/x": None,
             "https://169.254.1.1/x": "allow_link_local", "https://10.1.2.3/x": "allow_private_networks",
             "https://minio.storage.svc.cluster.local/x": "allow_private_networks"}
    for uri, switch in cases.items():
        for other in ("allow_loopback", "allow_link_local", "allow_private_networks"):
            expected = [] if other == switch else ["spec.source.weights"]
            assert judged(with_weights(uri), Policy(**{other: True})) == (expected, expected), (uri, other)
    # localhost is a loopback name of one label: it needs both switches.
    both = Policy(allow_loopback=True, allow_private_networks=True)
    assert judged(with_weights("https://localhost/x"), both) == ([], [])


def test_metadata_hosts_stay_refused_whatever_the_switches() -> None:
    everything = Policy(allow_loopback=True, allow_link_local=True, allow_private_networks=True,
                        uri_schemes=["s3", "https", "http"])
    for uri in ("http://169.254.169.254/latest/", "http://metadata.google.internal/", "http://metadata/",
                "http://[fd00:ec2::254]/"):
        assert judged(with_weights(uri), everything) == (["spec.source.weights"], ["spec.source.weights"]), uri
    assert judged(with_weights("http://169.254.1.1/"), everything) == ([], [])
    assert judged(with_weights("http://[fe80::1]/"), everything) == ([], [])


def test_ipv6_hosts_outside_2000_3_need_every_switch() -> None:
    two = Policy(allow_loopback=True, allow_link_local=True)
    assert judged(with_weights("https://[::1]/x"), two) == (["spec.source.weights"], ["spec.source.weights"])


def test_a_host_list_narrows_http_uris_and_leaves_s3_alone() -> None:
    policy = Policy(uri_hosts=["HuggingFace.co", "*.example.com", "203.0.113.7"])
    assert policy.uri_hosts[0] == "huggingface.co"
    for uri in ("https://huggingface.co/x", "https://HuggingFace.co./x", "https://models.example.com/x",
                "https://a.b.example.com/x", "https://203.0.113.7/x", "s3://anything/x"):
        assert judged(with_weights(uri), policy) == ([], []), uri
    for uri in ("https://example.com/x", "https://huggingface.co.evil.io/x", "https://evilexample.com/x",
                "https://203.0.113.8/x", "https://[2001:db8::1]/x"):
        assert judged(with_weights(uri), policy) == (["spec.source.weights"], ["spec.source.weights"]), uri
    # Listing a host does not lift an address class: an in-cluster name needs allowPrivateNetworks too.
    internal = Policy(uri_hosts=["minio.storage.svc"])
    assert judged(with_weights("https://minio.storage.svc/x"), internal)[0] == ["spec.source.weights"]
    opened = Policy(uri_hosts=["minio.storage.svc"], allow_private_networks=True)
    assert judged(with_weights("https://minio.storage.svc/x"), opened) == ([], [])


def test_a_bucket_list_narrows_s3_uris() -> None:
    policy = Policy(uri_buckets=["team-a-*", "models", "data", "artifacts"])
    for uri in ("s3://team-a-models/x", "s3://models/resnet18.pth"):
        assert judged(with_weights(uri), policy) == ([], []), uri
    document = with_weights("s3://team-b-models/x")
    document["spec"]["artifacts"]["uri"] = "s3://modelsx/cases"
    assert judged(document, policy) == (["spec.source.weights", "spec.artifacts.uri"],
                                        ["spec.source.weights", "spec.artifacts.uri"])


def with_uri_at(path: str, uri: str) -> Doc:
    """A valid document with `uri` at `path`, one of URI_FIELDS."""
    document = base()
    spec = document["spec"]
    if path == "spec.source.uri":
        spec["source"] = {"format": "onnx", "uri": uri, "inputs": spec["source"]["inputs"]}
    elif path == "spec.source.code":
        spec["source"]["architecture"] = "python:resnet_cifar:resnet50_cifar"
        spec["source"]["code"] = uri
    elif path == "spec.dataset.labels":
        spec["dataset"] = {**spec["dataset"], "kind": "imagenet", "labels": uri}
    elif path == "spec.artifacts.endpoint":
        spec["artifacts"]["endpoint"] = uri
    else:
        section, field = path.split(".")[1:]
        spec[section][field] = uri
    return document


@pytest.mark.parametrize("path", URI_FIELDS)
def test_every_uri_field_is_checked(path: str) -> None:
    policy = Policy(allow_python_architectures=True, uri_buckets=["models", "data", "artifacts"])
    assert judged(with_uri_at(path, "https://models.example.com/x" if path == "spec.artifacts.endpoint"
                              else "s3://models/x"), policy) == ([], [])
    refused = "s3://elsewhere/x" if path == "spec.artifacts.uri" else "https://169.254.169.254/x"
    assert judged(with_uri_at(path, refused), policy) == ([path], [path])


def test_an_http_endpoint_needs_the_http_scheme() -> None:
    document = with_uri_at("spec.artifacts.endpoint", "http://s3.example.com:9000")
    assert judged(document) == (["spec.artifacts.endpoint"], ["spec.artifacts.endpoint"])
    assert judged(document, Policy(uri_schemes=["s3", "http"])) == ([], [])


# ---------------------------------------------------------------- code, images, placement, credentials


def test_images_come_from_the_listed_registries_by_explicit_name() -> None:
    policy = Policy(image_registries=["registry.example.com/ml", "ghcr.io"])
    for image, allowed in {"registry.example.com/ml/ascend:1": True, "ghcr.io/modeldeploy/jobs@sha256:" + "0" * 64: True,
                           "registry.example.com/ml-evil/x:1": False, "registry.example.com/other:1": False,
                           "ghcr.io.evil.io/x:1": False, "ghcr.io:5000/x:1": False, "ubuntu:24.04": False}.items():
        document = base()
        document["spec"]["targets"][2]["image"] = image
        expected = [] if allowed else ["spec.targets[2].image"]
        assert judged(document, policy) == (expected, ["spec.targets[*].image"] if expected else []), image


def test_placement_fields_need_the_policy_to_list_them() -> None:
    document = base()
    document["spec"]["targets"][1]["placement"] = {
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "tolerations": [{"operator": "Exists"}],
        "affinity": {"nodeAffinity": {}},
        "resources": {"limits": {"memory": "16Gi"}},
    }
    paths, denied = judged(document)
    assert paths == [f"spec.targets[1].placement.{field}" for field in ("nodeSelector", "tolerations", "affinity")]
    assert denied == [path.replace("[1]", "[*]") for path in paths]
    everything = Policy(placement_fields=["nodeSelector", "tolerations", "affinity", "resources"])
    assert judged(document, everything) == ([], [])
    document["spec"]["targets"][1]["placement"] = {"resources": {"limits": {"memory": "16Gi"}}}
    assert judged(document, Policy(placement_fields=[])) == (["spec.targets[1].placement.resources"],
                                                            ["spec.targets[*].placement.resources"])
    # Writing a field counts, empty or not, as the admission policy can only tell that it is there.
    document["spec"]["targets"][1]["placement"] = {"nodeSelector": {}}
    assert judged(document) == (["spec.targets[1].placement.nodeSelector"],
                                ["spec.targets[*].placement.nodeSelector"])


def test_env_names_are_allowed_by_pattern_and_the_operators_prefix_never() -> None:
    document = base()
    document["spec"]["targets"][2]["placement"] = {"env": {"ASCEND_GLOBAL_LOG_LEVEL": "1", "LD_PRELOAD": "/tmp/x.so"}}
    assert judged(document) == (["spec.targets[2].placement.env.ASCEND_GLOBAL_LOG_LEVEL",
                                 "spec.targets[2].placement.env.LD_PRELOAD"], ["spec.targets[*].placement.env"])
    assert judged(document, Policy(env_names=["ASCEND_*"])) == (["spec.targets[2].placement.env.LD_PRELOAD"],
                                                                ["spec.targets[*].placement.env"])
    assert judged(document, Policy(env_names=["*"])) == ([], [])
    document["spec"]["targets"][2]["placement"]["env"] = {"MODELDEPLOY_MAX_MODEL_BYTES": "999999999999"}
    assert judged(document, Policy(env_names=["*"])) == (["spec.targets[2].placement.env.MODELDEPLOY_MAX_MODEL_BYTES"],
                                                         ["spec.targets[*].placement.env"])


def test_a_store_without_its_own_secret_needs_the_operator_to_lend_its_credentials() -> None:
    document = base()
    del document["spec"]["artifacts"]["secretRef"]
    document["spec"]["artifacts"]["onDelete"] = "Delete"
    assert judged(document) == (["spec.artifacts.secretRef"], ["spec.artifacts.secretRef"])
    assert judged(document, Policy(allow_operator_credentials=True)) == ([], [])
    del document["spec"]["artifacts"]
    assert judged(document) == ([], [])  # the installation's default store, with its default secret


# ---------------------------------------------------------------- the admission policy itself


def test_the_admission_policy_matches_spec_writes_of_modeldeployments_only() -> None:
    admission, binding = admission_policy(DEFAULT, name="tenants")
    assert (admission["apiVersion"], admission["kind"]) == ("admissionregistration.k8s.io/v1",
                                                            "ValidatingAdmissionPolicy")
    assert (binding["kind"], binding["metadata"]["name"]) == ("ValidatingAdmissionPolicyBinding", "tenants")
    assert admission["spec"]["failurePolicy"] == "Fail"
    assert admission["spec"]["matchConstraints"]["resourceRules"] == [{
        "apiGroups": ["modeldeploy.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"],
        "resources": ["modeldeployments"]}]
    assert all(rule["reason"] == "Forbidden" and rule["message"].startswith("spec.")
               for rule in admission["spec"]["validations"])


def test_an_update_that_leaves_the_spec_alone_is_admitted_so_old_deployments_can_be_deleted() -> None:
    old = with_weights("https://169.254.169.254/x")
    finalized = copy.deepcopy(old)
    finalized["metadata"]["finalizers"] = []
    assert admission_errors(finalized, DEFAULT, old=old) == []
    edited = copy.deepcopy(old)
    edited["spec"]["performance"]["iterations"] = 10
    assert admission_errors(edited, DEFAULT, old=old) != []


def test_the_admission_policy_of_a_permissive_installation_admits_what_its_operator_runs() -> None:
    permissive = Policy(allow_python_architectures=True, image_registries=["registry.example.com"],
                        placement_fields=["nodeSelector", "tolerations", "affinity", "resources"], env_names=["*"],
                        uri_schemes=["s3", "https", "http"], allow_loopback=True, allow_link_local=True,
                        allow_private_networks=True, allow_operator_credentials=True)
    document = with_uri_at("spec.source.code", "http://127.0.0.1:9000/code.py")
    document["spec"]["artifacts"] = {"uri": "s3://artifacts/x", "endpoint": "http://minio.storage.svc:9000"}
    document["spec"]["targets"][2]["image"] = "registry.example.com/ascend:1"
    document["spec"]["targets"][2]["placement"] = {"tolerations": [{"operator": "Exists"}], "env": {"X": "1"}}
    assert judged(document, permissive) == ([], [])


# ---------------------------------------------------------------- configuration


def test_policy_and_limits_come_from_the_config_file_and_the_quickstart_switch_from_the_environment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump({"policy": {"uriHosts": ["*.example.com"], "envNames": ["ASCEND_*"]},
                                    "limits": {"MAX_MODEL_BYTES": 8 * 1024**3}}))
    config = load({"MODELDEPLOY_CONFIG": str(path), "MODELDEPLOY_ALLOW_PYTHON_ARCHITECTURES": "true"})
    assert config.policy == Policy(allow_python_architectures=True, uri_hosts=["*.example.com"],
                                   env_names=["ASCEND_*"])
    assert config.limit_environment() == {"MODELDEPLOY_MAX_MODEL_BYTES": str(8 * 1024**3)}
    assert load({}).policy == DEFAULT


@pytest.mark.parametrize("values", [
    {"policy": {"uriSchemes": ["ftp"]}},
    {"policy": {"uriHosts": ["https://example.com"]}},
    {"policy": {"imageRegistries": ["ubuntu"]}},
    {"policy": {"metadataHosts": ["not a host"]}},
    {"policy": {"placementFields": ["env"]}},
    {"policy": {"allowEverything": True}},
    {"limits": {"max_model_bytes": 1}},
    {"limits": {"MAX_MODEL_BYTES": 0}},
])
def test_a_policy_or_limit_the_operator_cannot_apply_is_refused_at_start(values: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ValidationError):
        load({"MODELDEPLOY_CONFIG": str(path)})


def test_metadata_hosts_are_compared_by_value() -> None:
    policy = Policy(metadata_hosts=["FD00:EC2:0::254", "Metadata.Example."], allow_loopback=True,
                    allow_link_local=True, allow_private_networks=True)
    assert policy.metadata_hosts == ["fd00:ec2::254", "metadata.example"]
    for uri in ("https://[fd00:ec2::254]/x", "https://[fd00:ec2:0:0::254]/x", "https://metadata.example/x"):
        assert [error.path for error in violations(load_resource(with_weights(uri)).spec, policy)] == \
            ["spec.source.weights"], uri
    # Admission compares IPv6 addresses as written: another spelling of one passes it (docs/policy.md says so).
    assert admission_errors(with_weights("https://[fd00:ec2:0:0::254]/x"), policy) == []
    assert admission_errors(with_weights("https://[FD00:EC2::254]/x"), policy) != []

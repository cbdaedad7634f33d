"""The batch/v1 Job that runs one stage task: a pure function of the task, the target and the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeldeploy import backends
from modeldeploy.controller.config import OperatorConfig
from modeldeploy.manifest import TASK_ENVIRONMENT, TaskDocument
from modeldeploy.planner import Task
from modeldeploy.policy import RESERVED_ENV_PREFIX
from modeldeploy.spec import GROUP, KIND, VERSION, Artifacts, Placement, Target

EXIT_REJECTED = 3  # modeldeploy-stage: the user's inputs are at fault, retrying cannot help
CONTAINER = "stage"
MANAGED_BY = "modeldeploy-operator"
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_STAGE = f"{GROUP}/stage"
LABEL_TARGET = f"{GROUP}/target"
ANNOTATION_KEY = f"{GROUP}/task-key"
ANNOTATION_GENERATION = f"{GROUP}/generation"
ANNOTATION_TASK_URI = f"{GROUP}/task-uri"  # one store's task: equal for every deployment that plans it
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"  # the Kueue LocalQueue a Job waits in (docs/kueue.md)


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str
    generation: int


def job_name(owner: str, task: Task) -> str:
    return f"{owner}-{task.kind}-{task.key[:10]}"


def labels(owner: str, task: Task) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "modeldeploy-stage",
        "app.kubernetes.io/component": task.kind,
        "app.kubernetes.io/part-of": "modeldeploy",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_DEPLOYMENT: owner,
        LABEL_STAGE: task.kind,
    }
    if task.target:
        result[LABEL_TARGET] = task.target
    return result


def job_manifest(
    owner: Owner,
    task: Task,
    target: Target | None,
    document: TaskDocument,
    task_uri: str,
    artifacts: Artifacts | None,
    config: OperatorConfig,
) -> dict[str, Any]:
    """The Job carries its task document (in the stage's environment), so creating it needs no store write first;
    `task_uri` is where the stage keeps the document, and names the task in its store."""
    backend = backends.get(task.backend) if task.backend else None
    device = backend.devices.get(target.device or "") if backend and target and task.needs_device else None
    placement = _placement(backend, device, target, config)
    job_labels = labels(owner.name, task)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [_container(target, backend, device, document, artifacts, placement, config)],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,  # a stage talks to its store, never to the API server
    }
    if backend is None or backend.runs_as_non_root:
        pod_spec["securityContext"].update(runAsNonRoot=True, runAsUser=65532, runAsGroup=65532, fsGroup=65532)
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in placement.tolerations]
    if placement.affinity:
        pod_spec["affinity"] = dict(placement.affinity)
    if config.scheduler_name:
        pod_spec["schedulerName"] = config.scheduler_name
    if config.jobs.service_account_name:
        pod_spec["serviceAccountName"] = config.jobs.service_account_name
    if config.jobs.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in config.jobs.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner.name, task),
            "namespace": owner.namespace,
            "labels": {**job_labels, LABEL_QUEUE: config.kueue_queue} if config.kueue_queue else job_labels,
            "annotations": {ANNOTATION_KEY: task.key, ANNOTATION_GENERATION: str(owner.generation),
                            ANNOTATION_TASK_URI: task_uri},
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": owner.name, "uid": owner.uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            # Kueue admits a queued Job by setting suspend to false; the operator never does (docs/kueue.md).
            **({"suspend": True} if config.kueue_queue else {}),
            "backoffLimit": config.jobs.backoff_limit,
            "activeDeadlineSeconds": config.jobs.active_deadline_seconds,
            "ttlSecondsAfterFinished": config.jobs.ttl_seconds_after_finished,
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "FailJob",
                 "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_REJECTED]}},
            ]},
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def _placement(
    backend: backends.Backend | None, device: backends.Device | None, target: Target | None, config: OperatorConfig
) -> Placement:
    """Backend device defaults, then the installation's placement for the backend, then the target's own."""
    layers: list[Placement] = []
    if device is not None:
        layers.append(Placement.model_validate({"nodeSelector": dict(device.node_selector),
                                                "tolerations": [dict(t) for t in device.tolerations],
                                                "env": dict(device.env)}))
    if backend is not None and backend.name in config.placement:
        layers.append(config.placement[backend.name])
    if target is not None and target.placement is not None:
        layers.append(target.placement)
    node_selector: dict[str, str] = {}
    tolerations: list[Any] = []
    affinity: dict[str, Any] = {}
    env: dict[str, str] = {}
    resources = config.jobs.resources
    for layer in layers:
        node_selector.update(layer.node_selector)
        env.update(layer.env)
        tolerations.extend(t for t in layer.tolerations if t not in tolerations)
        affinity = dict(layer.affinity) or affinity
        if layer.resources is not None:
            resources = resources.model_copy(update={
                "limits": {**resources.limits, **layer.resources.limits},
                "requests": {**resources.requests, **layer.resources.requests},
            })
    return Placement(node_selector=node_selector, tolerations=tolerations, affinity=affinity, resources=resources,
                     env=env)


def _container(
    target: Target | None,
    backend: backends.Backend | None,
    device: backends.Device | None,
    document: TaskDocument,
    artifacts: Artifacts | None,
    placement: Placement,
    config: OperatorConfig,
) -> dict[str, Any]:
    assert placement.resources is not None
    limits = dict(placement.resources.limits)
    requests = dict(placement.resources.requests)
    if device is not None and device.resource is not None:
        # Extended resources are requested in limits; requests default to them.
        resource = config.resource_names.get(device.resource, device.resource)
        assert backend is not None and target is not None  # a device comes from a target's backend
        limits[resource] = backend.device_count(target, document.stage)
        requests.pop(resource, None)
    operator_environment = [{"name": TASK_ENVIRONMENT, "value": document.model_dump_json(by_alias=True)}]
    operator_environment += [{"name": name, "value": value} for name, value in config.limit_environment().items()]
    operator_environment += _environment(artifacts, config)
    # The operator's variables win over placement's: a spec cannot lift a limit or point HOME elsewhere.
    operator_names = {item["name"] for item in operator_environment}
    placement_environment = [{"name": name, "value": value} for name, value in placement.env.items()
                             if name not in operator_names and not name.startswith(RESERVED_ENV_PREFIX)]
    return {
        "name": CONTAINER,
        "image": target.image if target is not None and target.image else config.image(backend, target),
        "command": ["modeldeploy-stage"],
        "env": placement_environment + operator_environment,
        "resources": {"limits": limits, "requests": requests},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    }


def _environment(artifacts: Artifacts | None, config: OperatorConfig) -> list[dict[str, Any]]:
    """Store access for the stage: endpoint and region as values, credentials only by Secret reference."""
    environment: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}]
    endpoint = (artifacts.endpoint if artifacts else None) or config.s3_endpoint
    region = (artifacts.region if artifacts else None) or config.s3_region
    if endpoint:
        environment.append({"name": "AWS_ENDPOINT_URL_S3", "value": endpoint})
    if region:
        environment.append({"name": "AWS_REGION", "value": region})
    secret = artifacts.secret_ref.name if artifacts and artifacts.secret_ref else config.default_secret
    if secret:
        for key, optional in (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False),
                              ("AWS_SESSION_TOKEN", True)):
            environment.append(
                {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}
            )
    return environment


def task_key_of(job: Mapping[str, Any]) -> str | None:
    return (job.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_KEY)

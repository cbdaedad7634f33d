"""The operator's scenarios (tests/scenarios.py) on the real control plane: `kubectl apply` → the operator, as the
ServiceAccount examples/cluster/rbac.yaml binds (every namespace) → Jobs run by the real Job controller, placed by
the scheduler, their pods run by the process kubelet → artifacts in moto's S3 → status.

With MODELDEPLOY_E2E_CLUSTER=1 the same scenarios run against the cluster of KUBECONFIG instead
(tests/e2e_cluster/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from scenarios import SCENARIOS, Operator

from cluster.operator_env import EXAMPLES, SERVICE_ACCOUNT, Environment, Kube, running_operator, whoami

pytest_plugins = ["cluster.operator_fixtures"]


@pytest.fixture(scope="module")
def cluster(environment: Environment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, Operator, Any]]:
    s3 = environment.create_buckets("modeldeploy-examples", "modeldeploy-artifacts")
    for name in ("digits_cnn.py", "digits_cnn.pt"):
        s3.upload_file(str(EXAMPLES / name), "modeldeploy-examples", f"quickstart/{name}")
    with running_operator(environment, tmp_path_factory.mktemp("operator"), every_namespace=True) as (kube, operator):
        yield kube, operator, s3


def test_the_operator_runs_as_its_service_account(cluster: tuple[Kube, Operator, Any]) -> None:
    kube, operator, _ = cluster
    kubeconfig = operator.environment["KUBECONFIG"]
    assert whoami(kubeconfig, kube.kubectl_binary) == f"system:serviceaccount:modeldeploy-system:{SERVICE_ACCOUNT}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.__name__ for scenario in SCENARIOS])
def test_scenario(scenario: Callable[..., None], cluster: tuple[Kube, Operator, Any]) -> None:
    scenario(*cluster)

"""The operator's scenarios against an outside cluster: those of tests/cluster/test_operator.py, the same test
functions and fixtures, with the `environment` fixture pointed at the cluster of KUBECONFIG instead of the local
control plane. Skipped unless asked for:

    MODELDEPLOY_E2E_CLUSTER=1                   run them (against KUBECONFIG, default ~/.kube/config)
    MODELDEPLOY_E2E_S3_ENDPOINT=http://...      an S3 endpoint that this machine and the cluster's pods
                                                both reach (e.g. MinIO on a NodePort of a kind node)
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY   its credentials (put into the s3-credentials Secret)
    MODELDEPLOY_E2E_IMAGE=...                   the CPU job image the cluster can pull or has loaded

The operator runs on this machine against the cluster, as `modeldeploy operator`, with a token of the
ServiceAccount examples/cluster/rbac.yaml binds; the README's "End-to-end on kind" section sets such a
cluster up. The same happens with `MODELDEPLOY_E2E_CLUSTER=1 pytest tests/cluster/test_operator.py`.
"""

from __future__ import annotations

import pytest
from cluster.operator_env import outside
from cluster.test_operator import (  # noqa: F401 - the tests and their fixture, collected here
    cluster,
    test_scenario,
    test_the_operator_runs_as_its_service_account,
)

pytest_plugins = ["cluster.operator_fixtures"]
pytestmark = pytest.mark.skipif(not outside(), reason="set MODELDEPLOY_E2E_CLUSTER=1 to run against KUBECONFIG")

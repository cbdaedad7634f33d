"""The committed GitOps checks: gitops/argocd's health.lua against its health_test.yaml under gopher-lua, and kstatus
on the same captured objects (tests/gitops; tests/cluster/test_gitops_status.py captures them again)."""

from __future__ import annotations

import re

from gitops_checks import MODEL_DEPLOYMENT, go_test, vendor_module


def test_the_health_check_and_kstatus_on_the_committed_objects() -> None:
    result = go_test()
    assert result.returncode == 0, f"go test failed:\n{result.stdout}\n{result.stderr}"
    passed = re.findall(r"--- PASS: (\S+)", result.stdout)
    files = sorted(path.name for path in (MODEL_DEPLOYMENT / "testdata").glob("*.yaml"))
    assert files, "no testdata"
    for name in files:  # each object in both library settings and under kstatus
        assert sum(name in test and "openLibs" in test for test in passed) == 2, name
        assert any(test.startswith("TestKstatus/") and name in test for test in passed), name


def test_the_harness_passes_argo_cds_own_health_checks() -> None:
    """The Lua harness of tests/gitops gives what Argo CD's own test expects of the health checks bundled into Argo CD
    (their health_test.yaml and testdata, from its Go module), run with every library as Argo CD runs those."""
    argo_cd = vendor_module("github.com/argoproj/argo-cd/v3@v3.5.8")
    result = go_test(argo_cd / "resource_customizations", "TestArgoCDHealth", MODELDEPLOY_GITOPS_LIBS="open")
    assert result.returncode == 0, f"go test failed:\n{result.stdout[-20000:]}\n{result.stderr}"
    assert len(re.findall(r"--- PASS: TestArgoCDHealth/", result.stdout)) > 1000

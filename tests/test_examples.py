"""Every example validates and plans; each seed guide has its ModelDeployment."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXAMPLES, REPO
from modeldeploy import backends
from modeldeploy.planner import plan
from modeldeploy.validation import load_documents, load_resource

ALL = sorted(path for path in EXAMPLES.rglob("*.yaml") if "kind: ModelDeployment" in path.read_text())


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(EXAMPLES)) for p in ALL])
def test_example_validates_and_plans(path: Path) -> None:
    for document in load_documents(path):
        resource = load_resource(document)
        result = plan(resource.spec)
        assert result.cells and result.report


def test_every_seed_guide_has_a_deployment() -> None:
    guides = sorted(path.name[:3] for path in (REPO.parent / "shared" / "seeds").glob("*.txt"))
    examples = sorted(path.name[:3] for path in (EXAMPLES / "seeds").glob("*.yaml"))
    assert examples == ["000", "001", "002", "003", "004"]
    if guides:  # shared/ sits beside the clone in CI and on developer machines
        assert examples == guides


def test_quickstart_runs_on_cpu_backends_only() -> None:
    (document,) = load_documents(EXAMPLES / "quickstart.yaml")
    spec = load_resource(document).spec
    assert all(not backends.get(target.backend).devices for target in spec.targets)
    assert {precision for target in spec.targets for precision in target.precisions} == {"fp32", "int8"}
    assert sorted({size for target in spec.targets for size in target.evaluated_batch_sizes()}) == [1, 8, 32]

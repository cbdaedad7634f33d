"""The kustomize base config/: generated from the chart's defaults (cluster/kustomize_base.py), rendered by
`kubectl kustomize` (the kustomize built into kubectl v1.36) into the chart's objects, and applied to the real
API server with a server-side dry run."""

from __future__ import annotations

from typing import Any

import yaml

from cluster.control_plane import ControlPlane
from cluster.kustomize_base import CONFIG, NAMESPACE, base_objects, files


def _key(document: dict[str, Any]) -> tuple[str, str, str]:
    return document["kind"], document["metadata"].get("namespace", ""), document["metadata"]["name"]


def test_config_is_generated_from_the_charts_defaults() -> None:
    expected = files()
    assert sorted(path.name for path in CONFIG.iterdir()) == sorted(expected)
    for name, text in expected.items():
        assert (CONFIG / name).read_text() == text, \
            f"config/{name} differs: run PYTHONPATH=tests .venv/bin/python -m cluster.kustomize_base"


def test_kubectl_kustomize_gives_the_charts_objects(control_plane: ControlPlane, crd: str) -> None:
    rendered = control_plane.kubectl("kustomize", str(CONFIG)).stdout
    built = sorted((document for document in yaml.safe_load_all(rendered) if document), key=_key)
    assert built == sorted(base_objects(), key=_key)

    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))  # a dry run creates nothing
    applied = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                                    "--field-manager=modeldeploy-kustomize-tests", "-f", "-", input=rendered,
                                    timeout=120).stdout
    assert applied.count("(server dry run)") == len(built), applied

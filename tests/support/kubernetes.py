"""Reading the manifests under deploy/kubernetes/ (tests/repo/test_kubernetes*.py).

>>> sorted(objects(K8S / "replicas"))
['Deployment', 'Service']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # PyYAML: a dev dependency

__all__ = ["K8S", "REPO", "container", "objects"]

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"


def objects(folder: Path) -> dict[str, dict[str, Any]]:
    """The objects of ``folder``'s manifests (the kustomization aside), by kind: one of each."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert doc["kind"] not in by_kind, f"two {doc['kind']} objects in {folder.name}"
                by_kind[doc["kind"]] = doc
    return by_kind


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment's one container."""
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]

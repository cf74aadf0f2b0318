"""deploy/kubernetes/: structural checks of the manifests (no cluster needed).

Kinds and API versions, the kustomization listing every manifest, labels that
select, ports that match the image (50051, metrics 9464) between the
Deployment, its probes and the Service, native gRPC probes on
grpc.health.v1, resources, a non-root read-only securityContext with writable
/tmp and data volumes, the data PVC and the token Secret, and a drain period
(LOSSD_GRACE_S) shorter than terminationGracePeriodSeconds.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: a dev dependency

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"


def _load(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    assert docs, f"{name} is empty"
    return docs


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every object in deploy/kubernetes/*.yaml (kustomization aside), by kind."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _load(path.name):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path.name}: {doc.keys()}"
            assert doc["kind"] not in by_kind, f"two {doc['kind']} objects"
            by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (c,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_kinds_and_api_versions(manifests: dict[str, dict[str, Any]]) -> None:
    assert {k: m["apiVersion"] for k, m in manifests.items()} == {
        "Deployment": "apps/v1", "Service": "v1", "PersistentVolumeClaim": "v1"}


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = _load("kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_single_writer_job_store(manifests: dict[str, dict[str, Any]]) -> None:
    """SQLite on a ReadWriteOnce volume: one replica, and no overlap during an update."""
    spec = manifests["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    pvc = manifests["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_selectors_match(manifests: dict[str, dict[str, Any]]) -> None:
    deployment, service = manifests["Deployment"], manifests["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selector and all(labels.get(k) == v for k, v in selector.items()), selector


def test_ports_match_image_probes_and_service(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9464}
    env = _env(container)
    assert env["LOSSD_PORT"] == str(ports["grpc"])
    assert env["LOSSD_METRICS_PORT"] == str(ports["metrics"])
    assert env["LOSSD_HOST"] == "0.0.0.0"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^EXPOSE 50051$", dockerfile, re.M)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    service_ports = {p["name"]: p for p in manifests["Service"]["spec"]["ports"]}
    assert set(service_ports) == set(ports)
    for name, port in service_ports.items():
        assert port["targetPort"] == name and port["port"] == ports[name]
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])


def test_grpc_health_probes(container: dict[str, Any]) -> None:
    """Kubernetes' native gRPC probes speak grpc.health.v1; readiness watches the LossService,
    which turns NOT_SERVING while the server drains."""
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert set(container[probe]) & {"grpc", "exec", "httpGet", "tcpSocket"} == {"grpc"}, probe
    assert container["livenessProbe"]["grpc"].get("service", "") == ""
    assert container["readinessProbe"]["grpc"]["service"] == "lossd.v1.LossService"
    from lossd.v1 import lossd_pb2

    assert "LossService" in lossd_pb2.DESCRIPTOR.services_by_name


def test_resources(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_jobs_and_threads_are_sized_to_the_cpu_limit() -> None:
    """LOSSD_MAX_JOBS and LOSSD_WORKERS default to counts of the node's CPUs (Python reads no cgroup quota):
    unset, a 32-CPU node ran 16 jobs in the pod's 2 CPUs (an audit, 2026-12-05). Every Deployment sets them."""
    for path in sorted(K8S.glob("**/deployment.yaml")):
        (deployment,) = [d for d in _load(str(path.relative_to(K8S))) if d["kind"] == "Deployment"]
        (c,) = deployment["spec"]["template"]["spec"]["containers"]
        cpus = float(c["resources"]["limits"]["cpu"])
        env = _env(c)
        assert 1 <= int(env["LOSSD_MAX_JOBS"]) <= max(1, cpus // 2), path
        assert 1 <= int(env["LOSSD_WORKERS"]) <= cpus, path


def test_make_image_passes_extras_to_the_build() -> None:
    """The PostgreSQL manifest needs an image with the postgres extra: `make image EXTRAS=...` builds one
    (the docs said `make image --build-arg ...`, which make refuses)."""
    out = subprocess.run(["make", "-n", "image", "ENGINE=podman", "EXTRAS=server,metrics,postgres"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "--build-arg EXTRAS=server,metrics,postgres" in out, out
    plain = subprocess.run(["make", "-n", "image", "ENGINE=podman"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout
    assert "--build-arg" not in plain, plain


def test_security_context(manifests: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["fsGroup"] == 10001  # the data volume is writable
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "USER 10001:10001" in (REPO / "Dockerfile").read_text()


def test_writable_mounts_and_token(manifests: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    """Read-only root: /tmp is an emptyDir and /data the PVC (= LOSSD_DATA_DIR); the token is a Secret."""
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = _env(container)
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert env["LOSSD_DATA_DIR"] == "/data"
    assert "persistentVolumeClaim" in volumes[mounts["/data"]["name"]]
    token_file = Path(env["LOSSD_TOKEN_FILE"])
    token_mount = mounts[str(token_file.parent)]
    assert token_mount["readOnly"] is True
    assert volumes[token_mount["name"]]["secret"]["secretName"]
    assert not any("token" in str(v).lower() for k, v in env.items() if k != "LOSSD_TOKEN_FILE"), \
        "no token value in the manifest"


def test_drain_fits_the_termination_grace_period(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    grace = manifests["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert float(_env(container)["LOSSD_GRACE_S"]) + 5 <= grace


def test_env_names_are_server_settings(container: dict[str, Any]) -> None:
    """Every LOSSD_* variable set is one the server reads (LOSSD_TOKEN_FILE: --token-file)."""
    from lossd.server._config import build_parser

    helps = json.dumps([a.help for a in build_parser()._actions])
    for name in _env(container):
        assert name in helps, f"{name} is not a `lossd serve` setting"

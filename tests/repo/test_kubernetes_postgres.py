"""deploy/kubernetes/postgres/: training replicas sharing a PostgreSQL job store (no cluster needed).

Structural checks: the kustomization lists every manifest; several replicas that roll (a new pod is ready
before an old one drains); the job store URL comes from a Secret, never a literal; no volume claim (the
database keeps jobs and checkpoints); readiness watches TrainingService (NOT_SERVING without its database);
a headless Service selects exactly these pods; and the pod is the main Deployment's in everything else.
"""

from __future__ import annotations

import yaml
from support.kubernetes import K8S, container, objects

SHARED = K8S / "postgres"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((SHARED / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in SHARED.glob("*.yaml")} - {"kustomization.yaml"}


def test_replicas_roll_and_keep_no_volume() -> None:
    spec = objects(SHARED)["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate" and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(objects(SHARED)["Deployment"])["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/data"]]
    assert not any("persistentVolumeClaim" in v for v in volumes.values())


def test_the_job_store_url_comes_from_a_secret() -> None:
    env = {e["name"]: e for e in container(objects(SHARED)["Deployment"])["env"]}
    store = env["LOSSD_JOB_STORE"]
    assert "value" not in store and store["valueFrom"]["secretKeyRef"] == {"name": "lossd-job-store", "key": "url"}
    assert float(env["LOSSD_JOB_LEASE_S"]["value"]) > 0
    text = (SHARED / "deployment.yaml").read_text()
    assert "postgresql://lossd:PASSWORD@" in text and text.count("postgresql://") == 1  # only the comment


def test_readiness_follows_the_training_service() -> None:
    probe = container(objects(SHARED)["Deployment"])["readinessProbe"]
    assert probe["grpc"]["service"] == "lossd.v1.TrainingService"


def test_headless_service_selects_only_these_replicas() -> None:
    mine, main = objects(SHARED), objects(K8S)
    service, deployment = mine["Service"], mine["Deployment"]
    assert service["spec"]["clusterIP"] == "None"
    selector = service["spec"]["selector"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in selector.items())
    for other in (main["Deployment"], objects(K8S / "replicas")["Deployment"]):
        other_labels = other["spec"]["template"]["metadata"]["labels"]
        assert not all(other_labels.get(k) == v for k, v in selector.items())
    assert f"dns:///{service['metadata']['name']}." in (SHARED / "kustomization.yaml").read_text()


def test_same_pod_as_the_main_deployment_otherwise() -> None:
    a, b = container(objects(SHARED)["Deployment"]), container(objects(K8S)["Deployment"])
    for key in ("image", "ports", "resources", "startupProbe", "livenessProbe", "securityContext", "volumeMounts"):
        assert a[key] == b[key], key
    shared_env = [e for e in a["env"] if e["name"] not in ("LOSSD_JOB_STORE", "LOSSD_JOB_LEASE_S")]
    assert shared_env == b["env"]
    pod_a = objects(SHARED)["Deployment"]["spec"]["template"]["spec"]
    pod_b = objects(K8S)["Deployment"]["spec"]["template"]["spec"]
    for key in ("securityContext", "terminationGracePeriodSeconds", "automountServiceAccountToken"):
        assert pod_a[key] == pod_b[key], key

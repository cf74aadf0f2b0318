"""deploy/kubernetes/replicas/: EvaluateLoss replicas behind a headless Service (no cluster needed).

Structural checks: the kustomization lists every manifest; the Service is
headless (DNS answers with every ready pod, for the SDK's round_robin) and
selects only the replicas, never the job-store pod; the replicas keep no job
store (an emptyDir at /data, no PVC) and may roll; and the pod is the main
Deployment's in everything else (image, ports, probes, security, token), so
the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import yaml
from support.kubernetes import K8S, container, objects

from lossd.client import ClientConfig

REPLICAS = K8S / "replicas"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((REPLICAS / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in REPLICAS.glob("*.yaml")} - {"kustomization.yaml"}


def test_headless_service_selects_only_the_replicas() -> None:
    replicas, main = objects(REPLICAS), objects(K8S)
    service, deployment = replicas["Service"], replicas["Deployment"]
    assert set(replicas) == {"Service", "Deployment"}
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["name"] != main["Service"]["metadata"]["name"]
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert all(labels[k] == v for k, v in selector.items())
    job_store_labels = main["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert not all(job_store_labels.get(k) == v for k, v in selector.items()), "selects the job-store pod"
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("grpc", 50051, "grpc")


def test_the_documented_target_balances() -> None:
    service = objects(REPLICAS)["Service"]
    target = f"dns:///{service['metadata']['name']}.default.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    config = ClientConfig.from_env(target, environ={})
    assert config.service_config()["loadBalancingConfig"] == [{"round_robin": {}}]
    assert f"dns:///{service['metadata']['name']}." in (REPLICAS / "kustomization.yaml").read_text()


def test_no_job_store_and_rolling_updates() -> None:
    deployment = objects(REPLICAS)["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/data"]]
    assert not any("persistentVolumeClaim" in v for v in volumes.values())


def test_same_pod_as_the_job_store_deployment_otherwise() -> None:
    mine, main = objects(REPLICAS)["Deployment"], objects(K8S)["Deployment"]
    a, b = container(mine), container(main)
    for key in ("image", "ports", "env", "resources", "startupProbe", "livenessProbe", "readinessProbe",
                "securityContext", "volumeMounts"):
        assert a[key] == b[key], key
    pod_a, pod_b = mine["spec"]["template"]["spec"], main["spec"]["template"]["spec"]
    for key in ("securityContext", "terminationGracePeriodSeconds", "automountServiceAccountToken"):
        assert pod_a[key] == pod_b[key], key
    volumes_a = {v["name"]: v for v in pod_a["volumes"]}
    volumes_b = {v["name"]: v for v in pod_b["volumes"]}
    assert volumes_a.keys() == volumes_b.keys()
    assert {k: v for k, v in volumes_a.items() if k != "data"} == {k: v for k, v in volumes_b.items() if k != "data"}

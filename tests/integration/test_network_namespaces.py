"""Real networks between "machines": network namespaces of their own (``ip netns`` + veth pairs, made and
removed by the test). Skips, saying why, where namespaces cannot be made (not root, no iproute2).

- A partition between a replica and the job store (PostgreSQL on the host side of the pairs): cutting the
  owner's link, its lease lapses, the other replica takes the job over and finishes it with the parameters
  of an uninterrupted run, and the cut-off replica, unable to renew, stops its worker.
- A data-parallel job on two machines: the server in one namespace, ``lossd join`` in the other, gloo and the
  rendezvous over the link between them (the loopback version is in test_training_distributed.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from lossd.v1 import training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.postgres import PostgresServer, unavailable_reason
from support.procstat import alive, wait_for
from support.servers import ServedProcess
from support.training import request

#: Minutes of replicas and failovers: `make replicas` runs them (LOSSD_REPLICA_TESTS=1), `make test` skips them.
pytestmark = pytest.mark.replicas

TOKEN = secrets.token_hex(16)
AUTH = [("authorization", f"Bearer {TOKEN}")]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Namespaces:
    """``n`` network namespaces, each joined to the host by a veth pair: host 10.231.i.1, namespace 10.231.i.2."""

    def __init__(self, n: int) -> None:
        tag = f"{os.getpid() % 100000}"
        self.names = [f"lossd-{tag}-{i}" for i in range(1, n + 1)]
        self.host_links = [f"lh{tag}x{i}" for i in range(1, n + 1)]
        self.made: list[str] = []

    def host(self, i: int) -> str:
        return f"10.231.{i + 1}.1"

    def inside(self, i: int) -> str:
        return f"10.231.{i + 1}.2"

    def make(self) -> None:
        for i, (ns, link) in enumerate(zip(self.names, self.host_links)):
            _ip("netns", "add", ns)
            self.made.append(ns)
            peer = link.replace("lh", "ln", 1)
            _ip("link", "add", link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            _ip("addr", "add", f"{self.host(i)}/24", "dev", link)
            _ip("link", "set", link, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{self.inside(i)}/24", "dev", peer)
            _ip("netns", "exec", ns, "ip", "link", "set", peer, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def link_between(self) -> tuple[str, str]:
        """A veth pair between the first two namespaces (10.232.0.1 in the first, 10.232.0.2 in the second);
        returns its two interface names."""
        a, b = self.host_links[0].replace("lh", "la", 1), self.host_links[0].replace("lh", "lb", 1)
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        for ns, name, address in ((self.names[0], a, "10.232.0.1"), (self.names[1], b, "10.232.0.2")):
            _ip("link", "set", name, "netns", ns)
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", name)
            _ip("netns", "exec", ns, "ip", "link", "set", name, "up")
        return a, b

    def cut(self, i: int) -> None:
        _ip("link", "set", self.host_links[i], "down")

    def mend(self, i: int) -> None:
        _ip("link", "set", self.host_links[i], "up")

    def remove(self) -> None:
        for ns, link in zip(self.names, self.host_links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
            if ns in self.made:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture()
def namespaces() -> Iterator[Namespaces]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (ip)")
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    spaces = Namespaces(2)
    try:
        spaces.make()
    except subprocess.CalledProcessError as e:
        spaces.remove()
        pytest.skip(f"network namespaces cannot be made here: {e.stderr.decode(errors='replace').strip()}")
    try:
        yield spaces
    finally:
        spaces.remove()


SPEC = {
    "model": {"mlp": {"hidden": [16, 8], "dropout": 0.1}},
    "data": {"builtin": {"name": "moons", "params": {"n_samples": 2000, "noise": 0.2}}, "validation_fraction": 0.2},
    "loss": {"name": "cross_entropy"}, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "schedule": {"cosine": {}}, "epochs": 12, "batch_size": 16, "seed": 5, "metrics": ["accuracy"],
}


def _starts(servers: list[ServedProcess], job_id: str) -> list[tuple[int, int]]:
    import re

    out = []
    for i, s in enumerate(servers):
        for line in list(s.log):
            m = re.search(rf"job {job_id} started in worker pid (\d+)", line)
            if m:
                out.append((i, int(m.group(1))))
    return out


def _logs(servers: list[ServedProcess]) -> str:
    return "\n".join(f"--- replica {i}:\n" + "".join(s.log) for i, s in enumerate(servers))


def test_a_replica_cut_off_from_the_store_loses_its_job_to_another(namespaces: Namespaces, tmp_path: Path) -> None:
    db = PostgresServer.start_new(None, listen=("127.0.0.1", namespaces.host(0), namespaces.host(1)))
    try:
        with ExitStack() as stack:
            servers = [stack.enter_context(ServedProcess.start(
                tmp_path, "--host", namespaces.inside(i), "--data-dir", str(tmp_path / f"r{i}"),
                "--job-lease-s", "2", prefix=("ip", "netns", "exec", namespaces.names[i]),
                env={"LOSSD_JOB_STORE": db.url_at(namespaces.host(i)), "LOSSD_TOKEN": TOKEN}))
                for i in range(2)]
            stubs = [training_pb2_grpc.TrainingServiceStub(stack.enter_context(grpc.insecure_channel(s.address)))
                     for s in servers]
            req = request(SPEC)
            req.detach = True
            job_id = [r.event for r in stubs[0].TrainJob(req, timeout=60, metadata=AUTH)][0].job_id
            assert wait_for(lambda: len(_starts(servers, job_id)) == 1, 120, 0.05), _logs(servers)
            owner, worker = _starts(servers, job_id)[0]
            other = 1 - owner
            events: list[Any] = []

            def follow() -> None:
                for reply in stubs[other].WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=240, metadata=AUTH):
                    events.append(reply.event)

            watcher = threading.Thread(target=follow, daemon=True)
            watcher.start()
            assert wait_for(lambda: any(e.kind == pb.JOB_EVENT_KIND_EPOCH for e in events), 120, 0.05)
            namespaces.cut(owner)
            try:
                # The cut-off replica cannot renew: it stops its worker; the other one claims the job and resumes.
                assert wait_for(lambda: not alive(worker), 60, 0.1), _logs(servers)
                assert wait_for(lambda: any(i == other for i, _ in _starts(servers, job_id)), 60, 0.1), _logs(servers)
                watcher.join(240)
                assert not watcher.is_alive()
            finally:
                namespaces.mend(owner)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            states = [e.state for e in events if e.kind == pb.JOB_EVENT_KIND_STATE]
            assert states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_SUCCEEDED, states
            assert sum(1 for s in states if s in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)) == 1
            assert pb.JOB_STATE_INTERRUPTED in states  # the takeover
            assert any(f"job {job_id}: lease lost" in line for line in list(servers[owner].log)), _logs(servers)
            final = [r.event for r in stubs[other].TrainJob(request(SPEC), timeout=240, metadata=AUTH)][-1]
            assert events[-1].parameters == final.parameters  # as an uninterrupted run, bit for bit
    finally:
        db.destroy()


def test_two_machines_in_two_namespaces_train_what_one_machine_does(namespaces: Namespaces, tmp_path: Path) -> None:
    from support.tools import run_tool, tool_env, tool_path
    from support.training import small_spec

    here, there = namespaces.link_between()
    spec = small_spec(model={"mlp": {"hidden": [8, 4], "output_activation": "sigmoid"}},
                      regularization={"l1": 0.001, "l2": 0.002},
                      optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}, epochs=3, batch_size=50,
                      step_events_per_second=0, world_size=2)
    endpoint = "10.232.0.1:29511"
    with ServedProcess.start(tmp_path, "--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"), "--rdzv-endpoint",
                             endpoint, prefix=("ip", "netns", "exec", namespaces.names[0]),
                             env={"LOSSD_TOKEN": TOKEN, "GLOO_SOCKET_IFNAME": here}) as served, \
            grpc.insecure_channel(f"{namespaces.inside(0)}:{served.address.rsplit(':', 1)[1]}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        req = request({**spec, "nodes": 2})
        req.detach = True
        job_id = [r.event for r in stub.TrainJob(req, timeout=60, metadata=AUTH)][0].job_id
        port = served.address.rsplit(":", 1)[1]
        joiner = run_tool(["ip", "netns", "exec", namespaces.names[1], tool_path("lossd", "pip install -e ."),
                           "--target", f"10.232.0.1:{port}", "join", job_id, "--rdzv-endpoint", endpoint],
                          env=tool_env(LOSSD_TOKEN=TOKEN, GLOO_SOCKET_IFNAME=there), timeout=240)
        assert joiner.returncode == 0, joiner.stderr
        assert joiner.stdout.strip() == f"{job_id} joined: this machine's ranks finished"
        final = [r.event for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=120, metadata=AUTH)][-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
        one_machine = [r.event for r in stub.TrainJob(request(spec), timeout=240, metadata=AUTH)][-1]
        assert final.parameters == one_machine.parameters  # the same two ranks, over a real link between machines

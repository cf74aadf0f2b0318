"""Replicas sharing a PostgreSQL job store, against ``python -m lossd.server`` processes and a real PostgreSQL
server that the tests start (tests/support/postgres.py): failover after kill -9 with bit-identical parameters,
fencing of a replica paused past its lease, cancel through a replica that does not own the job, 200 jobs over
3 replicas each run once, a database restart mid-job, watchers on a replica that does not own the job.

Leases are 2 s here (``--job-lease-s 2``), so failovers take seconds.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from lossd.v1 import training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.procstat import alive, cpu_seconds, wait_for
from support.servers import ServedProcess
from support.training import request, small_spec

#: Minutes of replicas and failovers: `make replicas` runs them (LOSSD_REPLICA_TESTS=1), `make test` skips them.
pytestmark = pytest.mark.replicas

LEASE_S = 2.0
#: Dropout, momentum, a schedule and L1/L2 (everything a resume restores); about 2 s of training.
SPEC = small_spec(
    model={"mlp": {"hidden": [16, 8], "dropout": 0.1}},
    data={"builtin": {"name": "moons", "params": {"n_samples": 2000, "noise": 0.2}}, "validation_fraction": 0.2},
    loss={"name": "cross_entropy"},
    optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
    schedule={"cosine": {}},
    regularization={"l1": 0.0001, "l2": 0.001},
    epochs=10, batch_size=16, seed=11,
)
#: A job of a few milliseconds.
TINY = small_spec(data={"builtin": {"name": "rings", "params": {"n_positive": 20, "n_negative": 20}},
                        "validation_fraction": 0.25}, epochs=1, batch_size=10)
TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@contextmanager
def replicas(tmp_path: Path, url: str, n: int, *args: str) -> Iterator[list[ServedProcess]]:
    """``n`` servers on one job store, each with its own data directory; started together."""
    with ExitStack() as stack, ThreadPoolExecutor(n) as pool:
        def start(i: int) -> ServedProcess:
            return stack.enter_context(ServedProcess.start(
                tmp_path, "--data-dir", str(tmp_path / f"replica-{i}"), "--job-lease-s", str(LEASE_S), *args,
                env={"LOSSD_JOB_STORE": url}))
        yield list(pool.map(start, range(n)))


def _stub(served: ServedProcess) -> training_pb2_grpc.TrainingServiceStub:
    return training_pb2_grpc.TrainingServiceStub(grpc.insecure_channel(served.address))


def _owner(servers: list[ServedProcess], job_id: str, which: int = -1) -> tuple[int, int]:
    """(index of the server whose log says it started ``job_id``'s worker, that worker's pid) for the
    ``which``-th start in time (default: the latest)."""
    starts = []
    for i, served in enumerate(servers):
        for line in list(served.log):
            m = re.search(rf"^(\S+ \S+) .*job {job_id} started in worker pid (\d+)", line)
            if m:
                starts.append((m.group(1), i, int(m.group(2))))
    assert starts, _logs(servers)
    _, index, pid = sorted(starts)[which]
    return index, pid


def _logs(servers: list[ServedProcess]) -> str:
    return "\n".join(f"--- replica {i}:\n" + "".join(s.log) for i, s in enumerate(servers))


def _starts(servers: list[ServedProcess], job_id: str) -> int:
    return _count(servers, f"job {job_id} started in worker pid")


def _count(servers: list[ServedProcess], text: str) -> int:
    return sum(1 for s in servers for line in list(s.log) if text in line)


def _job_lines(servers: list[ServedProcess], job_id: str) -> str:
    """Every replica's log lines about ``job_id`` (and its lease warnings), for a failure message."""
    return "\n".join(f"replica {i}: {line.rstrip()}" for i, s in enumerate(servers) for line in list(s.log)
                     if job_id in line or "lease renewed late" in line)


def _follow(stub: training_pb2_grpc.TrainingServiceStub, job_id: str, out: list[pb.JobEvent]) -> None:
    """Collect every event of ``job_id`` through WatchJob, re-attaching after the last seq on UNAVAILABLE."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            after = out[-1].seq if out else 0
            for reply in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after), timeout=180):
                out.append(reply.event)
                if reply.event.kind == pb.JOB_EVENT_KIND_STATE and reply.event.state in TERMINAL:
                    return
            if out and out[-1].state in TERMINAL:
                return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.2)


def _submit(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, Any]) -> str:
    """Submit ``spec`` (detached: the reply ends after the QUEUED event); returns the job id."""
    req = request(spec)
    req.detach = True
    return str([r.event for r in stub.TrainJob(req, timeout=60)][0].job_id)


def _reference(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, Any]) -> pb.JobEvent:
    final = [r.event for r in stub.TrainJob(request(spec), timeout=180)][-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
    return final


def _check_one_run(events: list[pb.JobEvent]) -> None:
    """Gap-free seq from 1, one terminal event, last; each run (from a RUNNING event on) only goes forward, and
    a run after the first follows an INTERRUPTED event (its claim): no write of a stale owner between."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    terminal = [e for e in events if e.kind == pb.JOB_EVENT_KIND_STATE and e.state in TERMINAL]
    assert len(terminal) == 1 and terminal[0] is events[-1]
    states = [e.state for e in events if e.kind == pb.JOB_EVENT_KIND_STATE]
    assert states[:2] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING], states
    for i in range(2, len(states) - 1, 2):
        assert states[i:i + 2] == [pb.JOB_STATE_INTERRUPTED, pb.JOB_STATE_RUNNING], states
    step = 0
    for e in events:
        if e.kind == pb.JOB_EVENT_KIND_STATE and e.state == pb.JOB_STATE_RUNNING:
            step = 0
        if e.step:
            assert e.step >= step, [(x.seq, x.kind, x.state, x.step) for x in events]
            step = e.step


@pytest.fixture()
def db_url(postgres: Any) -> str:
    return str(postgres.fresh_database())


def test_kill_9_of_the_owner_another_replica_finishes_with_identical_parameters(tmp_path: Path, db_url: str) -> None:
    """A data-parallel job (world_size 2: rank 0's checkpoints reach the store through its worker). And a
    watcher on the replica that does not own the job sees every event, in order, without a gap."""
    spec = {**SPEC, "world_size": 2}
    with replicas(tmp_path, db_url, 2) as servers:
        stubs = [_stub(s) for s in servers]
        job_id = _submit(stubs[0], spec)
        assert wait_for(lambda: _starts(servers, job_id) == 1, 120, 0.05), _logs(servers)
        owner, worker = _owner(servers, job_id)
        other = 1 - owner
        watched: list[pb.JobEvent] = []
        watcher = threading.Thread(target=_follow, args=(stubs[other], job_id, watched), daemon=True)
        watcher.start()
        # Mid-job: after the epoch-2 event (its checkpoint is in the store with it).
        assert wait_for(lambda: any(e.kind == pb.JOB_EVENT_KIND_EPOCH and e.epoch >= 2 for e in watched), 60, 0.05)
        owner, worker = _owner(servers, job_id)  # the latest start (a lease can also lapse under heavy load)
        other = 1 - owner
        servers[owner].proc.send_signal(signal.SIGKILL)
        servers[owner].proc.wait(10)
        assert wait_for(lambda: not alive(worker), 10, 0.05), "the worker outlived its server"
        watcher.join(120)
        assert not watcher.is_alive()
        _check_one_run(watched)
        assert watched[-1].state == pb.JOB_STATE_SUCCEEDED
        assert _owner(servers, job_id)[0] == other  # the survivor claimed it after the lease lapsed
        resumed = [e for e in watched if e.kind == pb.JOB_EVENT_KIND_STATE and e.state == pb.JOB_STATE_RUNNING][-1]
        assert resumed.message.startswith("resumed from the checkpoint at step"), resumed.message
        final = watched[-1]
        assert [h.epoch for h in final.history] == list(range(1, 11))
        job = stubs[other].GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
        runs = sum(1 for e in watched if e.kind == pb.JOB_EVENT_KIND_STATE and e.state == pb.JOB_STATE_RUNNING)
        assert (job.state, job.resumes, job.last_seq) == (pb.JOB_STATE_SUCCEEDED, runs - 1, final.seq)
        reference = _reference(stubs[other], spec)
        assert final.parameters == reference.parameters  # every float, exactly
        assert list(final.history) == list(reference.history)


def test_sigstop_past_the_lease_then_sigcont_no_second_run_no_stale_write(tmp_path: Path, db_url: str) -> None:
    with replicas(tmp_path, db_url, 2) as servers:
        stubs = [_stub(s) for s in servers]
        job_id = _submit(stubs[0], SPEC)
        assert wait_for(lambda: _starts(servers, job_id) == 1, 120, 0.05), _logs(servers)
        owner, worker = _owner(servers, job_id)
        other = 1 - owner
        watched: list[pb.JobEvent] = []
        watcher = threading.Thread(target=_follow, args=(stubs[other], job_id, watched), daemon=True)
        watcher.start()
        assert wait_for(lambda: any(e.kind == pb.JOB_EVENT_KIND_EPOCH for e in watched), 60, 0.05)
        owner, worker = _owner(servers, job_id)  # the latest start (a lease can also lapse under heavy load)
        other, started = 1 - owner, _starts(servers, job_id)
        servers[owner].proc.send_signal(signal.SIGSTOP)
        try:  # past its lease: the other replica claims the job and resumes it
            assert wait_for(lambda: _starts(servers, job_id) > started, 120, 0.05), _logs(servers)
            # The frozen server's worker takes no step past the lease it was told of: it idles.
            if alive(worker):
                before = cpu_seconds(worker)
                time.sleep(1.0)
                assert cpu_seconds(worker) - before < 0.3, "the stale owner's worker kept training"
        finally:
            servers[owner].proc.send_signal(signal.SIGCONT)
        watcher.join(120)
        assert not watcher.is_alive()
        _check_one_run(watched)  # every event after the claim is the new owner's: no stale write between
        assert watched[-1].state == pb.JOB_STATE_SUCCEEDED and _owner(servers, job_id)[0] == other
        # The paused replica woke up, found its lease gone and stopped its worker without writing.
        assert wait_for(lambda: not alive(worker), 30, 0.05), "the stale owner's worker still runs"
        assert wait_for(lambda: any(f"job {job_id}: lease lost" in line for line in list(servers[owner].log)),
                        30, 0.05), _logs(servers)
        final = stubs[owner].GetJob(pb.GetJobRequest(job_id=job_id), timeout=30).job  # it answers again
        assert (final.state, final.last_seq) == (pb.JOB_STATE_SUCCEEDED, watched[-1].seq)
        reference = _reference(stubs[other], SPEC)
        assert watched[-1].parameters == reference.parameters


def test_the_store_answers_again_soon_after_the_database_returns(db_url: str, postgres: Any) -> None:
    """psycopg-pool retried its lost connections with a doubling delay and no cap below its 5-minute
    reconnect_timeout: after an outage of 20 s (40 s) the store failed every call for 9.2 s (18.2 s) more, while
    a plain connection worked at once (the PostgreSQL audit, 2026-12-06). Every call is one attempt now."""
    from lossd.server.training._pgstore import PostgresJobStore
    from lossd.server.training._store import StoreUnavailable

    store = PostgresJobStore(db_url, timeout_s=1.5)
    try:
        store.list_jobs([], 10)
        postgres.stop()
        try:
            ends = time.monotonic() + 20
            while time.monotonic() < ends:
                with pytest.raises(StoreUnavailable):
                    store.list_jobs([], 10)
                time.sleep(0.5)
        finally:
            postgres.start()
        back = time.monotonic()
        while True:
            try:
                store.list_jobs([], 10)
                break
            except StoreUnavailable:
                assert time.monotonic() - back < 5, "the store still fails 5 s after the database returned"
                time.sleep(0.1)
    finally:
        store.close()


def test_training_health_follows_the_database_through_an_outage(tmp_path: Path, db_url: str, postgres: Any) -> None:
    """Two busy replicas (--max-jobs 1, a job each): once their jobs' leases were lost they had no lease to renew
    and no free slot to claim for, so their ticks asked the database nothing and said SERVING through the rest of
    a 20 s outage, and a readiness probe kept them in rotation (the PostgreSQL audit, 2026-12-06). Each tick now
    asks the database something: NOT_SERVING for as long as it is down, SERVING soon after it is back."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with replicas(tmp_path, db_url, 2, "--max-jobs", "1") as servers:
        jobs = [_submit(_stub(servers[0]), {**SPEC, "epochs": 500, "seed": seed}) for seed in (1, 2)]
        assert wait_for(lambda: all(_starts(servers, j) == 1 for j in jobs), 120, 0.05), _logs(servers)
        checks = [health_pb2_grpc.HealthStub(grpc.insecure_channel(s.address)) for s in servers]

        def serving(i: int) -> bool:
            request = health_pb2.HealthCheckRequest(service="lossd.v1.TrainingService")
            return bool(checks[i].Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING)

        postgres.stop()
        try:
            assert wait_for(lambda: not serving(0) and not serving(1), 30, 0.1), _logs(servers)
            ends = time.monotonic() + 15  # the jobs' leases (2 s) are lost meanwhile
            while time.monotonic() < ends:
                assert not serving(0) and not serving(1), _logs(servers)
                time.sleep(0.2)
        finally:
            postgres.start()
        assert wait_for(lambda: serving(0) and serving(1), 15, 0.1), _logs(servers)


def test_cancel_of_a_job_whose_owner_is_frozen_ends_it_once_the_lease_lapses(tmp_path: Path, db_url: str) -> None:
    """The owner is frozen (SIGSTOP) and the other replica is busy (--max-jobs 1), so nobody reads the request:
    CancelJob through the other replica answered OK after 13-20 s with the job still RUNNING (the PostgreSQL
    audit, 2026-12-06). It asks again at each wake-up, and once the frozen owner's lease lapses the store
    cancels the job itself: CANCELLED, within the lease and a poll."""
    with replicas(tmp_path, db_url, 2, "--max-jobs", "1") as servers:
        stubs = [_stub(s) for s in servers]
        jobs = [_submit(stubs[0], {**SPEC, "epochs": 500}) for _ in range(2)]
        assert wait_for(lambda: all(_starts(servers, j) == 1 for j in jobs), 120, 0.05), _logs(servers)
        owner, _ = _owner(servers, jobs[0])
        other = 1 - owner
        servers[owner].proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            job = stubs[other].CancelJob(pb.CancelJobRequest(job_id=jobs[0]), timeout=60).job
            assert job.state == pb.JOB_STATE_CANCELLED, job
            assert time.monotonic() - started < LEASE_S + 5, time.monotonic() - started
        finally:
            servers[owner].proc.send_signal(signal.SIGCONT)
        assert stubs[other].CancelJob(pb.CancelJobRequest(job_id=jobs[1]), timeout=60).job.state == \
            pb.JOB_STATE_CANCELLED


@pytest.fixture(scope="module")
def trio(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServedProcess]]:
    """Three replicas on one fresh database, for the tests that leave them running."""
    with replicas(tmp_path_factory.mktemp("trio"), postgres.fresh_database(), 3, "--max-jobs", "2",
                  "--max-queued-jobs", "500", "--metrics-port", "0") as servers:
        yield servers


def _metrics(served: ServedProcess) -> str:
    """The replica's /metrics page (``--metrics-port 0``: the address is in its log)."""
    import urllib.request

    def address() -> str | None:
        m = re.search(r"metrics on (http://\S+/metrics)", "".join(served.log))
        return m.group(1) if m else None

    assert wait_for(lambda: address() is not None, 30, 0.05), "".join(served.log)
    with urllib.request.urlopen(str(address()), timeout=10) as reply:
        return str(reply.read().decode())


def test_cancel_sent_to_a_replica_that_does_not_own_the_job(trio: list[ServedProcess]) -> None:
    stubs = [_stub(s) for s in trio]
    job_id = _submit(stubs[0], {**SPEC, "epochs": 200})
    assert wait_for(lambda: _starts(trio, job_id) == 1, 120, 0.05), _logs(trio)
    owner, worker = _owner(trio, job_id)
    events: list[pb.JobEvent] = []
    watcher = threading.Thread(target=_follow, args=(stubs[owner], job_id, events), daemon=True)
    watcher.start()
    assert wait_for(lambda: any(e.kind == pb.JOB_EVENT_KIND_EPOCH for e in events), 60, 0.05)
    other = (owner + 1) % 3
    job = stubs[other].CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=60).job
    assert job.state == pb.JOB_STATE_CANCELLED, job
    watcher.join(30)
    _check_one_run(events)
    assert events[-1].state == pb.JOB_STATE_CANCELLED and events[-1].message.startswith("cancelled after step")
    assert wait_for(lambda: not alive(worker), 30, 0.05)


def test_200_jobs_across_3_replicas_each_run_exactly_once(trio: list[ServedProcess]) -> None:
    stubs = [_stub(s) for s in trio]
    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(lambda i: _submit(stubs[i % 3], {**TINY, "seed": i}), range(200)))
    assert len(set(ids)) == 200

    def ended() -> bool:
        jobs = stubs[0].ListJobs(pb.ListJobsRequest(limit=1000), timeout=30).jobs
        mine = {j.job_id: j.state for j in jobs if j.job_id in set(ids)}
        return len(mine) == 200 and all(s in TERMINAL for s in mine.values())

    assert wait_for(ended, 240, 0.5), _logs(trio)
    for i, job_id in enumerate(ids):
        events = [r.event for r in stubs[(i + 1) % 3].WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30)]
        _check_one_run(events)
        states = [e.state for e in events if e.kind == pb.JOB_EVENT_KIND_STATE]
        assert states == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED], (job_id, states)
        # One worker start, or (a lease lapsed under load, before the first run stored anything) each earlier
        # starter fenced: it logged the lost lease and stopped its worker. Never a silent second run.
        starts, fenced = _starts(trio, job_id), _count(trio, f"job {job_id}: lease lost")
        assert starts == 1 or fenced >= starts - 1, _job_lines(trio, job_id)
    per_replica = [sum(1 for line in list(s.log) if "started in worker pid" in line) for s in trio]
    assert all(n > 0 for n in per_replica), per_replica  # the work was shared


def test_postgres_restart_mid_job_replicas_reconnect_and_the_job_finishes(trio: list[ServedProcess],
                                                                          postgres: Any) -> None:
    """While the database is down: TrainingService is NOT_SERVING and answers UNAVAILABLE (the SDK's
    ``Unavailable``, which it retries), LossService serves. The database password is in no log, error or
    metric of any replica."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from lossd.client import Client, Unavailable

    stubs = [_stub(s) for s in trio]
    job_id = _submit(stubs[0], SPEC)
    assert wait_for(lambda: _starts(trio, job_id) == 1, 120, 0.05), _logs(trio)
    events: list[pb.JobEvent] = []
    watcher = threading.Thread(target=_follow, args=(stubs[2], job_id, events), daemon=True)
    watcher.start()
    assert wait_for(lambda: any(e.kind == pb.JOB_EVENT_KIND_EPOCH for e in events), 60, 0.05)
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(trio[1].address))

    def training_health() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(service="lossd.v1.TrainingService"), timeout=10).status)

    postgres.stop()
    try:
        assert wait_for(lambda: training_health() == health_pb2.HealthCheckResponse.NOT_SERVING, 30, 0.1)
        with pytest.raises(grpc.RpcError) as info:
            stubs[1].ListJobs(pb.ListJobsRequest(), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert postgres.password not in (info.value.details() or "")
        with Client(trio[1].address) as client, pytest.raises(Unavailable) as sdk:
            client.get_job(job_id)
        assert postgres.password not in str(sdk.value)
        assert health.Check(health_pb2.HealthCheckRequest(service="lossd.v1.LossService"),
                            timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        with Client(trio[1].address) as client:
            assert client.evaluate("mse", [1.0, 2.0], [1.0, 0.0]).value == 2.0
    finally:
        postgres.start()
    assert wait_for(lambda: training_health() == health_pb2.HealthCheckResponse.SERVING, 30, 0.1)
    watcher.join(180)
    assert not watcher.is_alive()
    _check_one_run(events)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    assert events[-1].parameters == _reference(stubs[0], SPEC).parameters
    with Client(trio[1].address) as client:
        assert client.get_job(job_id).state == pb.JOB_STATE_SUCCEEDED
    for s in trio:
        assert postgres.password not in "".join(s.log)
        page = _metrics(s)
        assert "# TYPE lossd_" in page and postgres.password not in page

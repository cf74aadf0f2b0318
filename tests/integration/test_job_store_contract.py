"""The job store's contract, on both implementations (SQLite in a folder, PostgreSQL on a real server the tests
start): claims, renewals, fencing by generation, cancel requests, checkpoints; schema versions; concurrent
claims from several replicas; an unreachable database at start (exit 2, password masked)."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from unittest.mock import patch
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lossd.server.training._store import (
    JobStore,
    LeaseLost,
    SQLiteJobStore,
    StoreError,
)
from lossd.server.training._stores import open_store
from lossd.v1 import training_pb2 as pb


def _state(state: int, **kw: Any) -> pb.JobEvent:
    return pb.JobEvent(kind=pb.JOB_EVENT_KIND_STATE, state=state, **kw)


def _queued(store: JobStore, job_id: str) -> None:
    store.create_job(job_id, "", b"spec", epochs=1, total_steps=1, encoding="raw")
    store.append_event(job_id, _state(pb.JOB_STATE_QUEUED))


@contextlib.contextmanager
def _postgres_store_with(postgres: Any, tmp_path: Path, job: str) -> Iterator[tuple[JobStore, str]]:
    """A PostgreSQL store on a database of its own holding queued ``job``, and the database's name; closed after."""
    url = postgres.fresh_database()
    store = open_store(url, tmp_path)
    try:
        _queued(store, job)
        yield store, url.rsplit("/", 1)[1]
    finally:
        store.close()


def _end_sessions(admin: Any, database: str) -> int:
    """End every session on ``database`` (as a restart does) and wait until their processes are gone, so that
    their sockets are closed (``pg_terminate_backend`` only signals them). Returns how many there were."""
    ended = [pid for (pid,) in admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))]
    admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (ended,))
    for _ in range(200):
        if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,)).fetchone():
            return len(ended)
        time.sleep(0.05)
    raise AssertionError(f"the sessions {ended} did not end in 10 s")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        s: JobStore = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    else:
        s = open_store(request.getfixturevalue("postgres").fresh_database(), tmp_path)
    yield s
    s.close()


def test_claims_leases_and_fencing(store: JobStore) -> None:
    a, b, c = "00000000000a", "00000000000b", "00000000000c"
    for job in (a, b, c):
        _queued(store, job)
    first = store.claim("replica-1", 30.0, 2)
    assert [(x.row.job_id, x.lease.generation, x.row.spec) for x in first] == [(a, 1, b"spec"), (b, 1, b"spec")]
    assert [x.row.job_id for x in store.claim("replica-2", 30.0, 5)] == [c]  # held jobs are not claimed again
    assert store.claim("replica-2", 30.0, 5) == [] and store.count_waiting() == 0
    lease_a = first[0].lease
    store.append_event(a, _state(pb.JOB_STATE_RUNNING), lease=lease_a)
    assert store.renew("replica-1", [lease_a], 30.0) == {a: "ok"}
    # The lease lapses (renewed for 0 s): another replica claims the job, and the first one is fenced off.
    store.renew("replica-1", [lease_a], -1.0)
    again = store.claim("replica-2", 30.0, 5)
    assert [(x.row.job_id, x.row.state, x.row.owner, x.lease.generation) for x in again] == [
        (a, pb.JOB_STATE_RUNNING, "replica-1", 2)]  # the row as it was: who held it before
    with pytest.raises(LeaseLost):
        store.append_event(a, pb.JobEvent(kind=pb.JOB_EVENT_KIND_EPOCH, epoch=1, step=1), lease=lease_a,
                           checkpoint=b"stale")
    assert store.renew("replica-1", [lease_a], 30.0) == {a: "lost"}
    assert [e.seq for e in store.events_after(a, 0)] == [1, 2]  # the refused write left nothing
    new = again[0].lease
    store.append_event(a, pb.JobEvent(kind=pb.JOB_EVENT_KIND_EPOCH, epoch=1, step=1), lease=new, checkpoint=b"ck1")
    if store.shares_checkpoints:
        assert store.checkpoint(a) == b"ck1"
    else:
        assert store.checkpoint(a) is None  # files, with SQLite
    store.append_event(a, _state(pb.JOB_STATE_SUCCEEDED), lease=new)
    row = store.get_job(a)
    assert row is not None and row.terminal and row.owner == "" and row.last_seq == 4
    assert store.checkpoint(a) is None  # gone with the job's end


def test_cancel_waiting_and_held_jobs(store: JobStore) -> None:
    waiting, held = "00000000001a", "00000000001b"
    _queued(store, held)
    _queued(store, waiting)
    claim = store.claim("owner", 30.0, 1)[0]
    assert claim.row.job_id == held
    assert store.request_cancel(waiting, "cancelled before it ran") == "cancelled"
    assert [(e.state, e.message) for e in store.events_after(waiting, 1)] == [
        (pb.JOB_STATE_CANCELLED, "cancelled before it ran")]
    assert store.claim("other", 30.0, 5) == []  # a cancelled job is never claimed
    assert store.request_cancel(held, "x") == "requested"  # the owner reads it with its lease
    assert store.renew("owner", [claim.lease], 30.0) == {held: "cancel"}
    store.append_event(held, _state(pb.JOB_STATE_CANCELLED), lease=claim.lease)
    assert store.request_cancel(held, "x") == "ended"
    # A cancel that read the job before it ended and was deleted (retention, DeleteJob) finds no row.
    assert store.delete_job(held) is not None
    assert store.request_cancel(held, "x") == "gone"


def test_a_job_is_stored_with_its_first_event_or_not_at_all(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row and its QUEUED event are one transaction: a database lost between them left a row in state
    0 (unspecified) that nothing claims, retention skips and DeleteJob refuses."""
    store.create_job("00000000003a", "", b"spec", epochs=1, total_steps=1, encoding="raw",
                     first=_state(pb.JOB_STATE_QUEUED, message="queued"))
    row = store.get_job("00000000003a")
    assert row is not None and row.state == pb.JOB_STATE_QUEUED
    assert [(e.seq, e.message) for e in store.events_after("00000000003a", 0)] == [(1, "queued")]

    def lost(*args: Any, **kwargs: Any) -> None:
        raise OSError("the database went away")

    monkeypatch.setattr(store, "_append", lost)
    with pytest.raises(OSError):
        store.create_job("00000000003b", "", b"spec", epochs=1, total_steps=1, encoding="raw",
                         first=_state(pb.JOB_STATE_QUEUED))
    monkeypatch.undo()
    assert store.get_job("00000000003b") is None
    assert [c.row.job_id for c in store.claim("owner", 30.0, 5)] == ["00000000003a"]


def test_released_jobs_are_claimed_at_once(store: JobStore) -> None:
    job = "00000000002a"
    _queued(store, job)
    claim = store.claim("one", 300.0, 1)[0]
    store.append_event(job, _state(pb.JOB_STATE_INTERRUPTED), lease=claim.lease)
    store.release(claim.lease)
    (again,) = store.claim("two", 300.0, 1)
    assert (again.row.state, again.lease.generation) == (pb.JOB_STATE_INTERRUPTED, 2)


def test_a_multi_node_job_is_claimed_only_where_its_machines_join(store: JobStore) -> None:
    """A job stored with a rendezvous endpoint is claimed only by a replica hosting it; other jobs by any."""
    one, two = "00000000004a", "00000000004b"
    store.create_job(one, "", b"spec", epochs=1, total_steps=1, encoding="raw", first=_state(pb.JOB_STATE_QUEUED))
    store.create_job(two, "", b"spec", epochs=1, total_steps=1, encoding="raw", world_size=2,
                     first=_state(pb.JOB_STATE_QUEUED), rdzv_endpoint="10.0.0.1:29400")
    assert [c.row.job_id for c in store.claim("no-rendezvous", 30.0, 5)] == [one]
    assert store.claim("another-rendezvous", 30.0, 5, "10.0.0.2:29400") == []
    assert store.count_waiting() == 1  # it waits for its replica
    assert [c.row.job_id for c in store.claim("its-rendezvous", 30.0, 5, "10.0.0.1:29400")] == [two]


def test_the_newest_jobs_are_listed_from_an_index(store: JobStore) -> None:
    """ListJobs (newest first) and the "did you mean" lookup read an index, not a sort of every job."""
    for i in range(3):
        _queued(store, f"00000000005{i}")
    newest = "SELECT job_id FROM {} ORDER BY created DESC, job_id LIMIT 2"
    if isinstance(store, SQLiteJobStore):
        plan = str(store._db.execute("EXPLAIN QUERY PLAN " + newest.format("jobs")).fetchall())
        assert "USING COVERING INDEX jobs_by_created" in plan and "TEMP B-TREE" not in plan, plan
    else:
        with store._tx() as db:  # type: ignore[attr-defined]
            db.execute("SET LOCAL enable_seqscan = off")  # three rows: the planner would rather scan them
            plan = str(db.execute("EXPLAIN " + newest.format("lossd_jobs")).fetchall())
        assert "lossd_jobs_by_created" in plan and "Sort" not in plan, plan
    assert [r.job_id for r in store.list_jobs(limit=2)] == ["000000000052", "000000000051"]



def test_list_jobs_pages_after_a_job_without_skipping_or_repeating(store: JobStore) -> None:
    """ListJobs' pages: ``after`` a listed job's (created, job_id), the jobs after it in the listing's order;
    jobs created while paging come before the cursor, so a later page neither skips nor repeats a job, even
    with ties on ``created``."""

    with patch.object(time, "time", return_value=1000.0):  # one instant: the order falls back to the id
        for i in (3, 1, 2):
            _queued(store, f"00000000000{i}")
    for i in (4, 5):
        _queued(store, f"00000000000{i}")
    everything = [r.job_id for r in store.list_jobs(limit=100)]
    assert everything[2:] == ["000000000001", "000000000002", "000000000003"]
    paged: list[str] = []
    after = None
    while page := store.list_jobs(limit=2, after=after):
        if not paged:
            _queued(store, "00000000000a")  # newer than every listed job: not in a later page
        paged += [r.job_id for r in page]
        after = (page[-1].created, page[-1].job_id)
    assert paged == everything
    assert [r.job_id for r in store.list_jobs([pb.JOB_STATE_QUEUED], 1, (1000.0, "000000000001"))] == ["000000000002"]


def test_concurrent_claims_take_each_job_once(postgres: Any, tmp_path: Path) -> None:
    url = postgres.fresh_database()
    stores = [open_store(url, tmp_path) for _ in range(3)]
    try:
        ids = [f"{i:012x}" for i in range(60)]
        for job in ids:
            _queued(stores[0], job)
        taken: dict[int, list[str]] = {i: [] for i in range(3)}
        barrier = threading.Barrier(3)

        def claimer(i: int) -> None:
            barrier.wait()
            while claims := stores[i].claim(f"r{i}", 60.0, 3):
                taken[i].extend(c.row.job_id for c in claims)

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        everything = [j for i in range(3) for j in taken[i]]
        assert sorted(everything) == ids  # each exactly once
    finally:
        for s in stores:
            s.close()


def test_a_schema_newer_than_this_lossd_refuses_to_start(postgres: Any, tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    SQLiteJobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema version 99, newer than this lossd's"):
        SQLiteJobStore(path)
    import psycopg

    url = postgres.fresh_database()
    open_store(url, tmp_path).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE lossd_schema SET version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this lossd's") as info:
        open_store(url, tmp_path)
    assert postgres.password not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("tables", [
    "",  # lossd_schema alone: the tables were dropped, or never made
    "CREATE TABLE lossd_jobs (id INTEGER, x TEXT)",  # another program's table of the same name
])
def test_a_database_whose_lossd_tables_are_not_lossds_refuses_to_start(postgres: Any, tmp_path: Path,
                                                                       tables: str) -> None:
    """A lossd_schema saying version 2 over missing or foreign tables started, then crashed the server with a
    traceback from its first claim (UndefinedTable, UndefinedColumn: exit 1); a lossd_schema of text compared
    '>' with an int (the PostgreSQL audit, 2026-12-06). One StoreError at start, naming what is wrong."""
    import psycopg

    url = postgres.fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE lossd_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO lossd_schema VALUES (2)")
        if tables:
            conn.execute(tables)
    with pytest.raises(StoreError, match=r"cannot be used: lossd_schema says version 2, but its table lossd_jobs is "
                                         r"not lossd's \((relation|column) .* does not exist\)$"):
        open_store(url, tmp_path)
    url = postgres.fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE lossd_schema (version TEXT NOT NULL)")
        conn.execute("INSERT INTO lossd_schema VALUES ('two')")
    with pytest.raises(StoreError, match="its lossd_schema table holds 'two', not a schema version"):
        open_store(url, tmp_path)


def test_an_old_sqlite_store_is_migrated(tmp_path: Path) -> None:
    """A version-1 store (no lease columns) gets them; its unfinished jobs can be claimed."""
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE jobs (job_id TEXT PRIMARY KEY, name TEXT NOT NULL, state INTEGER NOT NULL,
                message TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL,
                epochs INTEGER NOT NULL, total_steps INTEGER NOT NULL, epoch INTEGER NOT NULL DEFAULT 0,
                step INTEGER NOT NULL DEFAULT 0, loss REAL NOT NULL DEFAULT 0, metrics TEXT NOT NULL DEFAULT '{}',
                last_seq INTEGER NOT NULL DEFAULT 0, resumes INTEGER NOT NULL DEFAULT 0, encoding TEXT NOT NULL,
                spec BLOB NOT NULL, world_size INTEGER NOT NULL DEFAULT 1);
            CREATE TABLE events (job_id TEXT NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL,
                state INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
            CREATE TABLE results (job_id TEXT PRIMARY KEY, state INTEGER NOT NULL, parameters BLOB NOT NULL);
            INSERT INTO jobs (job_id, name, state, created, updated, epochs, total_steps, encoding, spec, last_seq)
                VALUES ('0123456789ab', 'old', 2, 0, 0, 3, 30, 'values', x'', 0);
            PRAGMA user_version=1;
        """)
    store = SQLiteJobStore(path)
    (claim,) = store.claim("me", 30.0, 5)
    assert (claim.row.name, claim.row.state, claim.lease.generation) == ("old", pb.JOB_STATE_RUNNING, 1)
    store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3


def test_a_version_1_postgresql_store_is_migrated(postgres: Any, tmp_path: Path) -> None:
    """A database at schema version 1 (no rendezvous column) gets the column; its jobs stay claimable."""
    import psycopg

    from lossd.server.training._pgstore import _MIGRATIONS, SCHEMA_VERSION

    url = postgres.fresh_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_MIGRATIONS[0])
        conn.execute("CREATE TABLE lossd_schema (version INTEGER NOT NULL); INSERT INTO lossd_schema VALUES (1)")
        conn.execute("INSERT INTO lossd_jobs (job_id, name, state, created, updated, epochs, total_steps, encoding, "
                     "spec, world_size) VALUES ('0123456789ab', 'old', 2, 0, 0, 3, 30, 'values', '', 2)")
    store = open_store(url, tmp_path)
    try:
        (claim,) = store.claim("me", 30.0, 5)
        assert (claim.row.name, claim.row.state, claim.row.world_size) == ("old", pb.JOB_STATE_RUNNING, 2)
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM lossd_schema").fetchone() == (SCHEMA_VERSION,) == (2,)


def test_serve_exits_2_naming_an_unreachable_store_with_its_password_masked(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://lossd:hunter2secret@127.0.0.1:{port}/jobs"
    proc = subprocess.run([sys.executable, "-m", "lossd.server", "--port", "0", "--data-dir", str(tmp_path / "d")],
                          env={**__import__("os").environ, "LOSSD_JOB_STORE": url, "LOSSD_DEVICE": "cpu"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "hunter2secret" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossd serve: error: the job store "
                                                   f"postgresql://lossd:***@127.0.0.1:{port}/jobs is unreachable")


def test_delete_and_retention(store: JobStore) -> None:
    ended, running, old = "00000000003a", "00000000003b", "00000000003c"
    for job in (ended, running, old):
        _queued(store, job)
    result = pb.JobEvent()
    result.parameters["w"].raw = b"\x00\x00\x80?"
    store.append_event(ended, _state(pb.JOB_STATE_SUCCEEDED), parameters=result)
    store.append_event(old, _state(pb.JOB_STATE_FAILED))
    store.claim("me", 30.0, 5)  # `running` is held
    assert store.delete_job(running) is None and store.get_job(running) is not None  # not ended: it stays
    row = store.delete_job(ended)
    assert row is not None and row.job_id == ended and row.state == pb.JOB_STATE_SUCCEEDED
    assert store.get_job(ended) is None and store.events_after(ended, 0) == [] and store.result(ended) is None
    assert store.delete_job(ended) is None

    assert store.delete_ended_before(time.time() - 3600) == 0  # ended within the hour: kept
    assert store.delete_ended_before(time.time() + 1) == 1  # ended before now + 1 s: old goes, running stays
    assert store.get_job(old) is None and store.events_after(old, 0) == []
    assert [r.job_id for r in store.list_jobs()] == [running]


def test_a_job_and_its_result_are_read_together(store: JobStore) -> None:
    """``job_and_result``: the row and the stored parameters in one read (GetJob with parameters, a watcher's
    terminal event), so that a job deleted meanwhile is gone whole, never a row without its result."""
    ended, failed, waiting = "00000000004a", "00000000004b", "00000000004c"
    for job in (ended, failed, waiting):
        _queued(store, job)
    result = pb.JobEvent()
    result.parameters["w"].raw = b"\x00\x00\x80?"
    store.append_event(ended, _state(pb.JOB_STATE_SUCCEEDED), parameters=result)
    store.append_event(failed, _state(pb.JOB_STATE_FAILED))
    found = store.job_and_result(ended, with_spec=True)
    assert found is not None
    row, parameters = found
    assert (row.job_id, row.state, row.last_seq, row.spec) == (ended, pb.JOB_STATE_SUCCEEDED, 2, b"spec")
    assert row == store.get_job(ended, with_spec=True) and parameters == store.result(ended) == result
    for job, state in ((failed, pb.JOB_STATE_FAILED), (waiting, pb.JOB_STATE_QUEUED)):
        found = store.job_and_result(job)
        assert found is not None and found[0].state == state and found[0].spec == b"" and found[1] is None
    assert store.delete_job(ended) is not None
    assert store.job_and_result(ended) is None and store.job_and_result("00000000004f") is None


def test_the_config_never_shows_the_job_store_password() -> None:
    from lossd.server import ServerConfig

    config = ServerConfig(job_store="postgresql://lossd:hunter2secret@db:5432/jobs")
    assert "hunter2secret" not in repr(config) and "hunter2secret" not in str(config)


def test_a_store_url_of_another_kind_is_refused_with_its_password_masked(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"is not a postgresql:// URL") as info:
        open_store("mysql://lossd:hunter2secret@db/jobs", tmp_path)
    assert "hunter2secret" not in str(info.value) and "***" in str(info.value)


def test_an_event_stored_by_one_replica_wakes_the_listeners_of_another(postgres: Any, tmp_path: Path) -> None:
    """LISTEN/NOTIFY: a store's ``subscribe`` callback runs for events that another store (replica) writes."""
    url = postgres.fresh_database()
    writer, listener = open_store(url, tmp_path), open_store(url, tmp_path)
    woken: list[str] = []
    ready = threading.Event()

    def wake(job_id: str) -> None:
        woken.append(job_id)
        ready.set()

    try:
        listener.subscribe(wake)
        job = "0000000000a1"
        # The listener thread LISTENs on its own connection: write until it has seen one (its start is a race).
        _queued(writer, job)
        for _ in range(100):
            if ready.wait(0.2):
                break
            writer.append_event(job, pb.JobEvent(kind=pb.JOB_EVENT_KIND_STEP, step=1))
        assert ready.is_set() and set(woken) == {job}
    finally:
        writer.close()
        listener.close()


def test_a_watcher_whose_notifications_are_lost_reads_the_store_every_half_second(postgres: Any,
                                                                                   tmp_path: Path) -> None:
    """The polling fallback: a replica that gets no NOTIFY (its listener is off here) still sees another
    replica's events, because its watchers read the store again after at most ``poll_s`` (0.5 s)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from lossd.server.losses import REGISTRY
    from lossd.server.training import TrainingConfig
    from lossd.server.training._manager import JobManager

    url = postgres.fresh_database()
    other = open_store(url, tmp_path)  # another replica, writing
    job = "0000000000b2"
    _queued(other, job)

    async def scenario(manager: JobManager) -> list[pb.JobEvent]:
        manager.store.subscribe = lambda wake: None  # type: ignore[method-assign]  # no notifications at all
        await manager.start()
        seen: list[pb.JobEvent] = []
        writes = [_state(pb.JOB_STATE_RUNNING), pb.JobEvent(kind=pb.JOB_EVENT_KIND_STEP, step=1),
                  _state(pb.JOB_STATE_SUCCEEDED)]
        try:
            async for event in manager.watch(job, 0):
                seen.append(event)
                if writes:  # the next write only once the watcher waits again
                    await asyncio.sleep(0.1)
                    other.append_event(job, writes.pop(0))
        finally:
            await manager.close()
        return seen

    with ThreadPoolExecutor(2) as executor:
        manager = JobManager(TrainingConfig(tmp_path / "replica", max_jobs=0, job_store=url), REGISTRY, executor)
        assert manager.store.poll_s is not None and manager.store.poll_s <= 0.5
        seen = asyncio.run(asyncio.wait_for(scenario(manager), 60))
    other.close()
    assert [(e.seq, e.kind, e.state) for e in seen] == [
        (1, pb.JOB_EVENT_KIND_STATE, pb.JOB_STATE_QUEUED), (2, pb.JOB_EVENT_KIND_STATE, pb.JOB_STATE_RUNNING),
        (3, pb.JOB_EVENT_KIND_STEP, 0), (4, pb.JOB_EVENT_KIND_STATE, pb.JOB_STATE_SUCCEEDED)]


def test_a_replica_stalled_inside_a_transaction_does_not_keep_its_jobs(postgres: Any, tmp_path: Path) -> None:
    """A replica paused (SIGSTOP) or cut off in the middle of a write holds the job's row lock; claims skip
    locked rows, so the database ends such a session after the store's timeout and the job can be taken."""
    url = postgres.fresh_database()
    stalled, other = open_store(url, tmp_path, timeout_s=1.0), open_store(url, tmp_path, timeout_s=1.0)
    job = "0000000000c3"
    try:
        _queued(stalled, job)
        (claim,) = stalled.claim("stalled", 0.2, 1)
        pool = stalled._pool  # type: ignore[attr-defined]  # the store's own connections and settings
        with pytest.raises(Exception) as ended, pool.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM lossd_jobs WHERE job_id = %s FOR UPDATE", (job,))  # the lock of a write
            assert other.claim("other", 5.0, 1) == []  # its lease lapsed, but the row is locked: skipped
            threading.Event().wait(2.5)  # the replica stalls: no command for longer than the timeout
            conn.execute("SELECT 1")
        assert "idle-in-transaction" in str(ended.value) or "terminat" in str(ended.value), ended.value
        (taken,) = other.claim("other", 5.0, 1)
        assert taken.row.job_id == job and taken.lease.generation == claim.lease.generation + 1
    finally:
        stalled.close()
        other.close()


def test_a_database_that_cannot_take_writes_is_unavailable(postgres: Any, tmp_path: Path) -> None:
    """A database that refuses writes (a read-only standby after a failover) raises psycopg's InternalError,
    not an OperationalError: it reached clients as UNKNOWN or INTERNAL, left TrainingService SERVING and
    killed the lease thread. It is StoreUnavailable (UNAVAILABLE, health NOT_SERVING) as a lost database is."""
    import psycopg

    from lossd.server.training._store import StoreUnavailable

    job = "0000000000d1"
    with _postgres_store_with(postgres, tmp_path, job) as (store, name):
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
            _end_sessions(admin, name)
        for _ in range(3):  # the pooled connections the database dropped are replaced before a call gets them
            row = store.get_job(job)  # new sessions: read-only, and reads work
            assert row is not None and row.state == pb.JOB_STATE_QUEUED
        for write in (lambda: store.request_cancel(job, "cancelled"), lambda: store.delete_ended_before(1e12),
                      lambda: _queued(store, "0000000000d2")):
            with pytest.raises(StoreUnavailable, match="read-only transaction"):
                write()


def test_a_checkpoint_over_the_bound_is_refused_and_nothing_is_stored(postgres: Any, tmp_path: Path) -> None:
    """PostgreSQL keeps checkpoints in bytea, bounded by what --max-parameters allows (the manager passes it)."""
    store = open_store(postgres.fresh_database(), tmp_path, max_checkpoint_bytes=64)
    job = "0000000000d4"
    try:
        _queued(store, job)
        (claim,) = store.claim("replica-1", 30.0, 1)
        epoch = pb.JobEvent(kind=pb.JOB_EVENT_KIND_EPOCH, epoch=1, step=1)
        with pytest.raises(ValueError, match="65 bytes, over the 64 that --max-parameters allows"):
            store.append_event(job, epoch, lease=claim.lease, checkpoint=b"x" * 65)
        assert store.checkpoint(job) is None and [e.seq for e in store.events_after(job, 0)] == [1]
        store.append_event(job, epoch, lease=claim.lease, checkpoint=b"x" * 64)
        assert store.checkpoint(job) == b"x" * 64
    finally:
        store.close()


def test_a_write_repeated_after_a_lost_acknowledgement_is_stored_once(store: JobStore) -> None:
    """The manager writes an event again when the store did not answer; if the first attempt had committed
    (the connection dropped before the acknowledgement), the repeat stores nothing: seq stays gap-free and a
    job keeps one terminal event."""
    job = "0000000000e5"
    _queued(store, job)
    (claim,) = store.claim("replica-1", 30.0, 1)
    step = pb.JobEvent(kind=pb.JOB_EVENT_KIND_STEP, step=1, loss=0.5)
    step.time.GetCurrentTime()  # as the worker stamps its events
    first = pb.JobEvent()
    first.CopyFrom(step)
    assert store.append_event(job, first, lease=claim.lease).seq == 2
    again = pb.JobEvent()
    again.CopyFrom(step)
    assert store.append_event(job, again, lease=claim.lease).seq == 2  # the repeat: the stored event's seq
    later = pb.JobEvent()
    later.CopyFrom(step)
    later.time.nanos = (later.time.nanos + 1) % 1_000_000_000  # the same content at another moment is new
    assert store.append_event(job, later, lease=claim.lease).seq == 3
    done = _state(pb.JOB_STATE_SUCCEEDED)
    done.time.GetCurrentTime()
    for _ in range(2):
        repeat = pb.JobEvent()
        repeat.CopyFrom(done)
        assert store.append_event(job, repeat, lease=claim.lease).seq == 4
    assert [e.seq for e in store.events_after(job, 0)] == [1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_job_name_with_a_nul_is_refused_alike_on_both_stores(kind: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    """PostgreSQL's text cannot hold a NUL (its driver raised, and the call was answered INTERNAL); SQLite's can.
    The spec's rules refuse it for both, naming the field, before any work; a name either can hold is kept."""
    import grpc

    from lossd.v1 import training_pb2_grpc
    from support.servers import start_in_process
    from support.training import request as job_request
    from support.training import small_spec

    store = "" if kind == "sqlite" else request.getfixturevalue("postgres").fresh_database()
    with start_in_process(job_store=store, data_dir=str(tmp_path / "data")) as address, \
            grpc.insecure_channel(address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.TrainJob(job_request(small_spec(name="nightly\x00run", detach=True)), timeout=60))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert refused.value.details().startswith("name: contains a NUL character"), refused.value.details()
        kept = [r.event for r in stub.TrainJob(job_request(small_spec(name="nightly run ✓", detach=True)),
                                                timeout=60)][0]
        assert stub.GetJob(pb.GetJobRequest(job_id=kept.job_id), timeout=30).job.name == "nightly run ✓"


def test_pooled_connections_the_database_dropped_are_replaced_before_a_call_gets_them(postgres: Any,
                                                                                     tmp_path: Path) -> None:
    """A database restart ends every session (as ``pg_terminate_backend`` does here), and each idle pooled
    connection then failed the one call that got it with StoreUnavailable (UNAVAILABLE to a client, which
    grpcurl and raw stubs do not retry) before the pool replaced it. A dropped connection is now noticed, without
    a round trip, before a call gets it."""
    import psycopg

    job = "0000000000e1"
    with _postgres_store_with(postgres, tmp_path, job) as (store, name):
        pool = store._pool  # type: ignore[attr-defined]
        with contextlib.ExitStack() as held:  # four idle connections in the pool
            for _ in range(4):
                held.enter_context(pool.connection())
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            assert _end_sessions(admin, name) >= 4
        for _ in range(6):
            assert store.get_job(job).state == pb.JOB_STATE_QUEUED
        assert store.request_cancel(job, "cancelled")  # a write too


def test_a_postgres_start_keeps_the_checkpoints_of_a_sqlite_store_in_its_data_dir(
        postgres: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A server started with --job-store postgresql://… on a --data-dir a SQLite server had used deleted that store's
    checkpoints as leftover working copies: its interrupted job later started over from step 0 (the PostgreSQL
    audit, 2026-12-06). A shared store's copies have their own folder; the SQLite store's are kept, with a warning."""
    import logging

    from support.servers import start_in_process

    data = tmp_path / "data"
    data.mkdir()
    SQLiteJobStore(data / "jobs.sqlite3").close()
    (data / "checkpoints").mkdir()
    kept = data / "checkpoints" / "0123456789ab.pt"
    kept.write_bytes(b"a SQLite job's checkpoint")
    caplog.set_level(logging.WARNING, logger="lossd.server.training")
    with start_in_process(data_dir=str(data), job_store=postgres.fresh_database()):
        assert (data / "checkpoints-shared").is_dir()
    assert kept.read_bytes() == b"a SQLite job's checkpoint"
    assert any("also holds a SQLite job store (jobs.sqlite3)" in r.getMessage() for r in caplog.records)



def test_a_postgres_start_removes_the_copies_an_earlier_version_kept_in_checkpoints(postgres: Any,
                                                                                    tmp_path: Path) -> None:
    """Before checkpoints-shared, a replica's working copies were in checkpoints/ (the review of 2026-12-06: left
    there for ever once the start swept only the new folder). Without a SQLite store in the data directory they are
    copies the database has: the start removes them, and nothing else."""
    from support.servers import start_in_process

    data = tmp_path / "data"
    (data / "checkpoints").mkdir(parents=True)
    copy, other = data / "checkpoints" / "0123456789ab.pt", data / "checkpoints" / "notes.txt"
    copy.write_bytes(b"an old working copy")
    other.write_text("not a checkpoint: not lossd's to delete")
    with start_in_process(data_dir=str(data), job_store=postgres.fresh_database()):
        pass
    assert not copy.exists() and other.exists()

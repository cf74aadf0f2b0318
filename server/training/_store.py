"""The job store: jobs, their events, results and leases. A :class:`JobStore` protocol, two implementations.

- :class:`SQLiteJobStore` (the embedded default): one SQLite file (WAL) under
  ``--data-dir``, written by one server (the manager holds the data
  directory's lock); checkpoints stay files beside it.
- ``PostgresJobStore`` (``_pgstore.py``, ``--job-store postgresql://…``):
  shared by replicas; checkpoints live in the database too.

Each job has an owner (the replica running it), ``lease_until`` and a
``generation`` that each claim increases. A replica claims waiting jobs
(:meth:`JobStore.claim`), renews its leases while they run
(:meth:`JobStore.renew`), and every write about a running job carries its
:class:`Lease`: the store refuses it (:class:`LeaseLost`) once another claim
has happened since, so a replica that was paused past its lease never writes
again. Events are numbered (``seq``) in the transaction that stores them;
a terminal event's parameters go to ``results``::

    >>> import tempfile
    >>> from lossd.v1 import training_pb2 as pb
    >>> store = SQLiteJobStore(Path(tempfile.mkdtemp()) / "jobs.sqlite3")
    >>> store.create_job("0123456789ab", "demo", b"", epochs=2, total_steps=10, encoding="values")
    >>> store.append_event("0123456789ab", pb.JobEvent(kind=pb.JOB_EVENT_KIND_STATE, state=pb.JOB_STATE_QUEUED)).seq
    1
    >>> [(c.row.job_id, c.lease.generation) for c in store.claim("replica-a", 30.0, 4)]
    [('0123456789ab', 1)]
    >>> store.renew("replica-a", [Lease("0123456789ab", 1)], 30.0)
    {'0123456789ab': 'ok'}
    >>> [e.seq for e in store.events_after("0123456789ab", 0)]
    [1]
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from ...v1 import training_pb2

__all__ = ["FINAL_STATES", "Claim", "JobRow", "JobStore", "Lease", "LeaseLost", "SQLiteJobStore", "StoreError",
           "StoreUnavailable", "TERMINAL_STATES"]

#: States a job never leaves.
TERMINAL_STATES = frozenset({training_pb2.JOB_STATE_SUCCEEDED, training_pb2.JOB_STATE_FAILED,
                             training_pb2.JOB_STATE_CANCELLED})
#: States a worker's run ends in: the terminal ones, and INTERRUPTED (the job resumes at the next start).
FINAL_STATES = TERMINAL_STATES | {training_pb2.JOB_STATE_INTERRUPTED}

STATE = training_pb2.JOB_EVENT_KIND_STATE


class StoreError(RuntimeError):
    """The store cannot be used as it is (e.g. its schema is newer than this lossd); the server refuses to start."""


class StoreUnavailable(RuntimeError):
    """The database does not answer now (a lost connection); calls may be retried once it is back."""


class LeaseLost(RuntimeError):
    """A write about a job carried a lease that is no longer the job's: another replica claimed it since."""


@dataclass(frozen=True)
class Lease:
    """A claim on one job: its id and the generation the claim got. Every write about the running job carries it."""

    job_id: str
    generation: int


@dataclass
class JobRow:
    """A job's summary row."""

    job_id: str
    name: str
    state: int
    message: str
    created: float
    updated: float
    epochs: int
    total_steps: int
    epoch: int
    step: int
    loss: float
    metrics: dict[str, float]
    last_seq: int
    resumes: int
    encoding: str
    world_size: int = 1
    spec: bytes = field(repr=False, default=b"")
    owner: str = ""

    @property
    def terminal(self) -> bool:
        """Whether the job has ended."""
        return self.state in TERMINAL_STATES

    def to_proto(self, with_spec: bool = False) -> training_pb2.Job:
        """The ``Job`` message (with the spec when asked)."""
        job = training_pb2.Job(
            job_id=self.job_id,
            name=self.name,
            state=cast(training_pb2.JobState, self.state),
            message=self.message,
            epoch=self.epoch,
            epochs=self.epochs,
            step=self.step,
            total_steps=self.total_steps,
            loss=self.loss,
            metrics=self.metrics,
            last_seq=self.last_seq,
            resumes=self.resumes,
            world_size=self.world_size,
        )
        job.created_at.FromNanoseconds(int(self.created * 1e9))
        job.updated_at.FromNanoseconds(int(self.updated * 1e9))
        if with_spec:
            job.spec.ParseFromString(self.spec)
        return job


@dataclass
class Claim:
    """A job this replica now owns: its row as it was before the claim (with the spec; ``owner`` is who held it
    before, if anyone) and its lease."""

    row: JobRow
    lease: Lease


class JobStore(Protocol):
    """What the job manager needs from a store (SQLite or PostgreSQL)."""

    #: Whether checkpoints live in the store (PostgreSQL) rather than in files under --data-dir (SQLite).
    shares_checkpoints: bool
    #: Seconds between a watcher's reads when nothing woke it (None: every write wakes it, one process).
    poll_s: float | None

    def close(self) -> None: ...

    def create_job(self, job_id: str, name: str, spec: bytes, *, epochs: int, total_steps: int, encoding: str,
                   world_size: int = 1, first: training_pb2.JobEvent | None = None,
                   rdzv_endpoint: str = "") -> None: ...

    def append_event(self, job_id: str, event: training_pb2.JobEvent,
                     parameters: training_pb2.JobEvent | None = None, *, lease: Lease | None = None,
                     checkpoint: bytes | None = None) -> training_pb2.JobEvent: ...

    def events_after(self, job_id: str, after_seq: int, limit: int = 256) -> list[training_pb2.JobEvent]: ...

    def result(self, job_id: str) -> training_pb2.JobEvent | None: ...

    def get_job(self, job_id: str, with_spec: bool = False) -> JobRow | None: ...

    def job_and_result(self, job_id: str, with_spec: bool = False,
                       ) -> tuple[JobRow, training_pb2.JobEvent | None] | None: ...

    def list_jobs(self, states: Iterable[int] = (), limit: int = 100,
                  after: tuple[float, str] | None = None) -> list[JobRow]: ...

    def job_ids(self, limit: int = 1000) -> list[str]: ...

    def count_by_state(self) -> dict[int, int]: ...

    def count_waiting(self) -> int: ...

    def claim(self, owner: str, lease_s: float, limit: int, rdzv_endpoint: str = "") -> list[Claim]: ...

    def renew(self, owner: str, leases: Sequence[Lease], lease_s: float) -> dict[str, str]: ...

    def ping(self) -> None: ...

    def release(self, lease: Lease) -> None: ...

    def request_cancel(self, job_id: str, message: str) -> str: ...

    def checkpoint(self, job_id: str) -> bytes | None: ...

    def subscribe(self, wake: Callable[[str], None]) -> None: ...

    def delete_job(self, job_id: str) -> JobRow | None: ...

    def delete_ended_before(self, cutoff: float, limit: int = 1000) -> int: ...


_JOB_COLUMNS = """
    job_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    state       INTEGER NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL,
    updated     REAL NOT NULL,
    epochs      INTEGER NOT NULL,
    total_steps INTEGER NOT NULL,
    epoch       INTEGER NOT NULL DEFAULT 0,
    step        INTEGER NOT NULL DEFAULT 0,
    loss        REAL NOT NULL DEFAULT 0,
    metrics     TEXT NOT NULL DEFAULT '{}',
    last_seq    INTEGER NOT NULL DEFAULT 0,
    resumes     INTEGER NOT NULL DEFAULT 0,
    encoding    TEXT NOT NULL,
    spec        BLOB NOT NULL"""

#: SQLite schema migrations: ``_SQLITE_MIGRATIONS[i]`` takes a store from version ``i`` to ``i + 1``
#: (``PRAGMA user_version``). Version 1 had no ``world_size`` column at first: its step adds it when missing.
_SQLITE_MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE IF NOT EXISTS jobs ({_JOB_COLUMNS},
        world_size  INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created);
    CREATE TABLE IF NOT EXISTS events (
        job_id TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        kind   INTEGER NOT NULL,
        state  INTEGER NOT NULL,
        data   BLOB NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS results (
        job_id     TEXT PRIMARY KEY,
        state      INTEGER NOT NULL,
        parameters BLOB NOT NULL
    );
    """,
    """
    ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    """,
    # A multi-node job's rendezvous (the endpoint its machines join): only a server serving it claims the job.
    # ListJobs' newest-first order, read from an index instead of sorting every row.
    """
    ALTER TABLE jobs ADD COLUMN rdzv_endpoint TEXT NOT NULL DEFAULT '';
    CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created DESC, job_id);
    """,
]
#: The schema version this lossd writes (both stores).
SCHEMA_VERSION = len(_SQLITE_MIGRATIONS)
#: Bytes the SQLite WAL is cut back to at each checkpoint (``journal_size_limit``).
WAL_SIZE_LIMIT = 16 * 1024 * 1024

log = logging.getLogger("lossd.server.training")

_COLUMNS = ("job_id, name, state, message, created, updated, epochs, total_steps, epoch, step, loss, metrics, "
            "last_seq, resumes, encoding, world_size, owner")
_N_COLUMNS = 17


def _row(r: Sequence[Any], spec: bytes = b"") -> JobRow:
    """A ``jobs`` row (columns in :data:`_COLUMNS` order) as a :class:`JobRow`."""
    metrics = r[11] if isinstance(r[11], dict) else json.loads(r[11])
    return JobRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                  metrics, r[12], r[13], r[14], r[15], bytes(spec), r[16])


#: :data:`_COLUMNS` of the ``jobs`` table aliased ``j`` (a join with another table that has some of its names).
_JOINED_COLUMNS = ", ".join(f"j.{c.strip()}" for c in _COLUMNS.split(","))


def _row_and_result(r: Sequence[Any], with_spec: bool) -> tuple[JobRow, training_pb2.JobEvent | None]:
    """A row of :data:`_JOINED_COLUMNS`, then ``spec`` when ``with_spec``, then the result's ``parameters``
    (``NULL``: none), as ``job_and_result`` returns it. One rule for both stores."""
    row = _row(r, r[_N_COLUMNS] if with_spec else b"")
    parameters = r[-1]
    return row, None if parameters is None else training_pb2.JobEvent.FromString(bytes(parameters))


def newer_schema(found: int, where: str) -> StoreError:
    """The refusal for a store written by a newer lossd."""
    return StoreError(f"{where} has job store schema version {found}, newer than this lossd's {SCHEMA_VERSION}: "
                      "it was written by a newer lossd; run that version (or newer)")


#: SQLite's error names (``sqlite3.Error.sqlite_errorname``, Python 3.11+) of a file that may be a sound store
#: that this process cannot use now: opening, permissions, locks, I/O, a full disk.
_ACCESS_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY", "SQLITE_BUSY", "SQLITE_LOCKED",
                  "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_AUTH")


def unusable_sqlite(path: Path, error: sqlite3.Error) -> StoreError:
    """The refusal to start on a ``jobs.sqlite3`` that SQLite refuses: one line naming ``--data-dir``, the file
    and SQLite's message (the server exits 2, as for any data directory it cannot use).

    >>> error = unusable_sqlite(Path("/srv/lossd/jobs.sqlite3"), sqlite3.DatabaseError("file is not a database"))
    >>> print(str(error).replace(": /", ":\\n/").replace("; ", ";\\n"))
    --data-dir /srv/lossd (env LOSSD_DATA_DIR):
    /srv/lossd/jobs.sqlite3 is not a lossd job store or is damaged (SQLite: file is not a database);
    move it aside to start with an empty store
    """
    where = f"--data-dir {path.parent} (env LOSSD_DATA_DIR)"
    name = getattr(error, "sqlite_errorname", "") or ""
    if isinstance(error, sqlite3.OperationalError) and (name.startswith(_ACCESS_ERRORS) or not name):
        return StoreError(f"{where}: cannot use {path} as the job store (SQLite: {error}); it must be a file this "
                          "user can read and write, in a folder with free space; or move it aside to start with "
                          "an empty store")
    return StoreError(f"{where}: {path} is not a lossd job store or is damaged (SQLite: {error}); move it aside "
                      "to start with an empty store")


def already_stored(event: training_pb2.JobEvent, job_id: str, last_seq: int, updated: float,
                   stored: Callable[[], bytes]) -> bool:
    """Whether the job's last stored event (``stored()``, numbered ``last_seq``) is ``event`` itself: a write
    repeated because the first one's commit was never acknowledged (the connection dropped just then). Then
    ``event`` gets that seq and nothing is written again. ``updated`` (the row's, the last event's time) keeps
    the extra read to writes that may be repeats. One rule for both stores.
    """
    if not last_seq or updated != event.time.ToNanoseconds() / 1e9:
        return False
    candidate = training_pb2.JobEvent()
    candidate.CopyFrom(event)
    candidate.job_id, candidate.seq = job_id, last_seq
    if training_pb2.JobEvent.FromString(stored()) != candidate:
        return False
    event.job_id, event.seq = job_id, last_seq
    return True


def event_updates(event: training_pb2.JobEvent, state: int) -> tuple[list[str], list[object]]:
    """The ``jobs`` columns an event changes (``SET`` clauses with ``?`` placeholders) and their values.

    ``state`` is the job's state before the event. One rule for both stores.
    """
    sets = ["last_seq = ?", "updated = ?"]
    args: list[object] = [event.seq, event.time.ToNanoseconds() / 1e9]
    if event.kind == STATE:
        sets += ["state = ?", "message = ?"]
        args += [event.state, event.message]
        if event.state == training_pb2.JOB_STATE_RUNNING and state == training_pb2.JOB_STATE_INTERRUPTED:
            sets.append("resumes = resumes + 1")
    if event.step or event.epoch:
        sets += ["epoch = ?", "step = ?", "loss = ?"]
        args += [event.epoch, event.step, event.loss]
    if event.metrics:
        sets.append("metrics = ?")
        args.append(json.dumps(dict(event.metrics), sort_keys=True))
    return sets, args


class SQLiteJobStore:
    """Jobs, events and results in one SQLite file; safe to call from several threads of one server.

    One connection under a lock. ``synchronous=NORMAL`` in WAL mode: a committed
    event survives the server being killed (``kill -9``); a power cut may lose the
    last few. Only one server opens the file (the manager holds ``<data-dir>/lock``),
    so leases left by a previous run of this server are void at open (their owner is
    kept: a claim's row names who held the job before, as with PostgreSQL).
    """

    shares_checkpoints = False
    poll_s: float | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as e:  # a folder where the file should be, a file this user cannot open
            raise unusable_sqlite(path, e) from None
        try:
            # Deleted jobs give their pages back to the file system (incremental_vacuum after each delete): set
            # before the first table, so a store made by a lossd before it keeps SQLite's default (its pages are
            # reused; VACUUM it offline to shrink it: docs/training.md).
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            # The WAL is cut back to this at each checkpoint (else it keeps the size of its largest transaction).
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                self._migrate()
                # The leases of a previous run of this server are void: its jobs are claimable at once. The
                # owner stays until the next claim, which reads it (the row before the claim): a job found
                # RUNNING (its server was killed) gets an INTERRUPTED event naming that server.
                self._db.execute("UPDATE jobs SET lease_until = 0 WHERE lease_until != 0")
        except BaseException as e:
            self._db.close()
            if isinstance(e, sqlite3.Error):  # not a database, a damaged one, another program's tables
                raise unusable_sqlite(path, e) from None
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (the caller holds the lock), rolled back on any error; a failed
        ``COMMIT`` (``SQLITE_FULL``) has rolled back already."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise newer_schema(version, str(self.path))
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as db:
                for statement in _SQLITE_MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")
        if version == 1:  # a version-1 store from before data-parallel jobs: every job had one process
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "world_size" not in columns:
                self._db.execute("ALTER TABLE jobs ADD COLUMN world_size INTEGER NOT NULL DEFAULT 1")

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        with self._lock:
            self._db.close()

    def create_job(self, job_id: str, name: str, spec: bytes, *, epochs: int, total_steps: int, encoding: str,
                   world_size: int = 1, first: training_pb2.JobEvent | None = None, rdzv_endpoint: str = "") -> None:
        """Insert a new job, with its ``first`` event (numbered and stored as by ``append_event``) in the same
        transaction, so that the job is never left without one: state unspecified, which nothing claims or
        deletes (the manager always gives it; without it the state stays unspecified until one is appended).
        A job with an ``rdzv_endpoint`` is claimed only by a server serving that rendezvous."""
        now = time.time()
        with self._lock, self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (job_id, name, state, created, updated, epochs, total_steps, encoding, spec, "
                "world_size, rdzv_endpoint) VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, name, now, now, epochs, total_steps, encoding, spec, world_size, rdzv_endpoint))
            if first is not None:
                self._append(job_id, first, None, None)

    def append_event(self, job_id: str, event: training_pb2.JobEvent,
                     parameters: training_pb2.JobEvent | None = None, *, lease: Lease | None = None,
                     checkpoint: bytes | None = None) -> training_pb2.JobEvent:
        """Number ``event`` (the job's next seq), store it and update the job's row, in one transaction.

        ``parameters`` (a terminal event's parameters, raw) go to ``results``. With ``lease``, refused
        (:class:`LeaseLost`) unless it is still the job's. ``checkpoint`` is not kept here (files).
        Returns the stored event.
        """
        with self._lock, self._transaction():
            self._append(job_id, event, parameters, lease)
        return event

    def _append(self, job_id: str, event: training_pb2.JobEvent, parameters: training_pb2.JobEvent | None,
                lease: Lease | None) -> None:
        """``append_event`` inside the caller's transaction (the caller holds the lock)."""
        db = self._db
        if not event.HasField("time"):
            event.time.GetCurrentTime()
        state, last_seq, generation, updated = db.execute(
            "SELECT state, last_seq, generation, updated FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if lease is not None and lease.generation != generation:
            raise LeaseLost(f"job {job_id} was claimed again (generation {generation}, this write's "
                            f"{lease.generation})")
        if lease is not None and already_stored(event, job_id, last_seq, updated, lambda: db.execute(
                "SELECT data FROM events WHERE job_id = ? AND seq = ?", (job_id, last_seq)).fetchone()[0]):
            return
        event.job_id = job_id
        event.seq = last_seq + 1
        sets, args = event_updates(event, state)
        if event.kind == STATE and event.state in TERMINAL_STATES:
            sets.append("owner = '', lease_until = 0")
        db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?", (*args, job_id))
        db.execute("INSERT INTO events (job_id, seq, kind, state, data) VALUES (?, ?, ?, ?, ?)",
                   (job_id, event.seq, event.kind, event.state, event.SerializeToString()))
        if parameters is not None:
            db.execute("INSERT OR REPLACE INTO results (job_id, state, parameters) VALUES (?, ?, ?)",
                       (job_id, event.state, parameters.SerializeToString()))

    def events_after(self, job_id: str, after_seq: int, limit: int = 256) -> list[training_pb2.JobEvent]:
        """Stored events with ``seq > after_seq``, oldest first, at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after_seq, limit)).fetchall()
        return [training_pb2.JobEvent.FromString(r[0]) for r in rows]

    def result(self, job_id: str) -> training_pb2.JobEvent | None:
        """The stored parameters of an ended job (an event holding only ``parameters``), if any."""
        with self._lock:
            row = self._db.execute("SELECT parameters FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return training_pb2.JobEvent.FromString(row[0]) if row else None

    def get_job(self, job_id: str, with_spec: bool = False) -> JobRow | None:
        """The job's row, or ``None``."""
        cols = _COLUMNS + (", spec" if with_spec else "")
        with self._lock:
            r = self._db.execute(f"SELECT {cols} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if r is None:
            return None
        return _row(r, r[_N_COLUMNS] if with_spec else b"")

    def job_and_result(self, job_id: str, with_spec: bool = False,
                       ) -> tuple[JobRow, training_pb2.JobEvent | None] | None:
        """The job's row and its stored parameters (as :meth:`result`), read together in one statement: a
        job deleted meanwhile (DeleteJob, ``--job-retention``) is ``None``, never a row without the result it
        had. ``None`` when there is no such job."""
        with self._lock:
            r = self._db.execute(f"SELECT {_JOINED_COLUMNS}{', j.spec' if with_spec else ''}, r.parameters "
                                 "FROM jobs j LEFT JOIN results r ON r.job_id = j.job_id WHERE j.job_id = ?",
                                 (job_id,)).fetchone()
        return None if r is None else _row_and_result(r, with_spec)

    def list_jobs(self, states: Iterable[int] = (), limit: int = 100,
                  after: tuple[float, str] | None = None) -> list[JobRow]:
        """Jobs, newest first (``created DESC, job_id``), optionally only those in ``states``; with ``after``
        (a listed job's ``(created, job_id)``), those that come after it in that order."""
        wanted = list(states)
        where = [f"state IN ({', '.join('?' * len(wanted))})"] if wanted else []
        args: list[Any] = list(wanted)
        if after is not None:
            where.append("(created < ? OR (created = ? AND job_id > ?))")
            args += [after[0], after[0], after[1]]
        sql = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {sql} ORDER BY created DESC, job_id LIMIT ?",
                                    (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def job_ids(self, limit: int = 1000) -> list[str]:
        """Recent job ids (for "did you mean" in NOT_FOUND errors)."""
        with self._lock:
            rows = self._db.execute("SELECT job_id FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [r[0] for r in rows]

    def count_by_state(self) -> dict[int, int]:
        """How many jobs are in each state (for the ``lossd_jobs`` metric)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {int(state): int(n) for state, n in rows}

    def count_waiting(self) -> int:
        """Jobs that nobody runs and that have not ended (the queue's length)."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state NOT IN (0, ?, ?, ?) AND "
                                   "(owner = '' OR lease_until < ?)", (*TERMINAL_STATES, time.time())).fetchone()
        return int(row[0])

    def claim(self, owner: str, lease_s: float, limit: int, rdzv_endpoint: str = "") -> list[Claim]:
        """Take up to ``limit`` jobs that nobody holds (not ended; no owner, or a lapsed lease), oldest first:
        each gets ``owner``, a lease of ``lease_s`` seconds and the next generation. Multi-node jobs are taken
        only when their rendezvous is ``rdzv_endpoint`` (this server's): their machines join there."""
        if limit <= 0:
            return []
        now = time.time()
        with self._lock, self._transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS}, spec FROM jobs WHERE state NOT IN (0, ?, ?, ?) "
                "AND (owner = '' OR lease_until < ?) AND rdzv_endpoint IN ('', ?) ORDER BY created, job_id LIMIT ?",
                (*TERMINAL_STATES, now, rdzv_endpoint, limit)).fetchall()
            claims = []
            for r in rows:
                generation = db.execute(
                    "UPDATE jobs SET owner = ?, lease_until = ?, generation = generation + 1 WHERE job_id = ? "
                    "RETURNING generation", (owner, now + lease_s, r[0])).fetchone()[0]
                claims.append(Claim(_row(r, r[_N_COLUMNS]), Lease(r[0], int(generation))))
        return claims

    def ping(self) -> None:
        """One trivial read: the lease tick's proof that the store answers when it has no lease to renew."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def renew(self, owner: str, leases: Sequence[Lease], lease_s: float) -> dict[str, str]:
        """Extend ``leases`` by ``lease_s`` from now; per job ``"ok"``, ``"cancel"`` (renewed, and a cancel
        was requested) or ``"lost"`` (another claim happened: stop the worker, write nothing more)."""
        now = time.time()
        out = {}
        with self._lock:
            for lease in leases:
                r = self._db.execute(
                    "UPDATE jobs SET lease_until = ?, owner = ? WHERE job_id = ? AND generation = ? "
                    "RETURNING cancel_requested", (now + lease_s, owner, lease.job_id, lease.generation)).fetchone()
                out[lease.job_id] = "lost" if r is None else ("cancel" if r[0] else "ok")
        return out

    def release(self, lease: Lease) -> None:
        """Give a job back (after its worker ended): no owner, so any replica may claim it at once."""
        with self._lock:
            self._db.execute("UPDATE jobs SET owner = '', lease_until = 0 WHERE job_id = ? AND generation = ?",
                             (lease.job_id, lease.generation))

    def request_cancel(self, job_id: str, message: str) -> str:
        """Cancel a job: ``"cancelled"`` when nobody held it (its CANCELLED event is stored now, and its
        generation moves on so that no claim in flight writes), ``"requested"`` when an owner holds it (it
        reads the request with its next renewal), ``"ended"`` when it had already ended, ``"gone"`` when
        there is no such job (it ended and was deleted since its caller read it)."""
        now = time.time()
        with self._lock, self._transaction() as db:  # a return commits, as the end of the block does
            row = db.execute("SELECT state, owner, lease_until FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return "gone"
            state, owner, lease_until = row
            if state in TERMINAL_STATES:
                return "ended"
            if owner != "" and lease_until >= now:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
                return "requested"
            db.execute("UPDATE jobs SET generation = generation + 1 WHERE job_id = ?", (job_id,))
            self._append(job_id, training_pb2.JobEvent(
                kind=STATE, state=training_pb2.JOB_STATE_CANCELLED, message=message), None, None)
            return "cancelled"

    def checkpoint(self, job_id: str) -> bytes | None:
        """Checkpoints are files with SQLite (``shares_checkpoints`` is false): always ``None``."""
        return None

    def subscribe(self, wake: Callable[[str], None]) -> None:
        """Nothing to subscribe to: every write comes from this process, which wakes its own watchers."""

    def delete_job(self, job_id: str) -> JobRow | None:
        """Delete an ended job with its events and result; returns its row as it was, or ``None`` when it
        does not exist or has not ended (it stays)."""
        with self._lock, self._transaction() as db:
            r = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            row = _row(r) if r is not None else None
            if row is not None and row.terminal:
                for table in ("events", "results", "jobs"):
                    db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
        if row is not None and row.terminal:
            self._reclaim()
        return row if row is not None and row.terminal else None

    def _reclaim(self) -> None:
        """Give the pages of deleted jobs back to the file system (a store made with ``auto_vacuum``; a no-op on
        an older one). A failure is logged, never the deletion's: the pages stay free for later jobs."""
        try:
            with self._lock:  # (executescript: execute() frees one page per call; then the WAL goes to the file)
                self._db.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
        except sqlite3.Error as e:  # a full directory, say: freeing pages needs a little room in the WAL
            log.warning("the job store could not give deleted jobs' space back yet: %s", e)

    def delete_ended_before(self, cutoff: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs that ended before ``cutoff`` (seconds since the epoch), with their
        events and results (``--job-retention``); returns how many."""
        with self._lock, self._transaction() as db:
            ids = [r[0] for r in db.execute(
                "SELECT job_id FROM jobs WHERE state IN (?, ?, ?) AND updated < ? ORDER BY updated LIMIT ?",
                (*TERMINAL_STATES, cutoff, limit))]
            for table in ("events", "results", "jobs"):
                db.executemany(f"DELETE FROM {table} WHERE job_id = ?", [(i,) for i in ids])
        if ids:
            self._reclaim()
        return len(ids)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

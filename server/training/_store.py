"""The job store: jobs, their events and their results in SQLite (WAL) under the data directory.

One connection, used from several threads under a lock (the server is the
only writer; workers send events to it). ``synchronous=NORMAL`` in WAL mode:
a committed event survives the server being killed (``kill -9``); a power
cut may lose the last few. Events are stored as serialized ``JobEvent``
messages; a terminal event's parameters go to ``results`` (raw float bytes)
and are attached again when the event is read::

    >>> import tempfile
    >>> from lossd.v1 import training_pb2 as pb
    >>> store = JobStore(Path(tempfile.mkdtemp()) / "jobs.sqlite3")
    >>> store.create_job("0123456789ab", "demo", b"", epochs=2, total_steps=10, encoding="values")
    >>> store.append_event("0123456789ab", pb.JobEvent(kind=pb.JOB_EVENT_KIND_STATE, state=pb.JOB_STATE_QUEUED)).seq
    1
    >>> store.get_job("0123456789ab").state == pb.JOB_STATE_QUEUED
    True
    >>> [e.seq for e in store.events_after("0123456789ab", 0)]
    [1]
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ...v1 import training_pb2

__all__ = ["FINAL_STATES", "JobRow", "JobStore", "TERMINAL_STATES"]

#: States a job never leaves.
TERMINAL_STATES = frozenset({training_pb2.JOB_STATE_SUCCEEDED, training_pb2.JOB_STATE_FAILED,
                             training_pb2.JOB_STATE_CANCELLED})
#: States a worker's run ends in: the terminal ones, and INTERRUPTED (the job resumes at the next start).
FINAL_STATES = TERMINAL_STATES | {training_pb2.JOB_STATE_INTERRUPTED}

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
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
    spec        BLOB NOT NULL,
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
"""


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


_COLUMNS = ("job_id, name, state, message, created, updated, epochs, total_steps, epoch, step, loss, metrics, "
            "last_seq, resumes, encoding, world_size")


def _row(r: Sequence[Any], spec: bytes = b"") -> JobRow:
    """A ``jobs`` row (columns in :data:`_COLUMNS` order) as a :class:`JobRow`."""
    return JobRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                  json.loads(r[11]), r[12], r[13], r[14], r[15], spec)


class JobStore:
    """Jobs, events and results in one SQLite file; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"{path.name} has job store schema {version}; this lossd knows {SCHEMA_VERSION}")
        with self._lock:
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "world_size" not in columns:  # a store from before data-parallel jobs: every job had one process
                self._db.execute("ALTER TABLE jobs ADD COLUMN world_size INTEGER NOT NULL DEFAULT 1")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        with self._lock:
            self._db.close()

    def create_job(self, job_id: str, name: str, spec: bytes, *, epochs: int, total_steps: int, encoding: str,
                   world_size: int = 1) -> None:
        """Insert a new job (state unspecified until its first event)."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (job_id, name, state, created, updated, epochs, total_steps, encoding, spec, "
                "world_size) VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, name, now, now, epochs, total_steps, encoding, spec, world_size))

    def append_event(self, job_id: str, event: training_pb2.JobEvent,
                     parameters: training_pb2.JobEvent | None = None) -> training_pb2.JobEvent:
        """Number ``event`` (the job's next seq), store it and update the job's row, in one transaction.

        ``parameters`` (a terminal event's parameters, raw) go to ``results``. Returns the stored event.
        """
        if not event.HasField("time"):
            event.time.GetCurrentTime()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                state, last_seq = db.execute("SELECT state, last_seq FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                event.job_id = job_id
                event.seq = last_seq + 1
                sets = ["last_seq = ?", "updated = ?"]
                args: list[object] = [event.seq, event.time.ToNanoseconds() / 1e9]
                if event.kind == training_pb2.JOB_EVENT_KIND_STATE:
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
                db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?", (*args, job_id))
                db.execute("INSERT INTO events (job_id, seq, kind, state, data) VALUES (?, ?, ?, ?, ?)",
                           (job_id, event.seq, event.kind, event.state, event.SerializeToString()))
                if parameters is not None:
                    db.execute("INSERT OR REPLACE INTO results (job_id, state, parameters) VALUES (?, ?, ?)",
                               (job_id, event.state, parameters.SerializeToString()))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT (SQLITE_FULL) has already rolled back
                    db.execute("ROLLBACK")
                raise
        return event

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
        return _row(r, r[16] if with_spec else b"")

    def list_jobs(self, states: Iterable[int] = (), limit: int = 100) -> list[JobRow]:
        """Jobs, newest first, optionally only those in ``states``."""
        wanted = list(states)
        where = f"WHERE state IN ({', '.join('?' * len(wanted))})" if wanted else ""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY created DESC, job_id LIMIT ?",
                                    (*wanted, limit)).fetchall()
        return [_row(r) for r in rows]

    def unfinished(self) -> list[JobRow]:
        """Jobs not in a terminal state, oldest first, with their specs (to resume after a start)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, spec FROM jobs WHERE state NOT IN (?, ?, ?) ORDER BY created, job_id",
                tuple(TERMINAL_STATES)).fetchall()
        return [_row(r, r[16]) for r in rows]

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

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

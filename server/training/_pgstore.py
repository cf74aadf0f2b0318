"""The PostgreSQL job store (``--job-store postgresql://…``): one database shared by every replica.

Same rows and rules as the SQLite store (:mod:`._store`), in tables named
``lossd_*``, plus ``lossd_checkpoints`` (``bytea``): replicas share no file
system, so a job's checkpoint is written with the event that follows it, in
one transaction, under the job's lease. Leases are timed by the database's
clock (``clock_timestamp()``), never a replica's. Claims take jobs with
``SELECT … FOR UPDATE SKIP LOCKED``, so replicas claiming at once never wait on
each other nor take the same job. Each stored event sends ``NOTIFY
lossd_events, '<job id>'``; a listener connection wakes the watchers of this
replica (they also poll every :data:`POLL_S` seconds, for notifications lost
with a connection).

Needs psycopg 3 and psycopg-pool (``pip install '.[postgres]'`` in the lossd clone). The
URL's password never appears in a message (:func:`mask_url`)::

    >>> mask_url("postgresql://lossd:s3cret@db:5432/jobs")
    'postgresql://lossd:***@db:5432/jobs'
    >>> mask_url("postgresql://db/jobs?user=lossd&password=s3cret")
    'postgresql://db/jobs?user=lossd&password=***'
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from ...v1 import training_pb2
from ._store import (
    _COLUMNS,
    _JOINED_COLUMNS,
    _N_COLUMNS,
    STATE,
    TERMINAL_STATES,
    Claim,
    JobRow,
    Lease,
    LeaseLost,
    StoreError,
    StoreUnavailable,
    _row,
    _row_and_result,
    already_stored,
    event_updates,
)

__all__ = ["POLL_S", "PostgresJobStore", "mask_url"]

log = logging.getLogger("lossd.server.training")

#: Longest a watcher waits before reading the store again when no notification came.
POLL_S = 0.5
#: Default longest wait, in seconds, for a connection, a pooled connection or an unanswered packet before
#: the database counts as unavailable (the manager passes less when its lease is short).
CONNECT_TIMEOUT_S = 5.0
CHANNEL = "lossd_events"

#: Schema migrations: ``_MIGRATIONS[i]`` takes the database from version ``i`` to ``i + 1``
#: (``lossd_schema.version``), each in one transaction under an advisory lock.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE lossd_jobs (
        job_id           TEXT PRIMARY KEY,
        name             TEXT NOT NULL,
        state            INTEGER NOT NULL,
        message          TEXT NOT NULL DEFAULT '',
        created          DOUBLE PRECISION NOT NULL,
        updated          DOUBLE PRECISION NOT NULL,
        epochs           INTEGER NOT NULL,
        total_steps      BIGINT NOT NULL,
        epoch            INTEGER NOT NULL DEFAULT 0,
        step             BIGINT NOT NULL DEFAULT 0,
        loss             DOUBLE PRECISION NOT NULL DEFAULT 0,
        metrics          TEXT NOT NULL DEFAULT '{}',
        last_seq         BIGINT NOT NULL DEFAULT 0,
        resumes          INTEGER NOT NULL DEFAULT 0,
        encoding         TEXT NOT NULL,
        spec             BYTEA NOT NULL,
        world_size       INTEGER NOT NULL DEFAULT 1,
        owner            TEXT NOT NULL DEFAULT '',
        lease_until      DOUBLE PRECISION NOT NULL DEFAULT 0,
        generation       BIGINT NOT NULL DEFAULT 0,
        cancel_requested BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX lossd_jobs_by_state ON lossd_jobs (state, created);
    CREATE INDEX lossd_jobs_unfinished ON lossd_jobs (created, job_id) WHERE state NOT IN (3, 4, 5);
    CREATE TABLE lossd_events (
        job_id TEXT NOT NULL REFERENCES lossd_jobs (job_id) ON DELETE CASCADE,
        seq    BIGINT NOT NULL,
        kind   INTEGER NOT NULL,
        state  INTEGER NOT NULL,
        data   BYTEA NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE lossd_results (
        job_id     TEXT PRIMARY KEY REFERENCES lossd_jobs (job_id) ON DELETE CASCADE,
        state      INTEGER NOT NULL,
        parameters BYTEA NOT NULL
    );
    CREATE TABLE lossd_checkpoints (
        job_id     TEXT PRIMARY KEY REFERENCES lossd_jobs (job_id) ON DELETE CASCADE,
        generation BIGINT NOT NULL,
        data       BYTEA NOT NULL
    );
    """,
    # A multi-node job's rendezvous (the endpoint its machines join): only the replica serving it claims the job.
    # ListJobs' newest-first order, read from an index instead of sorting every row.
    """
    ALTER TABLE lossd_jobs ADD COLUMN rdzv_endpoint TEXT NOT NULL DEFAULT '';
    CREATE INDEX lossd_jobs_by_created ON lossd_jobs (created DESC, job_id);
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)
#: The columns of each table as the migrations above leave them, read once at start (``_migrate``).
_READ_COLUMNS = {
    "lossd_jobs": "job_id, name, state, message, created, updated, epochs, total_steps, epoch, step, loss, metrics, "
                  "last_seq, resumes, encoding, spec, world_size, owner, lease_until, generation, cancel_requested, "
                  "rdzv_endpoint",
    "lossd_events": "job_id, seq, kind, state, data",
    "lossd_results": "job_id, state, parameters",
    "lossd_checkpoints": "job_id, generation, data",
}
#: The advisory lock id that serializes migrations when replicas start together.
_MIGRATION_LOCK = 0x6C6F737364  # "lossd"
_NOW = "extract(epoch from clock_timestamp())"

assert {training_pb2.JOB_STATE_SUCCEEDED, training_pb2.JOB_STATE_FAILED,
        training_pb2.JOB_STATE_CANCELLED} == {3, 4, 5}  # the partial index above names them


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) replaced by ``***``."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            url = parts._replace(netloc=netloc).geturl()
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def _sql(text: str) -> str:
    """The shared ``?`` placeholders as psycopg's ``%s``."""
    return text.replace("?", "%s")


class PostgresJobStore:
    """The :class:`~._store.JobStore` on PostgreSQL; see the module docstring. Thread-safe (a pool)."""

    shares_checkpoints = True
    poll_s: float | None = POLL_S

    def __init__(self, url: str, *, max_checkpoint_bytes: int = 0, pool_size: int = 16,
                 timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as e:
            raise StoreError("--job-store postgresql://… needs the PostgreSQL driver: pip install "
                             "psycopg[binary] psycopg-pool (or pip install '.[postgres]' in the lossd clone)") from e
        self._psycopg = psycopg
        self.url = url
        self.masked = mask_url(url)
        self.max_checkpoint_bytes = max_checkpoint_bytes
        self._closed = threading.Event()
        self._listeners: list[Callable[[str], None]] = []
        self._listener: threading.Thread | None = None
        # Bounded waits everywhere: a lost network (a partition) must end a call in timeout_s, not in the
        # minutes TCP takes by itself, so that the manager sees its lease run out and stops its workers.
        # And on the database's side: a replica paused or cut off inside a transaction would hold its row locks
        # (claims skip locked rows: nobody could take its jobs over) until the server noticed the dead
        # connection, hours later; the server ends such a session after timeout_s instead.
        try:
            given = psycopg.conninfo.conninfo_to_dict(url).get("options") or ""
        except psycopg.ProgrammingError as e:
            raise StoreError(f"the job store URL {self.masked} does not parse: {self._clean(e)}") from None
        self._connect_args: dict[str, Any] = {
            "connect_timeout": max(2, round(timeout_s)), "tcp_user_timeout": int(timeout_s * 1000),
            "keepalives": 1, "keepalives_idle": max(1, round(timeout_s / 2)), "keepalives_interval": 1,
            "keepalives_count": 3,
            # No lock_timeout: a lease renewal waits on the job's row while a large checkpoint is written under it,
            # and must not fail for that (an administrator's LOCK TABLE makes calls wait: docs/scaling.md).
            "options": f"{given} -c idle_in_transaction_session_timeout={int(timeout_s * 1000)}".strip(),
        }
        # The pool logs a warning per failed reconnect attempt; the manager says once that the store is gone.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        try:  # first one plain connection: an unreachable database is one clear error, not pool retries
            psycopg.connect(url, **self._connect_args).close()
        except Exception as e:
            raise StoreError(f"the job store {self.masked} is unreachable: {self._clean(e)}") from None
        # The wait for a pooled connection stays CONNECT_TIMEOUT_S: under load, calls queue for connections.
        # A lost connection is retried for timeout_s, then given up: the next call that needs one tries at once.
        # psycopg-pool's own default retried for 5 minutes with a doubling delay, so after an outage of 20 s the
        # next try came up to 10 s after the database was back, and every call failed meanwhile (an audit).
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, timeout=CONNECT_TIMEOUT_S,
                                    name="lossd-jobs", kwargs=self._connect_args, reconnect_timeout=timeout_s)
        try:
            self._pool.open(wait=True, timeout=max(timeout_s, CONNECT_TIMEOUT_S))
            self._migrate()
        except StoreError:
            self._pool.close()
            raise
        except Exception as e:  # it answered the first connection: reachable, but not usable
            self._pool.close()
            raise StoreError(f"the job store {self.masked} cannot be used: {self._clean(e)}") from None

    # -- plumbing -------------------------------------------------------------------------------

    def _clean(self, error: BaseException) -> str:
        """An error's text, one line, with the URL's password masked."""
        text = " ".join(str(error).split()) or type(error).__name__
        password = urlsplit(self.url).password if "://" in self.url else None
        return text.replace(password, "***") if password else text

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        """A connection in a transaction (committed on success). A database that is lost, or cannot take the
        transaction now, is :class:`StoreUnavailable`: ``OperationalError`` (connection, timeouts, an
        administrator's shutdown), ``InterfaceError``, and SQLSTATE class 25 (``InternalError``: a read-only
        standby after a failover, the idle-in-transaction timeout of a paused replica). Other errors (lossd's
        own statements or data; XX: the database's internal errors) are raised as they are."""
        psycopg = self._psycopg
        try:
            with self._live_connection() as conn, conn.transaction():
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg.InternalError) as e:
            if isinstance(e, psycopg.InternalError) and not (e.sqlstate or "").startswith("25"):
                raise
            raise StoreUnavailable(f"the job store {self.masked} is unavailable: {self._clean(e)}") from None

    @contextlib.contextmanager
    def _live_connection(self) -> Iterator[Any]:
        """A pooled connection the database has not dropped. A database restart (or an administrator's
        ``pg_terminate_backend``) ends every session, and each idle pooled connection then failed the one call
        that got it (UNAVAILABLE, which grpcurl and raw stubs do not retry) before the pool replaced it. Now
        a dropped one is noticed before it is used (:meth:`_dropped`: no round trip) and closed (the pool
        replaces it), and the next is taken. During an outage the pool's
        own wait for a new connection, bounded by its timeout, is what a call meets, as before."""
        for _ in range(self._pool.max_size):
            with self._pool.connection() as conn:
                if not self._dropped(conn):
                    yield conn
                    return
                conn.close()  # returned closed: the pool discards it and opens another
        with self._pool.connection() as conn:
            yield conn

    @staticmethod
    def _dropped(conn: Any) -> bool:
        """Whether the database has ended idle ``conn``: it sent something (a session it ends gets its notice,
        then the end of the stream), where an idle pooled session is sent nothing. Looked at without waiting;
        nothing is sent. A rare message of another kind costs one new connection, nothing else."""
        if conn.closed:
            return True
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS lossd_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM lossd_schema").fetchone()
            version = row[0] if row else 0
            if row is None:
                db.execute("INSERT INTO lossd_schema (version) VALUES (0)")
            if not isinstance(version, int):
                raise StoreError(f"the job store {self.masked} cannot be used: its lossd_schema table holds "
                                 f"{version!r}, not a schema version: it is not lossd's")
            if version > SCHEMA_VERSION:
                raise StoreError(f"the job store {self.masked} has schema version {version}, newer than this "
                                 f"lossd's {SCHEMA_VERSION}: it was written by a newer lossd; run that version "
                                 "(or newer)")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                db.execute(_MIGRATIONS[target - 1])
                db.execute("UPDATE lossd_schema SET version = %s", (target,))
                log.info("job store %s: schema migrated to version %d", self.masked, target)
            # Every column lossd reads, read once: tables another program made (or dropped) under a lossd_schema
            # that says they are lossd's answer here, not with a traceback from the first claim (an audit).
            for table, columns in _READ_COLUMNS.items():
                try:
                    with db.transaction():  # a savepoint: the refusal below is the error, not an aborted tx
                        db.execute(f"SELECT {columns} FROM {table} LIMIT 0")
                except (self._psycopg.errors.UndefinedTable, self._psycopg.errors.UndefinedColumn) as e:
                    raise StoreError(f"the job store {self.masked} cannot be used: lossd_schema says version "
                                     f"{max(version, SCHEMA_VERSION)}, but its table {table} is not lossd's "
                                     f"({e.diag.message_primary or type(e).__name__})") from None

    def close(self) -> None:
        """Stop the listener and close the pool."""
        self._closed.set()
        self._pool.close()
        if self._listener is not None:
            self._listener.join(2.0)

    # -- jobs and events ------------------------------------------------------------------------

    def create_job(self, job_id: str, name: str, spec: bytes, *, epochs: int, total_steps: int, encoding: str,
                   world_size: int = 1, first: training_pb2.JobEvent | None = None, rdzv_endpoint: str = "") -> None:
        """Insert a new job, with its ``first`` event (numbered and stored as by ``append_event``) in the same
        transaction, so that the job is never left without one: state unspecified, which nothing claims or
        deletes (the manager always gives it; without it the state stays unspecified until one is appended).
        A job with an ``rdzv_endpoint`` is claimed only by a replica serving that rendezvous."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO lossd_jobs (job_id, name, state, created, updated, epochs, total_steps, encoding, spec, "
                "world_size, rdzv_endpoint) VALUES (%s, %s, 0, %s, %s, %s, %s, %s, %s, %s, %s)",
                (job_id, name, now, now, epochs, total_steps, encoding, spec, world_size, rdzv_endpoint))
            if first is not None:
                self._append(db, job_id, first, None, None, None)

    def append_event(self, job_id: str, event: training_pb2.JobEvent,
                     parameters: training_pb2.JobEvent | None = None, *, lease: Lease | None = None,
                     checkpoint: bytes | None = None) -> training_pb2.JobEvent:
        """Number and store ``event`` (with ``parameters`` and the ``checkpoint`` written just before it), in one
        transaction; refused (:class:`LeaseLost`) when ``lease`` is no longer the job's."""
        if checkpoint is not None and self.max_checkpoint_bytes and len(checkpoint) > self.max_checkpoint_bytes:
            raise ValueError(f"checkpoint of job {job_id} is {len(checkpoint)} bytes, over the "
                             f"{self.max_checkpoint_bytes} that --max-parameters allows")
        with self._tx() as db:
            self._append(db, job_id, event, parameters, lease, checkpoint)
        return event

    def _append(self, db: Any, job_id: str, event: training_pb2.JobEvent, parameters: training_pb2.JobEvent | None,
                lease: Lease | None, checkpoint: bytes | None) -> None:
        if not event.HasField("time"):
            event.time.GetCurrentTime()
        state, last_seq, generation, updated = db.execute(
            "SELECT state, last_seq, generation, updated FROM lossd_jobs WHERE job_id = %s FOR UPDATE",
            (job_id,)).fetchone()
        if lease is not None and lease.generation != generation:
            raise LeaseLost(f"job {job_id} was claimed again (generation {generation}, this write's "
                            f"{lease.generation})")
        if lease is not None and already_stored(event, job_id, last_seq, updated, lambda: bytes(db.execute(
                "SELECT data FROM lossd_events WHERE job_id = %s AND seq = %s", (job_id, last_seq)).fetchone()[0])):
            return  # the first attempt's commit went through: a repeat after a lost acknowledgement
        event.job_id = job_id
        event.seq = last_seq + 1
        sets, args = event_updates(event, state)
        terminal = event.kind == STATE and event.state in TERMINAL_STATES
        if terminal:
            sets.append("owner = '', lease_until = 0")
        db.execute(_sql(f"UPDATE lossd_jobs SET {', '.join(sets)} WHERE job_id = ?"), (*args, job_id))
        db.execute("INSERT INTO lossd_events (job_id, seq, kind, state, data) VALUES (%s, %s, %s, %s, %s)",
                   (job_id, event.seq, event.kind, event.state, event.SerializeToString()))
        if parameters is not None:
            db.execute("INSERT INTO lossd_results (job_id, state, parameters) VALUES (%s, %s, %s) "
                       "ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, parameters = EXCLUDED.parameters",
                       (job_id, event.state, parameters.SerializeToString()))
        if terminal:
            db.execute("DELETE FROM lossd_checkpoints WHERE job_id = %s", (job_id,))
        elif checkpoint is not None:
            db.execute("INSERT INTO lossd_checkpoints (job_id, generation, data) VALUES (%s, %s, %s) "
                       "ON CONFLICT (job_id) DO UPDATE SET generation = EXCLUDED.generation, data = EXCLUDED.data",
                       (job_id, generation, checkpoint))
        db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, job_id))

    def events_after(self, job_id: str, after_seq: int, limit: int = 256) -> list[training_pb2.JobEvent]:
        """Stored events with ``seq > after_seq``, oldest first, at most ``limit``."""
        with self._tx() as db:
            rows = db.execute("SELECT data FROM lossd_events WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                              (job_id, after_seq, limit)).fetchall()
        return [training_pb2.JobEvent.FromString(r[0]) for r in rows]

    def result(self, job_id: str) -> training_pb2.JobEvent | None:
        """The stored parameters of an ended job, if any."""
        with self._tx() as db:
            row = db.execute("SELECT parameters FROM lossd_results WHERE job_id = %s", (job_id,)).fetchone()
        return training_pb2.JobEvent.FromString(row[0]) if row else None

    def get_job(self, job_id: str, with_spec: bool = False) -> JobRow | None:
        """The job's row, or ``None``."""
        cols = _COLUMNS + (", spec" if with_spec else "")
        with self._tx() as db:
            r = db.execute(f"SELECT {cols} FROM lossd_jobs WHERE job_id = %s", (job_id,)).fetchone()
        if r is None:
            return None
        return _row(r, r[_N_COLUMNS] if with_spec else b"")

    def job_and_result(self, job_id: str, with_spec: bool = False,
                       ) -> tuple[JobRow, training_pb2.JobEvent | None] | None:
        """The job's row and its stored parameters, in one statement (one snapshot: two ``SELECT``s in a READ
        COMMITTED transaction could see a deletion between them); ``None`` when there is no such job."""
        with self._tx() as db:
            r = db.execute(f"SELECT {_JOINED_COLUMNS}{', j.spec' if with_spec else ''}, r.parameters "
                           "FROM lossd_jobs j LEFT JOIN lossd_results r ON r.job_id = j.job_id WHERE j.job_id = %s",
                           (job_id,)).fetchone()
        return None if r is None else _row_and_result(r, with_spec)

    def list_jobs(self, states: Iterable[int] = (), limit: int = 100,
                  after: tuple[float, str] | None = None) -> list[JobRow]:
        """Jobs, newest first, optionally only those in ``states``; with ``after``, those after that job
        (as :meth:`SQLiteJobStore.list_jobs <lossd.server.training._store.SQLiteJobStore.list_jobs>`)."""
        wanted = list(states)
        where = ["state = ANY(%s)"] if wanted else []
        args: list[Any] = [wanted] if wanted else []
        if after is not None:
            where.append("(created < %s OR (created = %s AND job_id > %s))")
            args += [after[0], after[0], after[1]]
        sql = f"WHERE {' AND '.join(where)}" if where else ""
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM lossd_jobs {sql} ORDER BY created DESC, job_id LIMIT %s",
                              (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def job_ids(self, limit: int = 1000) -> list[str]:
        """Recent job ids (for "did you mean" in NOT_FOUND errors)."""
        with self._tx() as db:
            rows = db.execute("SELECT job_id FROM lossd_jobs ORDER BY created DESC LIMIT %s", (limit,)).fetchall()
        return [r[0] for r in rows]

    def count_by_state(self) -> dict[int, int]:
        """How many jobs are in each state."""
        with self._tx() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM lossd_jobs GROUP BY state").fetchall()
        return {int(state): int(n) for state, n in rows}

    def count_waiting(self) -> int:
        """Jobs that no replica runs and that have not ended (the shared queue's length)."""
        with self._tx() as db:
            row = db.execute(f"SELECT COUNT(*) FROM lossd_jobs WHERE state NOT IN (0, 3, 4, 5) AND "
                             f"(owner = '' OR lease_until < {_NOW})").fetchone()
        return int(row[0])

    # -- leases ---------------------------------------------------------------------------------

    def claim(self, owner: str, lease_s: float, limit: int, rdzv_endpoint: str = "") -> list[Claim]:
        """Take up to ``limit`` jobs nobody holds, oldest first (``FOR UPDATE SKIP LOCKED``): those on one
        machine, and multi-node jobs whose rendezvous is ``rdzv_endpoint`` (this replica's)."""
        if limit <= 0:
            return []
        cols = ", ".join(f"j.{c.strip()}" for c in _COLUMNS.split(","))
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE lossd_jobs j SET owner = %s, lease_until = {_NOW} + %s, generation = j.generation + 1 "
                f"FROM (SELECT job_id, owner FROM lossd_jobs WHERE state NOT IN (0, 3, 4, 5) "
                f"AND (owner = '' OR lease_until < {_NOW}) AND rdzv_endpoint IN ('', %s) "
                "ORDER BY created, job_id LIMIT %s FOR UPDATE SKIP LOCKED) c "
                f"WHERE j.job_id = c.job_id RETURNING {cols}, j.spec, j.generation, c.owner",
                (owner, lease_s, rdzv_endpoint, limit)).fetchall()
        rows.sort(key=lambda r: (r[4], r[0]))
        # The row's owner is the previous one (who ran the job, if anyone), as with SQLite.
        return [
            Claim(_row((*r[: _N_COLUMNS - 1], r[_N_COLUMNS + 2]), r[_N_COLUMNS]), Lease(r[0], int(r[_N_COLUMNS + 1])))
            for r in rows
        ]

    def ping(self) -> None:
        """``SELECT 1``: the lease tick's proof that the database answers when it has no lease to renew."""
        with self._tx() as db:
            db.execute("SELECT 1")

    def renew(self, owner: str, leases: Sequence[Lease], lease_s: float) -> dict[str, str]:
        """Extend ``leases``; per job ``"ok"``, ``"cancel"`` (a cancel was requested) or ``"lost"``."""
        if not leases:
            return {}
        with self._tx() as db:
            rows = db.execute(
                f"UPDATE lossd_jobs j SET lease_until = {_NOW} + %s, owner = %s "
                "FROM unnest(%s::text[], %s::bigint[]) AS l(job_id, generation) "
                "WHERE j.job_id = l.job_id AND j.generation = l.generation "
                "RETURNING j.job_id, j.cancel_requested",
                (lease_s, owner, [x.job_id for x in leases], [x.generation for x in leases])).fetchall()
        held = {job_id: ("cancel" if cancel else "ok") for job_id, cancel in rows}
        return {x.job_id: held.get(x.job_id, "lost") for x in leases}

    def release(self, lease: Lease) -> None:
        """Give a job back: no owner, so any replica may claim it at once."""
        with self._tx() as db:
            db.execute("UPDATE lossd_jobs SET owner = '', lease_until = 0 WHERE job_id = %s AND generation = %s",
                       (lease.job_id, lease.generation))

    def request_cancel(self, job_id: str, message: str) -> str:
        """Cancel a job: ``"cancelled"`` (nobody held it: CANCELLED stored now), ``"requested"`` (its owner
        reads it with its next renewal), ``"ended"`` or ``"gone"`` (deleted since its caller read it)."""
        with self._tx() as db:
            row = db.execute(f"SELECT state, owner, lease_until >= {_NOW} FROM lossd_jobs WHERE job_id = %s "
                             "FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                return "gone"
            state, owner, held = row
            if state in TERMINAL_STATES:
                return "ended"
            if owner and held:  # notified once: a request made again (CancelJob asks every poll) wakes nobody
                asked = db.execute("UPDATE lossd_jobs SET cancel_requested = true WHERE job_id = %s AND NOT "
                                   "cancel_requested", (job_id,)).rowcount
                if asked:
                    db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, job_id))
                return "requested"
            db.execute("UPDATE lossd_jobs SET owner = '', lease_until = 0, generation = generation + 1 "
                       "WHERE job_id = %s", (job_id,))
            self._append(db, job_id, training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_CANCELLED,
                                                           message=message), None, None, None)
            return "cancelled"

    def checkpoint(self, job_id: str) -> bytes | None:
        """The job's last checkpoint (written with the event that followed it), if any."""
        with self._tx() as db:
            row = db.execute("SELECT data FROM lossd_checkpoints WHERE job_id = %s", (job_id,)).fetchone()
        return bytes(row[0]) if row else None

    def delete_job(self, job_id: str) -> JobRow | None:
        """Delete an ended job (its events, result and checkpoint go with it); its row as it was, or ``None``."""
        with self._tx() as db:
            r = db.execute(f"DELETE FROM lossd_jobs WHERE job_id = %s AND state IN (3, 4, 5) RETURNING {_COLUMNS}",
                           (job_id,)).fetchone()
        return _row(r) if r is not None else None

    def delete_ended_before(self, cutoff: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs that ended before ``cutoff`` (seconds since the epoch); how many."""
        with self._tx() as db:
            rows = db.execute("DELETE FROM lossd_jobs WHERE job_id IN (SELECT job_id FROM lossd_jobs WHERE "
                              "state IN (3, 4, 5) AND updated < %s ORDER BY updated LIMIT %s "
                              "FOR UPDATE SKIP LOCKED) RETURNING job_id", (cutoff, limit)).fetchall()
        return len(rows)

    # -- notifications --------------------------------------------------------------------------

    def subscribe(self, wake: Callable[[str], None]) -> None:
        """Call ``wake(job_id)`` (on a listener thread) whenever any replica stores an event of that job."""
        self._listeners.append(wake)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, daemon=True, name="lossd-jobs-listen")
            self._listener.start()

    def _listen(self) -> None:
        """LISTEN on a connection of its own; reconnect (every second) when it is lost."""
        psycopg = self._psycopg
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, **self._connect_args) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=1.0):
                            for wake in self._listeners:
                                wake(note.payload)
            except Exception as e:  # a lost connection: the watchers poll meanwhile
                if not self._closed.is_set():
                    log.warning("job store %s: notifications lost (%s); reconnecting", self.masked, self._clean(e))
                    self._closed.wait(1.0)

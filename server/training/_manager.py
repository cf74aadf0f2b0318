"""The job manager: validation, the queue, worker processes, events, cancel, resume and shutdown.

Lives in the server process. ``submit`` validates a spec (on the server's
thread pool) and stores the job and its QUEUED event; at most
``max_queued_jobs`` wait. The queue is the store: whenever one of the
``max_jobs`` slots is free (after a submit, when a job ends, and every lease
tick), the manager claims the oldest waiting jobs (``JobStore.claim``: an
owner, a lease, a new generation) and starts a worker for each. Each running
job has a worker process and a monitor thread that reads the worker's
events, stores them under the job's lease (``JobStore.append_event``; with a
shared store, the checkpoint the worker wrote just before goes with the
event) and wakes the watchers. A lease thread renews the leases every
``lease_s / 4`` (at most 1 s), reads cancel requests that other replicas
stored, and stops the worker of a job whose lease was lost (another replica
claimed it) or could not be renewed in time: such a replica never writes
about that job again, the store refuses it (fencing by generation).

Watchers (``watch``) read stored events from the store and wait for a
wake-up (from this process, a NOTIFY from another replica, or the store's
polling interval) when they have seen them all, so a slow client costs
nothing but its position, and a re-attaching client sees exactly what a live
one saw.

A job claimed while the store shows it RUNNING (its owner died) first gets
an INTERRUPTED event; its worker resumes from the job's last checkpoint.
``close`` asks running workers to checkpoint and stop (INTERRUPTED) and
gives their jobs back, for another replica or the next start to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import errno
import logging
import multiprocessing
import multiprocessing.context
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from ..._settings import SettingError, first_line, flag_name
from ..._wire import FieldError, reply_encoding
from ...v1 import lossd_pb2, training_pb2
from .. import _metrics
from .._limits import TrainingConfig
from ..evaluation import capture_warnings
from ..losses import Registry
from ..rpc import decode_tensor, encode_tensor
from ._checkpoint import (
    CHECKPOINT_MESSAGE,
    DISK_FULL,
    disk_full,
    error_chain,
    remove_checkpoint,
    save_checkpoint_bytes,
)
from ._distributed import forget_rendezvous
from ._engine import missed_epochs, spec_digest, stopped_event
from ._spec import check_loss_accepts_model, plan_job
from ._store import (
    FINAL_STATES,
    TERMINAL_STATES,
    Claim,
    JobRow,
    Lease,
    LeaseLost,
    StoreUnavailable,
)
from ._stores import open_store
from ._worker import worker_main

__all__ = ["JobManager", "JOB_ID"]

log = logging.getLogger("lossd.server.training")

#: What a job id looks like (server-generated; checked before any lookup or path).
JOB_ID = re.compile(r"[0-9a-f]{12}")
STATE = training_pb2.JOB_EVENT_KIND_STATE
#: Seconds a worker gets to act on a cancel (or, on shutdown, an interrupt) before it is killed.
STOP_GRACE_S = 10.0
#: Seconds between two retention sweeps (each deletes at most 1000 jobs).
RETENTION_SWEEP_S = 60.0
#: On shutdown, the last seconds of the grace period left for killing workers that did not stop and recording it.
KILL_MARGIN_S = 1.0
#: Seconds between attempts to write held events while the data directory is full.
STORAGE_RETRY_S = 1.0
#: On shutdown, the longest wait for the store calls of RPCs in flight (GetJob, a watcher's read, a cancel) to
#: finish before the store closes; what starts later, or is still running then, answers UNAVAILABLE.
IO_DRAIN_S = 2.0
#: The CANCELLED message of a job that had trained when it was cancelled without a worker training it (it waited
#: to resume, or its worker was still planning): its checkpoint gives the parameters so far (``stopped_event``).
CANCELLED_WAITING = "cancelled before it resumed, after step {step} (epoch {epoch}): the parameters of its checkpoint"
#: The same when its worker had resumed it but was stopped (killed) rather than stopping at a step.
CANCELLED_STOPPED = ("cancelled (the worker was stopped): the parameters of its last checkpoint, after step {step} "
                     "(epoch {epoch})")


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the data directory's file system is full (SQLite's SQLITE_FULL, ENOSPC, EDQUOT).

    >>> is_disk_full(sqlite3.OperationalError("database or disk is full")), is_disk_full(OSError(28, "No space"))
    (True, True)
    """
    return disk_full(error) or any(isinstance(e, sqlite3.Error) and (
        getattr(e, "sqlite_errorcode", None) == 13 or "disk is full" in str(e)) for e in error_chain(error))


def is_damaged(error: BaseException) -> bool:
    """Whether ``error`` says what the job store holds is damaged: SQLite's SQLITE_CORRUPT or SQLITE_NOTADB (a
    page it had not read at start), or a stored event, spec or parameters that do not parse.

    >>> is_damaged(sqlite3.DatabaseError("database disk image is malformed")), is_damaged(ValueError())
    (True, False)
    """
    return isinstance(error, DecodeError) or (isinstance(error, sqlite3.DatabaseError) and (
        getattr(error, "sqlite_errorcode", None) in (11, 26) or "malformed" in str(error)))


def _mp_context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """``forkserver`` where available (torch preloaded once, then a job starts in ~20 ms), else ``spawn``.

    Like every spawn/forkserver user, a program that embeds the server must guard its entry
    point with ``if __name__ == "__main__":`` (``lossd serve`` and pytest do).
    """
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["lossd.server.training._preload"])  # the worker's module, torch._dynamo
        return ctx
    return multiprocessing.get_context("spawn")


@dataclass
class _Running:
    job_id: str
    process: Any = None  # set once the launcher has started it
    control: Connection | None = None
    events: Connection | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set on the event loop when the job settled
    cancel_requested: bool = False
    interrupt_requested: bool = False
    lease: Lease | None = None
    #: time.monotonic() by which the lease must be renewed, else this replica stops the worker (it may lapse)
    lease_deadline: float = float("inf")
    lost: bool = False  # the lease is gone: write nothing more about the job
    disk_full: bool = False  # interrupted because the data directory filled up: re-queued, resumed when space returns
    #: the worker's temporary folder (a data-parallel job's rendezvous file and rank logs), deleted when it ends
    scratch: str | None = None
    #: the job's spec digest and size (from its claim): a cancel that stops the worker ends the job as its
    #: checkpoint leaves it (``stopped_event``)
    digest: str = ""
    epochs: int = 0
    total_steps: int = 0
    resumed: bool = False  # the worker sent its RUNNING event: it planned and (re)started training
    forkserver: int | None = None  # the pid of the forkserver that forked the worker (None: spawn)
    nodes: int = 1  # the machines it runs on (its spec's): the rendezvous keys to drop when it ends


class _DataDirLock:
    """An exclusive lock on the data directory: two servers must never run the same jobs."""

    def __init__(self, data_dir: Path) -> None:
        self._file = open(data_dir / "lock", "a+")  # noqa: SIM115  (held for the manager's life)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise SettingError(f"--data-dir {data_dir} (env LOSSD_DATA_DIR): is in use by another lossd server "
                               f"({holder}); give each server its own --data-dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        self._file.close()


class JobManager:
    """Runs training jobs for one server; see the module docstring."""

    def __init__(self, config: TrainingConfig, registry: Registry, executor: Executor) -> None:
        self.config = config
        self._registry = registry
        self._executor = executor
        data_dir = Path(config.data_dir)
        # A shared store's working copies have a folder of their own, which the start empties: a SQLite store's
        # checkpoints in the same --data-dir (a server that ran on it before) were deleted as copies (an audit).
        self._checkpoints = data_dir / ("checkpoints-shared" if config.job_store else "checkpoints")
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._checkpoints.mkdir(exist_ok=True)
            self._lock_file = _DataDirLock(data_dir)
        except OSError as e:
            raise SettingError(f"--data-dir {data_dir} (env LOSSD_DATA_DIR): cannot use it as the data directory "
                               f"({e.strerror or e}{f': {e.filename}' if e.filename else ''}); give a folder this "
                               "user can create and write") from None
        #: Working copies an earlier lossd kept in checkpoints/ with a shared store (no SQLite store here: copies
        #: the database has), removed by the start's sweep as ``checkpoints-shared``'s are.
        self._old_copies: Path | None = None
        if config.job_store and (data_dir / "jobs.sqlite3").exists():
            log.warning("--data-dir %s also holds a SQLite job store (jobs.sqlite3); its jobs wait, with their "
                        "checkpoints, for a server that runs on it (without --job-store)", data_dir)
        elif config.job_store and (data_dir / "checkpoints").is_dir():
            self._old_copies = data_dir / "checkpoints"
        try:
            self.store = open_store(config.job_store, data_dir,
                                    max_checkpoint_bytes=_checkpoint_bound(config.limits.max_parameters),
                                    timeout_s=min(5.0, config.lease_s / 2))
        except BaseException:
            self._lock_file.release()
            raise
        #: This replica's name in the store's ``owner`` column (host, pid and a random part: a restart is new).
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._tick_s = min(config.lease_s / 4, 1.0)
        try:
            self._rdzv_store = _rendezvous_store(config.rdzv_endpoint) if config.rdzv_endpoint else None
        except BaseException:
            self.store.close()
            self._lock_file.release()
            raise
        self._ctx = _mp_context()
        self._lock = threading.RLock()
        self._health_lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        #: Whether the store answered at the last lease tick (TrainingService's health follows it).
        self.store_ok = True
        self.on_store_health: Any = None  # called (on the event loop) with True/False when it changes
        self._waiters: dict[str, set[asyncio.Event]] = {}  # by job: the events its next event sets (_waiting)
        self._steps_seen: dict[str, int] = {}  # last step reported per job, for the step-rate metric
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False  # no new jobs or starts
        self._no_starts = False  # no starts (the drain began)
        self._drained = False  # workers gone: watchers send what is stored and end
        self._watchers = 0
        self._no_watchers = asyncio.Event()
        #: Events that could not be written while the data directory was full, in order, with their
        #: seqs already given; written (same seqs) when space returns. Empty otherwise.
        self._held: deque[tuple[str, training_pb2.JobEvent, training_pb2.JobEvent | None]] = deque()
        self._full = False
        self._restarts: dict[str, int] = {}  # worker restarts after a kill -9, per job, in this process
        #: Called with False when the data directory fills up and True when space returns (health).
        self.on_storage: Any = None
        #: The store calls of RPCs running now (:meth:`_counted`), which ``close`` lets finish before it closes
        #: the store; ``_store_closed`` (under the condition's lock) once it has begun to close it.
        self._io_idle = threading.Condition()
        self._io_calls = 0
        self._store_closed = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover jobs a previous run left unfinished and start them.

        The forkserver (which preloads torch, ~2 s) starts with the first job, not here: a server
        that never trains never pays for it.
        """
        self._loop = asyncio.get_running_loop()
        self.store.subscribe(self._wake)
        await self._loop.run_in_executor(self._executor, self._recover)
        self._ticker = threading.Thread(target=self._tick_loop, daemon=True, name="lossd-job-leases")
        self._ticker.start()

    def _recover(self) -> None:
        self._sweep_checkpoints()
        with self._lock:
            self._schedule()
        self._count_states()  # the jobs this data directory (or the shared store) holds, before any event

    def _sweep_checkpoints(self) -> None:
        """Delete checkpoints (and temp files) of jobs that ended or are unknown: a server stopped
        just as a job ended, or killed while a worker wrote, leaves them behind. With a shared store
        every local file is a copy (the store has the job's checkpoint): all of them go."""
        for folder in (self._checkpoints, *([self._old_copies] if self._old_copies is not None else [])):
            for path in folder.iterdir():
                job_id = path.name.lstrip(".").split(".", 1)[0]
                if not JOB_ID.fullmatch(job_id):
                    continue  # not a name this server makes: not ours to delete
                row = None if self.store.shares_checkpoints else self.store.get_job(job_id)
                if row is None or row.terminal:
                    try:
                        if remove_checkpoint(folder / f"{job_id}.pt"):
                            log.info("removed the leftover checkpoint of job %s", job_id)
                    except OSError as e:  # a leftover is not worth a start that fails
                        log.warning("cannot delete the leftover checkpoint of job %s (%s)", job_id,
                                    e.strerror or type(e).__name__)

    def stop_starting(self) -> None:
        """Start no more jobs: the drain's first step, before it waits for health to turn NOT_SERVING (a slot
        freed meanwhile was given to a queued job, whose worker started during the drain: the job audit)."""
        self._no_starts = True

    async def close(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop: running workers checkpoint and end INTERRUPTED (killed after ``timeout``; one stopped before it
        started training is given back as it was, QUEUED); watchers end."""
        if self._closing:
            return
        self._closing = self._no_starts = True  # the lease thread keeps renewing (and claims nothing) until the
        # workers ended
        with self._lock:
            running = list(self._running.values())
            for job in running:
                job.interrupt_requested = True
                if job.control is not None:
                    with contextlib.suppress(OSError):
                        job.control.send_bytes(b"interrupt")
        # Workers get the time up to the last part of ``timeout``; what still runs then is killed, and
        # that part is for the kill to be noticed and recorded: the whole stays within ``timeout``.
        deadline = time.monotonic() + timeout
        margin = min(KILL_MARGIN_S, timeout / 4)
        for job in running:
            if not await _ended(job, max(0.0, deadline - margin - time.monotonic())) and job.process is not None:
                job.process.kill()
        for job in running:
            await _ended(job, max(0.0, deadline - time.monotonic()))
        # Watchers send the events stored so far (the INTERRUPTED ones included), then end their streams.
        self._drained = True
        for events in self._waiters.values():
            for event in events:
                event.set()
        self._waiters.clear()
        if self._watchers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._no_watchers.wait(), 2.0)
        self._ticker_stop.set()
        if self._ticker is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._ticker.join, 5.0)
        await asyncio.get_running_loop().run_in_executor(None, self._close_store)
        self._lock_file.release()

    def _close_store(self) -> None:
        """Close the store once the RPCs' store calls in flight have ended (at most ``IO_DRAIN_S``): calls
        still in flight then, and those that come later, answer UNAVAILABLE (:meth:`_io`), never a closed
        database's error."""
        with self._io_idle:
            if not self._io_idle.wait_for(lambda: not self._io_calls, IO_DRAIN_S):
                log.warning("closing the job store with %d calls still reading it (they answer UNAVAILABLE)",
                            self._io_calls)
            self._store_closed = True
        self.store.close()

    # -- submit, schedule, run ------------------------------------------------------------------

    async def submit(self, request: training_pb2.TrainJobRequest) -> str:
        """Validate and store a job; returns its id. Raises ``FieldError`` for a bad spec or a full queue."""
        if self._closing:
            raise FieldError("", "the server is shutting down; submit the job again after it restarts", "UNAVAILABLE")
        if self._full:
            raise _full_error()
        return str(await self._io(self._submit, request, executor=self._executor,
                                  closed="the server is shutting down; submit the job again after it restarts"))

    def _queue_full(self) -> FieldError | None:
        """The refusal of a job that would find the queue full, else ``None``."""
        waiting = self.store.count_waiting()
        if len(self._running) < self.config.max_jobs or waiting < self.config.max_queued_jobs:
            return None
        return FieldError("", f"{len(self._running)} jobs are running and {waiting} are queued; the server "
                          f"queues at most {self.config.max_queued_jobs} ({flag_name('max_queued_jobs')}) behind "
                          f"{self.config.max_jobs} running ({flag_name('max_jobs')}): retry later",
                          "RESOURCE_EXHAUSTED")

    def _submit(self, request: training_pb2.TrainJobRequest) -> str:
        if (full := self._queue_full()) is not None:  # before planning, which may build a large data set;
            raise full  # asked again under the lock once the job is planned
        plan = plan_job(request, self._registry, self.config.limits)
        if plan.nodes > 1 and self._rdzv_store is None:
            raise FieldError("nodes", f"is {plan.nodes}: a job on several machines needs a server started with "
                            "--rdzv-endpoint HOST:PORT (the rendezvous the other machines join)",
                            "FAILED_PRECONDITION")
        # torch's warnings on this trial run (kl_div's reduction='mean') are not written raw to stderr: the
        # job's worker logs them as it runs
        with capture_warnings():
            check_loss_accepts_model(plan, self.config.limits.max_loss_work)
        with self._lock:
            if (full := self._queue_full()) is not None:
                raise full
            if self._full:
                raise _full_error()
            job_id = secrets.token_hex(6)
            while self.store.get_job(job_id) is not None:
                job_id = secrets.token_hex(6)
            queued = training_pb2.JobEvent(
                kind=STATE, state=training_pb2.JOB_STATE_QUEUED, epochs=plan.epochs, total_steps=plan.total_steps,
                message=f"queued: {plan.total_steps} steps ({plan.epochs} epochs of {len(plan.train_index)} "
                f"samples, batch {plan.batch_size}); {len(plan.val_index)} validation samples"
                + (f"; {plan.world_size} data-parallel ranks" if plan.world_size > 1 else "")
                + (f" on {plan.nodes} machines (the others join with: lossd join {job_id} --rdzv-endpoint "
                   f"{self.config.rdzv_endpoint})" if plan.nodes > 1 else ""))
            try:  # the row and its QUEUED event in one transaction (no event is held: the directory is not full)
                self.store.create_job(job_id, request.name, request.SerializeToString(), epochs=plan.epochs,
                                      total_steps=plan.total_steps, encoding=plan.encoding,
                                      world_size=plan.world_size, first=queued,
                                      rdzv_endpoint=self.config.rdzv_endpoint if plan.nodes > 1 else "")
            except Exception as e:
                if not is_disk_full(e):
                    raise
                self._storage_full(e)
                raise _full_error() from None
            self._count(job_id, queued)
            self._wake(job_id)
            with contextlib.suppress(StoreUnavailable):  # the job waits in the store; a later tick claims it
                self._schedule()
        return job_id

    def _schedule(self) -> None:
        """Claim waiting jobs for the free slots (caller holds the lock); each starts in a launcher thread,
        so that nobody waits on a process start (seconds while the forkserver is still importing torch)."""
        free = self.config.max_jobs - len(self._running)
        if free <= 0 or self._no_starts or self._full:  # a full data directory: nothing starts
            return
        started = time.monotonic()
        for claim in self.store.claim(self.owner, self.config.lease_s, free, self.config.rdzv_endpoint):
            earlier = self._running.get(claim.row.job_id)
            if earlier is not None:  # this server stalled past its own lease and claimed the job again
                self._lose(earlier, "its lease lapsed and this server claimed the job again")
            job = self._running[claim.row.job_id] = _Running(claim.row.job_id, lease=claim.lease,
                                                               lease_deadline=started + self.config.lease_s)
            if not claim.row.step:  # a fresh start: its steps count from 0 (_count)
                self._steps_seen[job.job_id] = 0
            threading.Thread(target=self._launch, args=(job, claim), daemon=True,
                             name=f"lossd-launch-{job.job_id}").start()

    def _prepare(self, job: _Running, claim: Claim) -> None:
        """Before the worker starts: a job whose owner died gets its INTERRUPTED event; with a shared
        store, the job's checkpoint comes from the store (a local file may be stale or missing)."""
        row = claim.row
        if self.store.shares_checkpoints:
            path = self._checkpoint(row.job_id)
            data = self.store.checkpoint(row.job_id)
            if data is None:
                remove_checkpoint(path)
            else:
                save_checkpoint_bytes(path, data)
        missed = self._missed_epochs(row) if row.state != training_pb2.JOB_STATE_QUEUED else []
        with self._lock:
            for event in missed:  # before the interruption: the worker finished them before it stopped
                self._record(row.job_id, event, lease=claim.lease)
            if row.state == training_pb2.JOB_STATE_RUNNING:
                # where the job stood: its last replayed epoch's end when there is one (never behind it); its loss
                # too, which the store sets with epoch and step
                last = missed[-1] if missed else row
                self._record(row.job_id, training_pb2.JobEvent(
                    kind=STATE, state=training_pb2.JOB_STATE_INTERRUPTED, epochs=row.epochs, epoch=last.epoch,
                    step=last.step, loss=last.loss, total_steps=row.total_steps,
                    message=f"the server running the job stopped ({row.owner or 'unknown'}); it resumes from its "
                    "last checkpoint"), lease=claim.lease)
        log.info("job %s (%s) claimed by %s, generation %d", row.job_id, training_pb2.JobState.Name(row.state),
                 self.owner, claim.lease.generation)

    def _stood(self, job_id: str) -> tuple[int, int, float]:
        """(epoch, step, loss) of the job's last stored event; zeros when the store cannot say now."""
        with contextlib.suppress(StoreUnavailable):
            row = self.store.get_job(job_id)
            if row is not None:
                return row.epoch, row.step, row.loss
        return 0, 0, 0.0

    def _missed_epochs(self, row: JobRow) -> list[training_pb2.JobEvent]:
        """The EPOCH events of epochs the job's checkpoint has finished but the store lacks (``missed_epochs``: a
        server killed between a worker's checkpoint and the epoch's event), found by reading the job's events."""
        stored, after = 0, 0
        while events := self.store.events_after(row.job_id, after):
            after = events[-1].seq
            stored = max([stored, *(e.epoch for e in events if e.kind == training_pb2.JOB_EVENT_KIND_EPOCH)])
        try:
            return missed_epochs(self._checkpoint(row.job_id), spec_digest(row.spec), stored, epochs=row.epochs,
                                 total_steps=row.total_steps)
        except Exception:  # a checkpoint of an unexpected shape: the run starts over or resumes as it can
            log.exception("job %s: could not read its checkpoint for the epochs it finished", row.job_id)
            return []

    def _launch(self, job: _Running, claim: Claim) -> None:
        """Start the worker process for ``job``, then relay its events (this thread becomes its monitor)."""
        row = claim.row
        job.digest, job.epochs, job.total_steps = spec_digest(row.spec), row.epochs, row.total_steps
        job.nodes = max(1, training_pb2.TrainJobRequest.FromString(row.spec).nodes)
        try:
            self._prepare(job, claim)
        except Exception as e:  # another replica has it now, the store is gone, a local write failed: let go
            if isinstance(e, (LeaseLost, StoreUnavailable)):
                log.warning("job %s: not started (%s)", job.job_id, e)
            else:
                log.exception("job %s: not started", job.job_id)
            with self._lock:
                self._forget(job)
            with contextlib.suppress(Exception):
                self.store.release(claim.lease)  # any replica may try again (a lost lease is not ours to free)
            self._settled(job)
            return
        with self._lock:
            if job.lost:  # claimed anew meanwhile (by another server, or by this one after a stall)
                self._forget(job)
                self._settled(job)
                return
        try:
            checkpoint = str(self._checkpoint(row.job_id))  # checks the id, which names files and folders
            if row.world_size > 1:  # a worker killed -9 cannot delete its ranks' files: this server does
                for stale in Path(tempfile.gettempdir()).glob(f"lossd-job-{row.job_id}-*"):  # a server killed -9
                    shutil.rmtree(stale, ignore_errors=True)
                job.scratch = tempfile.mkdtemp(prefix=f"lossd-job-{row.job_id}-")
            control_r, control_w = self._ctx.Pipe(duplex=False)
            events_r, events_w = self._ctx.Pipe(duplex=False)
            process = self._ctx.Process(
                target=worker_main, name=f"lossd-job-{row.job_id}", daemon=True,
                args=(row.job_id, row.spec, checkpoint, self.config.plugins, control_r,
                      events_w, self.config.rdzv_endpoint, self.store.shares_checkpoints, job.scratch,
                      (self.config.log_format, logging.getLevelName(self.config.log_level)), row.step),
            )
            process.start()
            job.forkserver = _forkserver_pid(self._ctx)
        except Exception as e:  # e.g. the OS refused a process
            log.exception("could not start a worker for job %s", job.job_id)
            if job.scratch:
                shutil.rmtree(job.scratch, ignore_errors=True)
            with self._lock:
                self._forget(job)
                with contextlib.suppress(Exception):
                    self._record(job.job_id, training_pb2.JobEvent(
                        kind=STATE, state=training_pb2.JOB_STATE_FAILED,
                        message=f"could not start a worker process ({type(e).__name__})"), lease=job.lease)
                with contextlib.suppress(StoreUnavailable):
                    self._schedule()
            self._settled(job)
            return
        control_r.close()
        events_w.close()
        with self._lock:
            job.process, job.control, job.events = process, control_w, events_r
            if job.lost:  # lost while the process started: it must take no step
                process.kill()
            self._send_lease(job)
            for wanted, message in ((job.interrupt_requested, b"interrupt"), (job.cancel_requested, b"cancel")):
                if wanted:
                    with contextlib.suppress(OSError):
                        control_w.send_bytes(message)
        log.info("job %s started in worker pid %s", row.job_id, process.pid)
        self._monitor(job)

    def _checkpoint(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):  # never a path from anything but a server-made id
            raise ValueError(f"not a job id: {job_id!r}")
        return self._checkpoints / f"{job_id}.pt"

    def _monitor(self, job: _Running) -> None:
        """Relay one worker's events until it ends; then settle the job's state and start the next."""
        assert job.events is not None and job.control is not None
        ended = False
        failure = ""  # why the store refused what the worker sent
        checkpoint: bytes | None = None
        try:
            while True:
                data = job.events.recv_bytes()
                if data.startswith(CHECKPOINT_MESSAGE):  # the checkpoint the next event follows (shared store)
                    checkpoint = data[len(CHECKPOINT_MESSAGE):]
                    continue
                event = training_pb2.JobEvent.FromString(data)
                if event.kind == STATE and event.state == training_pb2.JOB_STATE_RUNNING:
                    job.resumed = True
                final = event.kind == STATE and event.state in FINAL_STATES
                if final and event.state == training_pb2.JOB_STATE_INTERRUPTED and \
                        event.message.startswith(DISK_FULL) and not job.interrupt_requested:
                    with self._lock:
                        job.disk_full = True  # its checkpoint did not fit: the directory is full
                        self._storage_full(OSError(errno.ENOSPC, "the worker could not write its checkpoint"))
                if not self._record_running(job, event, checkpoint):
                    break  # the lease is lost: the worker is stopped, nothing more is written
                checkpoint = None
                if final:
                    ended = True
                    break
        except (EOFError, OSError):
            pass
        except ValueError as e:  # refused by the store (a checkpoint over the --max-parameters bound)
            failure = str(e)
            log.error("job %s: %s", job.job_id, failure)
            job.process.kill()
        except Exception:
            log.exception("job %s: bad message from its worker", job.job_id)
        job.process.join(STOP_GRACE_S)
        if job.process.is_alive():
            job.process.kill()
            job.process.join(5)
        job.events.close()
        job.control.close()
        if job.scratch:  # its ranks die with the worker (PR_SET_PDEATHSIG)
            shutil.rmtree(job.scratch, ignore_errors=True)
        self._forget_rendezvous(job.job_id, job.nodes)  # before the job can start again
        # A cancel that stopped the worker (still planning, or not stopping in time): the job ends as its
        # checkpoint leaves it. Read before taking the lock (a checkpoint may be large).
        read = not ended and job.cancel_requested and not job.lost
        stopped = self._stopped_cancel(job) if read else None
        stood = self._stood(job.job_id) if not ended and not job.lost else (0, 0, 0.0)
        with self._lock:
            current = self._forget(job)
            if job.lost:
                log.warning("job %s: this server's lease was lost; its worker was stopped and another server "
                            "resumes the job", job.job_id)
            elif not ended:
                code = job.process.exitcode
                ending: training_pb2.JobEvent | None
                if job.cancel_requested:
                    ending = (stopped if read else self._stopped_cancel(job)) or training_pb2.JobEvent(
                        kind=STATE, state=training_pb2.JOB_STATE_CANCELLED,
                        message="cancelled (the worker was stopped)")
                elif job.disk_full and not self._closing:
                    ending = training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_INTERRUPTED,
                                                  message=f"{DISK_FULL}: the job resumes from its last checkpoint "
                                                  "once space is freed")
                elif (self._closing or job.interrupt_requested) and not job.resumed:
                    ending = None  # stopped before it started: given back as it was (QUEUED), no INTERRUPTED
                elif self._closing or job.interrupt_requested:
                    ending = training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_INTERRUPTED,
                                                  message="server shutting down; the job resumes from its last "
                                                  "checkpoint when the server restarts")
                elif (killed := _killed_from_outside(code, job.forkserver, self._ctx)) and not failure and \
                        self._restarts.get(job.job_id, 0) < self.config.max_job_restarts:
                    self._restarts[job.job_id] = self._restarts.get(job.job_id, 0) + 1
                    ending = training_pb2.JobEvent(
                        kind=STATE,
                        state=training_pb2.JOB_STATE_INTERRUPTED,
                        message=f"{killed}; restart {self._restarts[job.job_id]} of at most "
                        f"{self.config.max_job_restarts} ({flag_name('max_job_restarts')}): the job "
                        "resumes from its last checkpoint",
                    )
                else:
                    ending = training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_FAILED, message=failure
                                                  or _exit_reason(code, self._restarts.get(job.job_id, 0),
                                                                  self.config.max_job_restarts, killed))
                if ending is not None and not ending.epochs:  # built here: where the job stood, as every event
                    ending.epochs, ending.total_steps = job.epochs, job.total_steps  # says (and the store keeps
                    ending.epoch, ending.step, ending.loss = stood  # its loss: it sets epoch, step and loss together)
                if ending is not None:
                    with contextlib.suppress(Exception):
                        self._record(job.job_id, ending, lease=job.lease)
            row = None
            with contextlib.suppress(StoreUnavailable):
                row = self.store.get_job(job.job_id) if not self._closing else None
                # INTERRUPTED (shutting down, a restart after a kill -9, a full data directory): released,
                # any replica (this one first, at the _schedule below) resumes it from its checkpoint
                if job.lease is not None and not job.lost and (row is None or not row.terminal):
                    self.store.release(job.lease)
            if current and (self.store.shares_checkpoints or (row is not None and row.terminal)):
                remove_checkpoint(self._checkpoint(job.job_id))  # (not the working copy of a new claim)
            if row is not None and row.terminal:
                self._restarts.pop(job.job_id, None)
            with contextlib.suppress(StoreUnavailable):
                self._schedule()
        self._settled(job)

    def _stopped_cancel(self, job: _Running) -> training_pb2.JobEvent | None:
        """CANCELLED as the checkpoint of ``job`` (whose worker was stopped) leaves it: the parameters so far;
        ``None`` when the job never trained (or its checkpoint cannot be read)."""
        try:
            return stopped_event(self._checkpoint(job.job_id), job.digest, training_pb2.JOB_STATE_CANCELLED,
                                 CANCELLED_STOPPED if job.resumed else CANCELLED_WAITING, epochs=job.epochs,
                                 total_steps=job.total_steps)
        except Exception:  # a checkpoint of an unexpected shape: the job ends CANCELLED all the same
            log.exception("job %s: could not read its checkpoint for the CANCELLED event", job.job_id)
            return None

    def _record_running(self, job: _Running, event: training_pb2.JobEvent, checkpoint: bytes | None) -> bool:
        """Store a running job's event under its lease; while the store is unavailable, try again until the
        lease's deadline. ``False`` (the worker killed) once the lease is lost."""
        while True:
            if job.lost:
                return False
            try:
                with self._lock:
                    self._record(job.job_id, event, lease=job.lease, checkpoint=checkpoint)
                return True
            except LeaseLost as e:
                self._lose(job, str(e))
                return False
            except StoreUnavailable as e:
                if time.monotonic() > job.lease_deadline:
                    self._lose(job, f"the store was unavailable past the lease ({e})")
                    return False
                time.sleep(0.2)

    def _forget_rendezvous(self, job_id: str, nodes: int) -> None:
        """Reset a multi-node job's meeting point on this server's rendezvous store (a no-op for other jobs,
        and without ``--rdzv-endpoint``): see :func:`~._distributed.forget_rendezvous`."""
        if self._rdzv_store is None or nodes < 2:
            return
        try:
            forget_rendezvous(self._rdzv_store, job_id, nodes)
        except Exception:  # the store runs in this process; a failure only keeps a stale count
            log.exception("job %s: could not reset its rendezvous keys", job_id)

    def _forget(self, job: _Running) -> bool:
        """Take ``job`` out of the running jobs (caller holds the lock), unless a newer claim of the same job
        replaced it there; whether it was the current one."""
        if self._running.get(job.job_id) is not job:
            return False
        del self._running[job.job_id]
        self._steps_seen.pop(job.job_id, None)
        return True

    @staticmethod
    def _send_lease(job: _Running) -> None:
        """Tell the worker until when (``time.monotonic()``) the lease holds: it takes no step past that."""
        if job.control is not None and job.lease_deadline != float("inf"):
            with contextlib.suppress(OSError):
                job.control.send_bytes(b"lease %r" % job.lease_deadline)

    def _lose(self, job: _Running, why: str) -> None:
        """The lease on ``job`` is gone (or may be): stop its worker now; nothing more is written about it."""
        if job.lost:
            return
        job.lost = True
        log.warning("job %s: lease lost (%s): stopping its worker", job.job_id, why)
        if job.process is not None:
            with contextlib.suppress(Exception):
                job.process.kill()

    def _tick_loop(self) -> None:
        """Every tick: renew this replica's leases (acting on cancel requests and lost leases), then claim
        waiting jobs for free slots; track whether the store answers."""
        swept = 0.0
        reaps = os.getpid() == 1  # a container without an init: nothing else reaps what is handed to PID 1
        while not self._ticker_stop.wait(self._tick_s):
            self._tick()
            if reaps:
                reap_orphans()
            if self.config.retention_s > 0 and time.monotonic() - swept > RETENTION_SWEEP_S:
                swept = time.monotonic()
                try:  # nothing may end this thread: without it, no lease is renewed and running jobs stall
                    if n := self.store.delete_ended_before(time.time() - self.config.retention_s):
                        log.info("deleted %d jobs that ended over %.0f s ago (--job-retention)", n,
                                 self.config.retention_s)
                        self._count_states()
                except StoreUnavailable:
                    pass  # the tick says so (store health); the next sweep tries again
                except Exception:
                    log.exception("deleting old jobs (--job-retention) failed; trying again in %.0f s",
                                  RETENTION_SWEEP_S)

    def _tick(self) -> None:
        with self._lock:
            jobs = [job for job in self._running.values() if job.lease is not None and not job.lost]
        started = time.monotonic()
        try:
            if not jobs:  # health is what the store answered: with nothing to renew, ask it something
                self.store.ping()  # (SERVING went on through an outage of the database: the PostgreSQL audit)
            outcome = self.store.renew(self.owner, [job.lease for job in jobs if job.lease is not None],
                                       self.config.lease_s) if jobs else {}
            with self._lock:
                for job in jobs:
                    state = outcome.get(job.job_id, "lost")
                    if state == "lost":
                        self._lose(job, "another server claimed the job")
                        continue
                    if started > job.lease_deadline - self.config.lease_s / 2:
                        log.warning("job %s: lease renewed late (%.1f s of its %.1f s left); the server is "
                                    "overloaded or the store slow", job.job_id, job.lease_deadline - started,
                                    self.config.lease_s)
                    job.lease_deadline = started + self.config.lease_s
                    self._send_lease(job)
                    if state == "cancel" and not job.cancel_requested:
                        job.cancel_requested = True
                        if job.control is not None:
                            with contextlib.suppress(OSError):
                                job.control.send_bytes(b"cancel")
                if not self._closing:
                    self._schedule()
            self._store_health(True)
        except StoreUnavailable as e:
            self._store_health(False, str(e))
            now = time.monotonic()
            for job in jobs:
                if now > job.lease_deadline:  # it may have lapsed: another replica may hold it now
                    self._lose(job, "the lease could not be renewed in time")
        except Exception:
            log.exception("job lease tick failed")

    def _store_health(self, ok: bool, why: str = "") -> None:
        """Say whether the store answers (health follows, on the event loop). The lease thread and the event loop
        (a call the store failed) both say it: under one lock, so that the hooks run in the order of the changes."""
        with self._health_lock:
            if ok == self.store_ok:
                return
            self.store_ok = ok
            if ok:
                log.warning("job store reachable again: TrainingService serves")
            else:
                log.error("job store unavailable (%s): TrainingService answers UNAVAILABLE until it is back", why)
            loop, hook = self._loop, self.on_store_health
            if hook is not None and loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(hook, ok)

    def _settled(self, job: _Running) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(job.ended.set)

    def _record(self, job_id: str, event: training_pb2.JobEvent, *, lease: Lease | None = None,
                checkpoint: bytes | None = None) -> training_pb2.JobEvent:
        """Store an event (its parameters into results; under ``lease`` when the job runs here) and wake
        the job's watchers."""
        parameters = None
        if event.parameters:  # the caller's event stays whole (a refused write may be tried again)
            parameters = training_pb2.JobEvent()
            for name in event.parameters:
                parameters.parameters[name].CopyFrom(event.parameters[name])
            event = _without_parameters(event)
        if self._held:  # in order: nothing is written while earlier events wait
            return self._hold(job_id, event, parameters)
        try:
            stored = self.store.append_event(job_id, event, parameters, lease=lease, checkpoint=checkpoint)
        except Exception as e:
            if not is_disk_full(e):
                raise
            self._storage_full(e)
            return self._hold(job_id, event, parameters)
        self._count(job_id, stored)
        self._wake(job_id)
        return stored

    # -- a full data directory --------------------------------------------------------------------

    def _hold(self, job_id: str, event: training_pb2.JobEvent,
              parameters: training_pb2.JobEvent | None) -> training_pb2.JobEvent:
        """Keep an event that cannot be written (caller holds the lock), numbered as the store will
        number it: watchers and GetJob see it now, the store gets it when space returns."""
        row = self.store.get_job(job_id)
        base = row.last_seq if row is not None else 0
        if not event.HasField("time"):
            event.time.GetCurrentTime()
        event.job_id = job_id
        event.seq = base + 1 + sum(1 for j, _, _ in self._held if j == job_id)
        self._held.append((job_id, event, parameters))
        self._wake(job_id)
        return event

    def _storage_full(self, error: BaseException) -> None:
        """The data directory filled up (caller holds the lock): TrainingService turns NOT_SERVING, new
        jobs are refused, running ones stop (INTERRUPTED, re-queued), and a thread writes what is held
        once space returns."""
        if self._full:
            return
        self._full = True
        log.error("%s (%s): training jobs stop and resume once space is freed; TrainingService is NOT_SERVING",
                  DISK_FULL, error)
        for job in self._running.values():
            job.disk_full = job.interrupt_requested = True
            if job.control is not None:
                with contextlib.suppress(OSError):
                    job.control.send_bytes(b"interrupt")
        self._notify_storage(False)
        threading.Thread(target=self._retry_storage, daemon=True, name="lossd-storage-retry").start()

    def _retry_storage(self) -> None:
        """Every ``STORAGE_RETRY_S`` seconds, write the held events; once all are written (and a probe
        file fits), serve again: health SERVING, queued jobs start."""
        while not self._closing:
            time.sleep(STORAGE_RETRY_S)
            with self._lock:
                if self._closing:
                    return
                try:
                    while self._held:
                        job_id, event, parameters = self._held[0]
                        stored = self.store.append_event(job_id, event, parameters)
                        self._held.popleft()
                        self._count(job_id, stored)
                        self._wake(job_id)
                    self._probe_space()
                except Exception as e:
                    if not is_disk_full(e):
                        log.exception("writing held job events failed")
                    continue
                self._full = False
                log.info("the data directory has space again: held job events written, jobs resume")
                self._notify_storage(True)
                with contextlib.suppress(StoreUnavailable):  # else the store's own recovery schedules
                    self._schedule()
                return

    def _probe_space(self) -> None:
        """Raise ``OSError`` (ENOSPC) unless a 1 MiB file fits in the data directory."""
        probe = Path(self.config.data_dir) / ".space-probe"
        try:
            with open(probe, "wb") as f:
                f.write(bytes(1 << 20))
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _notify_storage(self, writable: bool) -> None:
        callback = self.on_storage
        if callback is not None:
            try:
                callback(writable)
            except Exception:
                log.exception("storage health callback failed")

    def _held_after(self, job_id: str, after_seq: int) -> list[training_pb2.JobEvent]:
        with self._lock:
            return [training_pb2.JobEvent.FromString(e.SerializeToString())
                    for j, e, _ in self._held if j == job_id and e.seq > after_seq]

    def _count(self, job_id: str, event: training_pb2.JobEvent) -> None:
        """Feed the job metrics (no-ops while metrics are off): jobs by state, steps done.

        Steps are counted while the job runs here: from its start (:meth:`_schedule`), or for a job
        resumed after a restart from its first event in this process; the count is dropped when the
        job leaves this server's running jobs, however it ends (:meth:`_forget`).
        """
        if event.step and job_id in self._running:
            previous = self._steps_seen.get(job_id)
            if previous is not None:
                _metrics.add_job_steps(event.step - previous)
            self._steps_seen[job_id] = event.step
        if event.kind == STATE:
            self._count_states()

    def _count_states(self) -> None:
        """Set ``lossd_jobs`` from the store: after recovery at start, a state change (a waiting job's cancel
        too, which the store writes), a deletion (DeleteJob, ``--job-retention``). A store that does not answer
        leaves it as it was: what changed is stored, and a lost count must not retry it."""
        with contextlib.suppress(StoreUnavailable):
            _metrics.set_jobs_by_state(self.store.count_by_state())

    def _wake(self, job_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._set_waiter, job_id)

    def _set_waiter(self, job_id: str) -> None:
        for event in self._waiters.pop(job_id, ()):
            event.set()

    @contextlib.contextmanager
    def _waiting(self, job_id: str) -> Iterator[asyncio.Event]:
        """A new event that the job's next event sets (:meth:`_wake`), dropped when the block ends however
        it ends, so that nothing is kept for a job nobody waits on."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiters.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[job_id]

    # -- queries --------------------------------------------------------------------------------

    async def _io(self, fn: Any, *args: Any, executor: Executor | None = None,
                  closed: str = "the server is shutting down; retry") -> Any:
        """``fn(*args)`` on a thread (of ``executor``; the loop's default one); a store that does not answer is
        UNAVAILABLE (the SDK retries it), and so is a call that meets the store closed by the shutdown
        (``closed``: the message), never a closed database's error (UNKNOWN)."""
        assert self._loop is not None
        try:
            return await self._loop.run_in_executor(executor, self._counted, fn, *args)
        except StoreUnavailable as e:
            self._store_health(False, str(e))  # at once: the next tick that reaches the store says it is back
            raise FieldError("", f"{e}; retry shortly", "UNAVAILABLE") from None
        except FieldError:
            raise
        except Exception as e:  # sqlite3.ProgrammingError ("Cannot operate on a closed database"), a closed pool
            if self._store_closed:
                raise ShuttingDown("", closed, "UNAVAILABLE") from None
            if is_disk_full(e):  # a DeleteJob, whose deletion SQLite must write to its log first
                raise FieldError("", f"{DISK_FULL}: the job store cannot record this until space is freed in its "
                                 "data directory (--data-dir)", "RESOURCE_EXHAUSTED") from None
            if is_damaged(e):  # damage that the start did not read (SQLite checks the pages it reads)
                log.error("the job store is damaged: %s: %s", type(e).__name__, e)
                raise FieldError("", "the job store is damaged where this call read it (see the server log); its "
                                 "other jobs are served", "DATA_LOSS") from None
            raise

    def _counted(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, counted among the calls :meth:`_close_store` waits for; refused (:class:`ShuttingDown`)
        once the store is closing."""
        with self._io_idle:
            if self._store_closed:
                raise _StoreClosed
            self._io_calls += 1
        try:
            return fn(*args)
        finally:
            with self._io_idle:
                self._io_calls -= 1
                if not self._io_calls:
                    self._io_idle.notify_all()

    async def job(self, job_id: str, with_spec: bool = False) -> JobRow:
        """The job's row; ``FieldError`` INVALID_ARGUMENT / NOT_FOUND for a bad or unknown id."""
        _check_id(job_id)
        row: JobRow | None = await self._io(self.store.get_job, job_id, with_spec)
        if row is None:
            raise await self._not_found(job_id)
        return self._with_held(row) if self._held else row

    async def job_with_parameters(self, job_id: str, encoding: int,
                                  with_spec: bool = True) -> tuple[JobRow, dict[str, lossd_pb2.Tensor]]:
        """The job's row and, once it ended, its trained parameters encoded as asked (default: as its spec
        says), read together: a job deleted meanwhile is NOT_FOUND, never its row without its parameters."""
        _check_id(job_id)
        found = await self._io(self.store.job_and_result, job_id, with_spec)
        if found is None:
            raise await self._not_found(job_id)
        row, result = found
        parameters = {} if result is None else _encoded(result.parameters, reply_encoding(encoding, row.encoding))
        return (self._with_held(row) if self._held else row), parameters

    async def _not_found(self, job_id: str) -> FieldError:
        close = await self._io(self._close_ids, job_id)
        hint = f"; did you mean {', '.join(close)}?" if close else " (ListJobs lists the jobs)"
        return FieldError("job_id", f"no job {job_id!r}{hint}", "NOT_FOUND")

    def _with_held(self, row: JobRow) -> JobRow:
        """``row`` as its held events (a full data directory) leave it: state, message, last seq."""
        held = self._held_after(row.job_id, row.last_seq)
        for event in held:
            changes: dict[str, Any] = {"last_seq": event.seq}
            if event.kind == STATE:
                changes.update(state=event.state, message=event.message)
            row = dataclasses.replace(row, **changes)
        return row

    def _close_ids(self, job_id: str) -> list[str]:
        """Up to three of the recent job ids like ``job_id`` (off the event loop): those that share its
        first or its last four characters (an id with a character or two mistyped or cut off keeps one
        of them), ranked by difflib. difflib over all 1,000 recent ids took 8 ms a call."""
        head, tail = job_id[:4], job_id[-4:]
        near = [i for i in self.store.job_ids() if i.startswith(head) or i.endswith(tail)]
        return difflib.get_close_matches(job_id, near, n=3, cutoff=0.5)

    async def list_jobs(self, states: Sequence[int], limit: int,
                        after: tuple[float, str] | None = None) -> list[JobRow]:
        """Jobs, newest first; with ``after`` (a job's ``(created, job_id)``), those listed after it."""
        rows: list[JobRow] = await self._io(self.store.list_jobs, states, limit, after)
        return rows

    async def watch(
        self, job_id: str, after_seq: int, encoding: int = 0
    ) -> AsyncGenerator[training_pb2.JobEvent, None]:
        """Stored events after ``after_seq``, then live ones, until the terminal event (or the server stops)."""
        row = await self.job(job_id)
        if after_seq < 0:
            raise FieldError("after_seq", f"is {after_seq}; must be >= 0")
        if after_seq > row.last_seq:  # no event would ever come: the stream ended OK with none, like a success
            raise FieldError("after_seq", f"is {after_seq}; job {job_id}'s events end at {row.last_seq} (re-attach "
                             "with the seq of the last event received, 0 for all of them)")
        wanted = reply_encoding(encoding, row.encoding)
        self._watchers += 1
        self._no_watchers.clear()
        try:
            # Closed here, not by the garbage collector's hook a loop turn or two later: its wake-up event
            # is dropped before this stream counts as ended.
            async with contextlib.aclosing(self._watch(job_id, after_seq, wanted)) as events:
                async for event in events:
                    yield event
        except ShuttingDown:  # the store closed under a watcher that did not keep up: the stream ends as
            pass  # the shutdown ends it (UNAVAILABLE, naming the WatchJob call that re-attaches)
        finally:
            self._watchers -= 1
            if not self._watchers:
                self._no_watchers.set()

    async def _watch(self, job_id: str, after_seq: int, wanted: str) -> AsyncGenerator[training_pb2.JobEvent, None]:
        last = after_seq
        while True:
            with self._waiting(job_id) as waiter:  # before reading: an event stored meanwhile sets it
                events: list[training_pb2.JobEvent] = await self._io(self.store.events_after, job_id, last)
                if not events and self._held:  # the data directory is full: events held in memory
                    events = self._held_after(job_id, last)
                for event in events:
                    last = event.seq
                    terminal = event.kind == STATE and event.state in TERMINAL_STATES
                    if terminal and event.state != training_pb2.JOB_STATE_FAILED:
                        # the parameters with the row: a job deleted since its events were read has neither
                        found = await self._io(self.store.job_and_result, job_id)
                        if found is None:
                            raise _deleted(job_id)
                        if (result := found[1]) is not None:
                            for name, t in _encoded(result.parameters, wanted).items():
                                event.parameters[name].CopyFrom(t)
                    yield event
                    if terminal:
                        return
                if events:
                    continue
                if self._drained:
                    return
                row = await self._io(self.store.get_job, job_id)
                if row is None:  # deleted under the watcher (its events too): what it sent is not the history
                    raise _deleted(job_id)
                if row.terminal and last >= row.last_seq:
                    return
                if self.store.poll_s is None:
                    await waiter.wait()
                else:  # other replicas write too: a NOTIFY wakes it, else it reads again after poll_s
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(waiter.wait(), self.store.poll_s)

    async def cancel(self, job_id: str) -> JobRow:
        """Cancel a job that has not ended; returns its row once it has. A job already CANCELLED (a retry, or
        a call beside the one that cancelled it) is returned as it is: cancelling is idempotent."""
        row = await self.job(job_id)
        if row.state == training_pb2.JOB_STATE_CANCELLED:
            return row
        if row.terminal:
            raise FieldError("job_id", f"job {job_id} already ended {training_pb2.JobState.Name(row.state)[10:]}; "
                            "only queued, running or interrupted jobs can be cancelled", "FAILED_PRECONDITION")
        # Another replica runs it ("requested"): it reads the request at its next lease tick. One that died or is
        # frozen never does: once its lease lapses the store cancels the job itself, so the request is made again
        # every poll (it answered OK with the job still RUNNING: the PostgreSQL audit, 2026-12-06); not at every
        # wake-up, which the request's own NOTIFY would cause.
        deadline = time.monotonic() + STOP_GRACE_S + self.config.lease_s
        poll = self.store.poll_s or 0.5
        while True:
            job, outcome = await self._io(self._cancel, job_id)
            if job is not None and not await _ended(job, STOP_GRACE_S) and job.process is not None:
                job.process.kill()
                await _ended(job, STOP_GRACE_S)
            if outcome != "requested" or (left := deadline - time.monotonic()) <= 0:
                break
            again = time.monotonic() + min(left, poll)
            ended = False
            while not ended and (wait := again - time.monotonic()) > 0:
                with self._waiting(job_id) as waiter, contextlib.suppress(asyncio.TimeoutError):  # woken by NOTIFY
                    await asyncio.wait_for(waiter.wait(), wait)
                ended = (await self.job(job_id)).terminal
            if ended:
                break
        row = await self.job(job_id)
        if not row.terminal:
            state = training_pb2.JobState.Name(row.state)[10:]
            raise FieldError("job_id", f"job {job_id} is still {state}: its cancel is recorded, but the server "
                             "running it has not stopped it yet; it ends CANCELLED when that server (or the one that "
                             "takes the job over once its lease lapses) reads the request: watch the job, or call "
                             "CancelJob again", "UNAVAILABLE")
        return row

    def _cancel(self, job_id: str) -> tuple[_Running | None, str]:
        """Cancel here when this replica runs the job, else through the store: ``(job, outcome)``.

        A job that waits (queued, or interrupted) and has trained ends as its checkpoint leaves it, with the
        parameters so far, where this server is the store's only writer (SQLite: nobody else claims or
        writes, and this server claims under its lock); with a shared store the store cancels it, saying
        after which step, without parameters (``request_cancel`` stores the event: docs/scaling.md)."""
        with self._lock:
            if (job := self._running.get(job_id)) is not None:
                return self._cancel_running(job), "local"
        stopped = None
        if not self.store.shares_checkpoints:
            row = self.store.get_job(job_id, with_spec=True)
            if row is not None and not row.terminal:  # read before the lock: a checkpoint may be large
                try:
                    stopped = stopped_event(self._checkpoint(job_id), spec_digest(row.spec),
                                            training_pb2.JOB_STATE_CANCELLED, CANCELLED_WAITING, epochs=row.epochs,
                                            total_steps=row.total_steps)
                except Exception:
                    log.exception("job %s: could not read its checkpoint for the CANCELLED event", job_id)
        with self._lock:
            if (job := self._running.get(job_id)) is not None:  # claimed meanwhile
                return self._cancel_running(job), "local"
            if stopped is not None:
                row = self.store.get_job(job_id)
                if row is None or row.terminal:
                    return None, "gone" if row is None else "ended"
                self._record(job_id, stopped)
                if not self._held:  # else the next start removes it, once the event is stored
                    remove_checkpoint(self._checkpoint(job_id))
                return None, "cancelled"
            row = self.store.get_job(job_id)
            message = "cancelled before it ran"
            if row is not None and row.step:
                message = f"cancelled before it resumed, after step {row.step}: its checkpoint could not be used"
                if self.store.shares_checkpoints:
                    message = f"cancelled before it resumed, after step {row.step}"
            outcome = self.store.request_cancel(job_id, message)
            if outcome == "cancelled":
                remove_checkpoint(self._checkpoint(job_id))
                self._wake(job_id)
                self._count_states()  # the store wrote its CANCELLED event (not through _record)
            return None, outcome

    @staticmethod
    def _cancel_running(job: _Running) -> _Running:
        """Ask the worker of ``job`` (running here) to stop before its next step (caller holds the lock)."""
        job.cancel_requested = True
        log.info("job %s: cancel requested", job.job_id)
        if job.control is not None:
            with contextlib.suppress(OSError):
                job.control.send_bytes(b"cancel")
        return job

    async def delete(self, job_id: str) -> JobRow:
        """Delete an ended job with its events and parameters; returns it as it was.

        The store deletes only an ended job, atomically; a job read as running that has ended by the time
        its refusal is worded (it ended between the two reads) is deleted then. A refusal names the state
        that refused it; a job deleted meanwhile (another DeleteJob, ``--job-retention``) is NOT_FOUND."""
        row = await self.job(job_id)
        deleted: JobRow | None = await self._io(self.store.delete_job, job_id) if row.terminal else None
        if deleted is None:  # it had not ended, or it ended since (deleted now), or another call deleted it
            stored: JobRow | None = await self._io(self.store.get_job, job_id)  # as the store's delete sees it
            if stored is not None and not stored.terminal:
                held = self._with_held(stored) if self._held else stored
                if held.terminal:  # its end is held in memory: the data directory is full
                    raise FieldError("job_id", f"job {job_id} ended {training_pb2.JobState.Name(held.state)[10:]} "
                                     f"but its end is not stored yet ({DISK_FULL}): delete it once space is freed",
                                     "FAILED_PRECONDITION")
                raise FieldError("job_id", f"job {job_id} is {training_pb2.JobState.Name(stored.state)[10:]}: only "
                                 "ended jobs (SUCCEEDED, FAILED, CANCELLED) can be deleted; cancel it first",
                                 "FAILED_PRECONDITION")
            if stored is not None:  # it ended since the first read
                deleted = await self._io(self.store.delete_job, job_id)
            if deleted is None:  # deleted by another call meanwhile
                raise await self._not_found(job_id)
        await self._io(self._count_states)
        return deleted

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has begun."""
        return self._closing

    @property
    def watchers(self) -> int:
        """Event streams (TrainJob, WatchJob) being served now."""
        return self._watchers

    @property
    def running(self) -> list[str]:
        """Ids of the jobs running now."""
        with self._lock:
            return list(self._running)


class ShuttingDown(FieldError):
    """UNAVAILABLE: the call met the job store closed (or closing) by the server's shutdown."""


class _StoreClosed(Exception):
    """A store call that came once the shutdown had begun to close the store (:meth:`JobManager._counted`)."""


def _check_id(job_id: str) -> None:
    """``FieldError`` (INVALID_ARGUMENT) unless ``job_id`` looks like a job id; checked before any lookup."""
    if not JOB_ID.fullmatch(job_id):
        shown = repr(job_id) if len(job_id) <= 64 else f"{job_id[:64]!r}... ({len(job_id)} characters)"
        raise FieldError("job_id", f"{shown} is not a job id (12 lowercase hex digits, as in the job's events)")


def _deleted(job_id: str) -> FieldError:
    """NOT_FOUND for a job that went (with its events and parameters) while a stream sent its events."""
    return FieldError("job_id", f"job {job_id} was deleted (DeleteJob or --job-retention) while it was being "
                      "watched", "NOT_FOUND")


def _full_error() -> FieldError:
    return FieldError("", f"{DISK_FULL}: the server cannot store new jobs until space is freed in its data directory "
                     "(--data-dir); running jobs resume then", "RESOURCE_EXHAUSTED")


#: The exit status a forkserver's process gets when the forkserver died before it could report it
#: (``multiprocessing.popen_forkserver``): its workers died with it (``PR_SET_PDEATHSIG``).
LOST_EXIT_STATUS = 255


def _forkserver_pid(ctx: Any) -> int | None:
    """The pid of the forkserver that forks ``ctx``'s processes now (``None``: ``spawn``, or not known)."""
    if ctx.get_start_method() != "forkserver":
        return None
    forkserver = sys.modules.get("multiprocessing.forkserver")  # loaded by the context's first start
    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    return pid if isinstance(pid, int) else None


def _forkserver_gone(pid: int, ctx: Any) -> bool:
    """Whether the forkserver ``pid`` has died: another one runs now (multiprocessing started it again for a
    later process), or the process is gone or a zombie (killed, not yet reaped)."""
    if _forkserver_pid(ctx) != pid:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return not os.path.isdir("/proc/self")  # no /proc: nothing known (not Linux)
    return state in ("Z", "X")


def _killed_from_outside(code: int | None, forkserver: int | None, ctx: Any) -> str:
    """What killed a worker that ended without a final event, when it is something outside the job, so that the
    job resumes from its checkpoint (``--max-job-restarts``): SIGKILL (the OOM killer), or the death of the
    forkserver that forked it (killed: its workers die with it, and their exit status is lost, 255). ``""`` for
    anything else (the job's own crash: it fails)."""
    if code == -signal.SIGKILL:
        return "the worker process was killed (signal 9: out of memory?)"
    if code == LOST_EXIT_STATUS and forkserver is not None:
        if _forkserver_gone(forkserver, ctx):
            return (f"the worker's forkserver (pid {forkserver}) was killed, and the worker with it (its exit "
                    "status was lost)")
        return "the worker process ended without an exit status (its forkserver may have been killed)"
    return ""


def reap_orphans() -> int:
    """Reap this process's ended children that nothing else waits for: processes handed to it when their
    parent died (a killed worker's data-parallel ranks, a killed forkserver's workers), which lead or share
    a job's process group. Its own children (the forkserver, multiprocessing's resource tracker) are in its
    own group, and multiprocessing waits for them. Where ``lossd serve`` is PID 1 (a container without an
    init) every orphan is handed to it, and each stayed a zombie for the container's life. Returns how many
    were reaped.

    >>> reap_orphans()
    0
    """
    me, group, reaped = os.getpid(), os.getpgrp(), 0
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc (not Linux)
        return 0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state, ppid, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except OSError:  # gone meanwhile
            continue
        if state == "Z" and int(ppid) == me and int(pgrp) != group:
            with contextlib.suppress(ChildProcessError):
                reaped += bool(os.waitpid(int(name), os.WNOHANG)[0])
    return reaped


def _exit_reason(code: int | None, restarts: int, max_restarts: int, killed: str = "") -> str:
    """Why a job failed when its worker ended without a final event (``killed``: from outside, as
    :func:`_killed_from_outside` says, once the restarts are spent)."""
    if killed and code != -signal.SIGKILL:
        return f"{killed} after {restarts} restart(s) from its checkpoint; --max-job-restarts is {max_restarts}"
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        text = f"the worker process was killed by signal {-code} ({name})"
        if code == -signal.SIGKILL:
            text += (f" (out of memory?) after {restarts} restart(s) from its checkpoint; --max-job-restarts is "
                     f"{max_restarts}")
        return text
    return f"the worker process exited unexpectedly (exit code {code})"


def _rendezvous_store(endpoint: str) -> Any:
    """Host the c10d ``TCPStore`` that the machines of multi-node jobs meet on (keys by job id)."""
    import torch.distributed as dist

    host, _, port = endpoint.rpartition(":")
    try:
        store = dist.TCPStore(host, int(port), None, True, wait_for_workers=False, multi_tenant=True)
    except (RuntimeError, OSError) as e:  # DistNetworkError: the port is taken, the host not this machine's
        raise SettingError(f"--rdzv-endpoint {endpoint} (env LOSSD_RDZV_ENDPOINT): cannot listen there "
                           f"({first_line(e)}); choose another port, or stop the process that holds it") from None
    log.warning("rendezvous for multi-node jobs on %s (c10d TCPStore): port %s listens on every interface, "
                "without authentication or encryption; let only the jobs' machines reach it (docs/security.md)",
                endpoint, port)
    return store


async def _ended(job: _Running, timeout: float) -> bool:
    """Wait (without holding a thread) until ``job`` has settled; ``False`` after ``timeout`` seconds."""
    try:
        await asyncio.wait_for(job.ended.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


def _without_parameters(event: training_pb2.JobEvent) -> training_pb2.JobEvent:
    copy = training_pb2.JobEvent()
    copy.CopyFrom(event)
    copy.ClearField("parameters")
    return copy


def _checkpoint_bound(max_parameters: int) -> int:
    """Largest checkpoint a shared store accepts: parameters, up to three optimizer tensors per parameter
    (Adam's moments and more), float64 at worst, plus 16 MiB for RNG states, history and structure."""
    return max_parameters * 8 * 4 + (16 << 20)


def _encoded(parameters: Any, encoding: str) -> dict[str, lossd_pb2.Tensor]:
    """Stored (raw) parameter tensors in ``encoding``."""
    if encoding == "raw":
        return {name: parameters[name] for name in parameters}
    out = {}
    for name in parameters:
        tensor, _ = decode_tensor(parameters[name], f"parameters.{name}", max_elements=2**62)
        out[name] = encode_tensor(tensor, "values")
    return out

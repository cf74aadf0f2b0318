"""The worker process that runs one job, outside the server's serving path.

The server starts it through :mod:`multiprocessing` (the ``forkserver``
context where the platform has it: this module is preloaded there, by :mod:`._preload`, so a job
starts in tens of milliseconds instead of paying torch's imports; ``spawn``
elsewhere) with two one-way pipes:

- events, worker -> server: each message is one serialized ``JobEvent``
  (protobuf bytes, never pickles); the server numbers and stores them. With
  a shared job store (``share_checkpoints``), an epoch's and an interrupt's
  event is preceded by the checkpoint written just before it
  (``_checkpoint.checkpoint_message``), which the server stores with it.
- control, server -> worker: ``b"cancel"`` (stop before the next step, end
  CANCELLED), ``b"interrupt"`` (checkpoint at the next step boundary, end
  INTERRUPTED; the server is shutting down) or ``b"lease <t>"`` (the server's
  lease on the job holds until ``time.monotonic()`` reaches ``t``; a
  one-process job takes no step past it until the next such message).

The worker logs as the server does (``--log-level``, ``--log-format``: the
server passes them): its records, Python's and torch's warnings
(``logging.captureWarnings``) and the traceback of an internal error are lines
in the server's format on the stderr they share, so that with
``--log-format json`` every line is still one JSON object.

The worker dies with the server: end-of-file on the control pipe (the server
is gone, even after ``kill -9``) ends the process at once, and on Linux the
kernel also kills it when its parent dies (``PR_SET_PDEATHSIG``). Nothing is
lost by that: the job resumes from its last checkpoint at the next start.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from ..._wire import FieldError
from ...v1 import training_pb2
from .._limits import TrainingLimits
from .._logging import configure_logging
from ..losses import REGISTRY
from ..losses._plugins import load_plugin_setting
from ._checkpoint import DISK_FULL, checkpoint_message, disk_full
from ._distributed import _die_with_parent, _failed, run_data_parallel
from ._engine import Control, follows_checkpoint, run_job, spec_digest
from ._spec import plan_job

__all__ = ["worker_main"]

log = logging.getLogger("lossd.server.training")

#: Threads per job: one keeps CPU kernels deterministic and leaves cores to other jobs and the server.
JOB_THREADS = 1


def _listen(control_conn: Connection, control: Control, done: threading.Event, planning: threading.Event) -> None:
    """Turn control messages into flags; exit the process when the server is gone, or when asked to stop
    while it is still planning (nothing to checkpoint yet; planning a large job takes seconds and does not
    look at the flags, and a shutdown must hold its grace period)."""
    while True:
        try:
            message = control_conn.recv_bytes()
        except (EOFError, OSError):
            if not done.is_set():
                os._exit(3)  # the server died: stop now, the checkpoint on disk is the job's state
            return
        if message in (b"cancel", b"interrupt") and planning.is_set():
            os._exit(4)  # the job's state is its checkpoint on disk, if any; the server records the ending
        if message == b"cancel":
            control.cancel.set()
        elif message == b"interrupt":
            control.interrupt.set()
        elif message.startswith(b"lease "):  # b"lease <time.monotonic() until which the server holds the job>"
            control.lease_until = float(message[6:])


def worker_main(
    job_id: str,
    spec_bytes: bytes,
    checkpoint: str,
    plugins: str,
    control_conn: Connection,
    events_conn: Connection,
    rdzv_endpoint: str = "",
    share_checkpoints: bool = False,
    scratch: str | None = None,
    log_settings: tuple[str, int] | None = None,
    reached_step: int = 0,
) -> None:
    """Run job ``job_id`` (its spec as serialized ``TrainJobRequest`` bytes) and report through ``events_conn``.
    Temporary files (a data-parallel job's rendezvous file and rank logs) go in ``scratch``, a folder the
    server deletes when this process ends, however it ends (the system's temporary folder when ``None``).
    ``log_settings``: the server's log format and level (``("json", logging.INFO)``), which this process's
    logging and warnings follow (``None``: left as they are). ``reached_step``: the step the job had reached before
    this run (the store's), which a run without a checkpoint reports starting over from (``run_job``)."""
    if log_settings is not None:
        log_format, level = log_settings
        configure_logging("NOTSET", log_format).setLevel(level)  # the level as a number: any the server has
        logging.captureWarnings(True)  # torch's warnings (kl_div's reduction='mean') as log records
    _die_with_parent()
    # A terminal's Ctrl-C (SIGINT to the foreground process group) and a stop sent to the server's group must
    # reach the server only: it relays its shutdown over the control pipe, and the job then checkpoints at its
    # step and ends INTERRUPTED. Reached, the worker died first (a KeyboardInterrupt traceback, raw on stderr,
    # and the step's checkpoint lost), and a data-parallel job, whose launcher (torch's start_processes)
    # handles both signals by raising, failed. So the worker leads a process group of its own, which its
    # ranks join, and ignores both (a signal sent to it alone: the ranks take SIGTERM back).
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(JOB_THREADS)
    control, done, planning = Control(), threading.Event(), threading.Event()
    planning.set()
    threading.Thread(target=_listen, args=(control_conn, control, done, planning), daemon=True,
                     name="lossd-control").start()

    def send(data: bytes) -> None:
        try:
            events_conn.send_bytes(data)
        except (BrokenPipeError, ConnectionError, OSError):
            os._exit(3)  # nobody is listening: the server is gone

    def emit(event: training_pb2.JobEvent) -> None:
        event.job_id = job_id
        if share_checkpoints and follows_checkpoint(event):
            send(checkpoint_message(Path(checkpoint)))
        send(event.SerializeToString())

    try:
        load_plugin_setting(plugins, REGISTRY)
        request = training_pb2.TrainJobRequest.FromString(spec_bytes)
        plan = plan_job(request, REGISTRY, TrainingLimits.accepted(max_world_size=max(request.world_size, 1)))
        planning.clear()  # from here the engine acts on the flags at the next step
        if control.cancel.is_set() or control.interrupt.is_set():
            os._exit(4)  # a message that came between the check in _listen and the line above
        if plan.world_size > 1:
            # This process starts the ranks: the server starts it as a daemon (so that it never outlives
            # the server's exit), and a daemonic process may not have children. The ranks die with it.
            multiprocessing.current_process().daemon = False
            run_data_parallel(plan, Path(checkpoint), send, control, spec_digest(spec_bytes), job_id, rdzv_endpoint,
                              share_checkpoints, scratch, reached_step)
        else:
            run_job(plan, Path(checkpoint), emit, control, spec_digest(spec_bytes), reached_step=reached_step)
    except FieldError as e:
        send(_failed(job_id, str(e)))
    except Exception as e:
        if not disk_full(e):  # (the full disk may be the cause of another error: torch.save's RuntimeError)
            log.exception("job %s: internal error in the training worker", job_id)
            send(_failed(job_id, f"internal error in the training worker ({type(e).__name__}); see the server log"))
        else:  # the server holds the job until space returns, then it resumes from its last checkpoint
            send(training_pb2.JobEvent(kind=training_pb2.JOB_EVENT_KIND_STATE, state=training_pb2.JOB_STATE_INTERRUPTED,
                                       job_id=job_id, message=f"{DISK_FULL}: the checkpoint could not be written; "
                                       "the job resumes from its last checkpoint once space is freed"
                                       ).SerializeToString())
    finally:
        done.set()
        events_conn.close()

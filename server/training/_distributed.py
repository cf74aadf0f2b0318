"""Data-parallel jobs: the job's worker process starts ``world_size`` ranks and reports for them.

A job with ``world_size`` N > 1 runs like this (one host)::

    server ──pipes──▶ worker (the local agent: torch.distributed.elastic start_processes, fork)
                         ├── rank 0 ─ DDP ─┐  events ──▶ worker ──▶ server
                         └── rank 1 ─ DDP ─┘  (gloo process group on 127.0.0.1, c10d FileStore)

- The ranks rendezvous on a c10d ``FileStore`` in a private temporary folder
  the worker (:func:`run_data_parallel`) makes, and their gloo group binds
  127.0.0.1 only: a one-machine job opens no port beyond loopback (a
  ``TCPStore`` would listen on every interface, whatever host it is given;
  measured). The worker forks the ranks with ``torch.distributed.elastic.multiprocessing.start_processes``
  (``fork``: the worker already imported torch, so a rank starts in
  milliseconds and inherits the validated plan instead of rebuilding the data).
- Rank 0 sends its events over a pipe; the worker forwards them to the server.
  Other ranks emit nothing.
- Cancel and interrupt reach the ranks as two shared flags the worker sets;
  the ranks sum them in their per-step ``all_reduce``, so all stop at the same step.
- Every rank dies with the worker: ``PR_SET_PDEATHSIG`` (SIGKILL) and end of
  file on its own lifeline socket to the worker, which itself dies with the
  server. So ``kill -9`` of the server leaves no rank behind.
- A rank that fails reports its error on that socket (with a timestamp) before
  it exits; the worker stops the other ranks and ends the job FAILED with the
  earliest error: the cause, not the other ranks' "connection closed" that follows.
  The others are stopped with SIGTERM, which a rank leaves at its default action
  (end at once), so that one blocked in a gloo collective on the dead rank ends
  within milliseconds; a rank that ended by any other signal is the one named.

Several machines (``nodes`` M > 1): the server hosts a c10d ``TCPStore`` at its
``--rdzv-endpoint``; the job's worker runs ranks ``0 … N/M − 1`` and waits
until M − 1 machines have joined (:func:`join_job`, ``lossd join``: each takes
the next index from the counter ``lossd/<job>/joined`` once the run waits, and runs its N/M ranks);
all ranks form one process group under the prefix the worker put in ``lossd/<job>/group``. Before it takes
a place, a joining machine compares its lossd (version and source) and torch build (and the job's loss plugin)
with those the worker put in ``lossd/<job>/build`` (:func:`build_of`) and refuses to run a rank with any other
(ranks of two torch builds may compute different numbers), saying why in ``lossd/<job>/refused`` too. Store
keys are plain bytes (torch's c10d rendezvous backend pickles its state, so it is not used). See docs/scaling.md.

    >>> plan = plan_job(request_with_world_size_2, REGISTRY)               # doctest: +SKIP
    >>> run_data_parallel(plan, None, events.append, Control(), "", "0123456789ab")  # doctest: +SKIP
    >>> training_pb2.JobEvent.FromString(events[-1]).message                 # doctest: +SKIP
    'finished 3 epochs (18 steps)'
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import multiprocessing
import os
import pkgutil
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, start_processes

from ... import __version__
from ..._settings import first_line, parse_endpoint, printable
from ...v1 import training_pb2
from .._limits import TrainingLimits
from ..losses import REGISTRY
from ..losses._plugins import load_plugin_setting
from ._checkpoint import CHECKPOINT_MESSAGE, checkpoint_message
from ._engine import Control, RankFailure, World, follows_checkpoint, run_job
from ._spec import JobPlan, plan_job
from ._store import FINAL_STATES

__all__ = ["JOIN_TIMEOUT", "RANK_TIMEOUT", "Rendezvous", "build_of", "forget_rendezvous", "join_data_parallel",
           "join_job", "lossd_modules", "lossd_source", "nothing_to_join", "rendezvous_address", "run_data_parallel",
           "source_digest"]

log = logging.getLogger("lossd.server.training")

#: How long a collective waits for a rank that neither answers nor dies (a dead rank is noticed at once).
RANK_TIMEOUT = timedelta(seconds=300)
#: How long a multi-node job waits for its other machines (and a joining machine for its job to start).
JOIN_TIMEOUT = timedelta(seconds=600)
#: How long ``lossd join`` tries to reach the rendezvous (a wrong --rdzv-endpoint waited JOIN_TIMEOUT, silently).
JOIN_CONNECT_TIMEOUT = timedelta(seconds=30)
#: How often a waiting ``lossd join`` asks the server whether its job has ended (cancelled before it started).
JOB_CHECK_S = 2.0
#: Threads per rank (as for one-process jobs).
RANK_THREADS = 1


class _SharedFlag:
    """``threading.Event``'s ``is_set`` over one byte of shared memory, set by the worker."""

    def __init__(self, flags: Any, index: int) -> None:
        self._flags, self._index = flags, index

    def is_set(self) -> bool:
        return bool(self._flags[self._index])


class _SharedControl:
    def __init__(self, flags: Any) -> None:
        self.cancel, self.interrupt = _SharedFlag(flags, 0), _SharedFlag(flags, 1)

    def wait_for_lease(self) -> None:
        """Ranks do not wait on the lease: the worker that started them is stopped when it is lost."""


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere); exit now if it already has."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(3)


def _lifeline(conn: Connection) -> None:
    """End the rank when the worker is gone (end of file on its socket)."""
    try:
        while True:
            conn.recv_bytes()
    except (EOFError, OSError):
        os._exit(3)


@dataclass(frozen=True)
class Rendezvous:
    """Where this machine's ranks meet the others: a c10d store, a key prefix, and their global ranks."""

    host: str
    port: int
    prefix: str  # of the process group's keys in the store ("" for a store of its own)
    first_rank: int  # global rank of this machine's first rank
    local: int  # ranks on this machine
    #: One machine: the FileStore's file (then host and port are unused), and gloo on 127.0.0.1.
    store_file: str = ""

    def store(self) -> Any:
        """This rank's c10d store."""
        if self.store_file:
            return dist.FileStore(self.store_file, self.local)
        store: Any = dist.TCPStore(self.host, self.port, is_master=False, timeout=RANK_TIMEOUT)
        return dist.PrefixStore(self.prefix, store) if self.prefix else store

    def gloo_options(self) -> Any:
        """Process-group options: on one machine, gloo's sockets on 127.0.0.1 (by default gloo binds
        the address the host name resolves to); across machines, gloo's default (GLOO_SOCKET_IFNAME)."""
        if not self.store_file:
            return None
        # Private in torch's stubs, but the only way to choose gloo's device (its address).
        options = dist.ProcessGroupGloo._Options()  # type: ignore[attr-defined]
        options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
        return options


def _rank_main(rank: int, size: int, rdzv: Rendezvous, plan: JobPlan, checkpoint: str | None, digest: str,
               flags: Any, life: Connection, events: Connection | None, inherited: list[Connection],
               share_checkpoints: bool = False, reached_step: int = 0) -> None:
    """One rank (a forked child of the worker): join the process group, train, report errors on ``life``."""
    _die_with_parent()
    # SIGTERM ends a rank at once, even blocked in a gloo collective: fork copied the launcher's Python
    # handler, which only raises between bytecodes, so a rank waiting on a dead peer ignored it for 30 s
    # until torch's launcher sent SIGKILL, and the job then named that rank as the one that failed.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for conn in inherited:  # the worker's ends and the other ranks' ends, copied by fork
        with contextlib.suppress(OSError):
            conn.close()
    threading.Thread(target=_lifeline, args=(life,), daemon=True, name="lossd-rank-lifeline").start()
    torch.set_num_threads(RANK_THREADS)

    def emit(event: training_pb2.JobEvent) -> None:
        assert events is not None
        try:
            if share_checkpoints and checkpoint and follows_checkpoint(event):
                events.send_bytes(checkpoint_message(Path(checkpoint)))
            events.send_bytes(event.SerializeToString())
        except OSError:
            os._exit(3)  # the worker is gone

    try:
        dist.init_process_group("gloo", store=rdzv.store(), rank=rank, world_size=size, timeout=RANK_TIMEOUT,
                                pg_options=rdzv.gloo_options())
        try:
            run_job(plan, Path(checkpoint) if checkpoint else None, emit, _SharedControl(flags), digest,
                    World(rank, size), reached_step)
        finally:
            dist.destroy_process_group()
    except BaseException as e:
        text = str(e) if isinstance(e, RankFailure) else f"rank {rank}: {type(e).__name__}: {e}".strip()
        with contextlib.suppress(OSError):
            life.send_bytes(json.dumps({"t": time.time_ns(), "rank": rank, "error": text,
                                        "trace": traceback.format_exc()}).encode())
        raise


#: How often each side of a multi-node job asks the server's store about the other (``lossd join``: it checks
#: in, and asks whether the run it joined has ended; the server's worker: whether every joined machine still
#: checks in), how long a trouble must last before the ranks are stopped, and how long one question may wait.
RUN_CHECK_S = 1.0
RUN_ENDED_GRACE_S = 10.0
RUN_CHECK_TIMEOUT = timedelta(seconds=5)
#: A joined machine that has not checked in for this long is lost (frozen, cut off, powered off): its peers'
#: collectives would wait :data:`RANK_TIMEOUT` for it, so the server's worker stops the job's ranks instead.
MACHINE_SILENT_S = 10.0


def _keys(job_id: str) -> tuple[str, str]:
    """The store keys of a multi-node job's rendezvous: the joined-machines counter, the group's prefix."""
    return f"lossd/{job_id}/joined", f"lossd/{job_id}/group"


def _build_keys(job_id: str) -> tuple[str, str]:
    """The store keys of a multi-node job's build check: what the server's machine runs (:func:`build_of`, set by
    its worker before the group's prefix), and why the last machine that would not join refused."""
    return f"lossd/{job_id}/build", f"lossd/{job_id}/refused"


#: The longest refusal the server's worker repeats in its log and the job's events, its unprintable characters
#: escaped (anyone who reaches the port can set it: a newline forged a log line, an escape sequence reached the
#: terminal of the user following the job).
REFUSAL_CHARS = 1000
#: The longest value of the server's published build that a joining machine quotes (the store's, anyone's).
BUILD_VALUE_CHARS = 200


def build_of(plan: JobPlan) -> dict[str, str]:
    """What every machine of ``plan``'s job must run alike for its ranks to compute the same numbers: lossd's
    version and source (:func:`lossd_source`), torch's (its release and the commit it was built from), and, when the
    job's loss is a plugin's, where that loss comes from (the plugin's source and its distribution's version)."""
    spec = plan.loss.spec
    build = {"lossd": f"{__version__} (source {lossd_source()})",
             "torch": f"{torch.__version__} (git {getattr(torch.version, 'git_version', '?')})"}
    if spec.plugin:
        top = getattr(spec.fn, "__module__", "").partition(".")[0]
        dists = sorted(set(importlib.metadata.packages_distributions().get(top, [])))
        build["loss plugin"] = ", ".join([f"{spec.name} from {spec.source}",
                                          *(f"{d} {importlib.metadata.version(d)}" for d in dists)])
    return build


def lossd_modules() -> list[tuple[str, Path]]:
    """Every module of lossd (its ``lossd``, ``lossd.client`` and ``lossd.server`` packages, walked) by name, with
    its file: the same names and bytes whether lossd is a wheel or a checkout installed in place."""
    names = set()
    for top in ("lossd", "lossd.client", "lossd.server"):
        names.add(top)
        names.update(info.name for info in pkgutil.walk_packages(importlib.import_module(top).__path__, f"{top}."))
    found = ((name, importlib.util.find_spec(name)) for name in sorted(names))
    return [(name, Path(spec.origin)) for name, spec in found if spec is not None and spec.origin is not None]


def source_digest(modules: list[tuple[str, bytes]]) -> str:
    """The first 16 hex digits of the SHA-256 of ``modules`` (name, source) in order.

    >>> source_digest([("lossd.a", b"x = 1")]) != source_digest([("lossd.a", b"x = 2")])
    True
    """
    digest = hashlib.sha256()
    for name, source in modules:
        digest.update(f"{name} {len(source)}\n".encode())
        digest.update(source)
    return digest.hexdigest()[:16]


@functools.cache
def lossd_source() -> str:
    """:func:`source_digest` of lossd's modules (:func:`lossd_modules`): two machines whose lossd differs in any line
    differ here, where lossd's version (the same between releases) does not."""
    return source_digest([(name, path.read_bytes()) for name, path in lossd_modules()])


def _take_refusal(store: Any, key: str) -> str:
    """The line a machine that would not join left under ``key`` (``""``: none), taken out of the store: its
    unprintable characters escaped, at most :data:`REFUSAL_CHARS`, for the log and the job's events.

    >>> class Store(dict):
    ...     check = lambda self, keys: all(k in self for k in keys)
    ...     get, delete_key = dict.__getitem__, dict.pop
    >>> _take_refusal(Store(k=b"torch 2.12 here\\n2026-12-06 ERROR forged\\x1b[2J"), "k")
    'torch 2.12 here\\\\n2026-12-06 ERROR forged\\\\x1b[2J'
    """
    if not store.check([key]):
        return ""
    line = printable(store.get(key)[:4 * REFUSAL_CHARS].decode(errors="replace"))[:REFUSAL_CHARS]
    store.delete_key(key)
    return line


def _build_mismatch(published: bytes, ours: dict[str, str], job_id: str) -> str:
    """``""`` when the server's ``published`` build (:func:`build_of`, as JSON) is ``ours``, else why this
    machine cannot join ``job_id`` (naming both sides of every difference)."""
    try:
        theirs = json.loads(published)
        if not isinstance(theirs, dict):
            raise ValueError("not an object")
    except ValueError:
        theirs = {}
    def shown(value: object) -> str:  # the store's text, as anyone may have set it: escaped, clipped
        return "none" if value is None else printable(str(value))[:BUILD_VALUE_CHARS]

    extra = sorted(key for key in theirs if key not in ours)  # ours first: the store's may be many
    differ = [f"{shown(key)} {shown(ours.get(key))} here, {shown(theirs.get(key))} on the server"
              for key in [*sorted(ours), *extra[:1]] if ours.get(key) != theirs.get(key)]
    if extra[1:]:
        differ.append(f"{len(extra) - 1} more on the server")
    if not differ:
        return ""
    return (f"this machine cannot join job {job_id}: {'; '.join(differ)}. Every machine of a job must run the "
            "server's lossd and torch (and the job's loss plugin), or the ranks may compute different numbers: "
            "install those here and run lossd join again")


def _check_in_key(prefix: str, node: int) -> str:
    """The counter a joined machine (``node`` ≥ 1) of the run with group ``prefix`` adds to every
    :data:`RUN_CHECK_S`."""
    return f"{prefix}alive/{node}"


def forget_rendezvous(store: Any, job_id: str, nodes: int) -> None:
    """Drop the rendezvous keys of a job on ``nodes`` machines from the server's ``store`` once its worker has
    ended, so that the next start of the job (a resume on this server) counts its machines afresh: else the
    resumed worker found the last run's count, started its ranks without waiting, and ``lossd join`` was turned
    away. The build the worker published and a machine's refusal go too, and the joined machines' check-in
    counters (the process group's own keys stay: the store cannot list them): those of machines 1 to
    ``nodes`` - 1, the only ones that check in. Not as many as the store's count says: anyone who reaches the
    port can set it, and a count of 10^12 kept the job's worker slot busy deleting keys for good (an audit,
    2026-12-06)."""
    joined, group = _keys(job_id)
    if store.check([group]):
        prefix = store.get(group).decode()
        for node in range(1, nodes):
            store.delete_key(_check_in_key(prefix, node))
    for key in (joined, group, *_build_keys(job_id)):
        store.delete_key(key)


def rendezvous_address(endpoint: str) -> tuple[str, int]:
    """``--rdzv-endpoint`` (:func:`~lossd._settings.parse_endpoint`'s rule) as a host and a port; a ``ValueError``
    naming the flag (``lossd join`` asks it first, before anything else runs)."""
    try:
        host, _, port = parse_endpoint(endpoint).rpartition(":")
    except ValueError as e:
        raise ValueError(f"--rdzv-endpoint {endpoint!r}: {e}") from None
    if not host:
        raise ValueError("--rdzv-endpoint is empty: give the HOST:PORT of the server's --rdzv-endpoint")
    return host, int(port)


def nothing_to_join(spec: training_pb2.TrainJobRequest, job_id: str) -> str:
    """Why a ``lossd join`` of ``job_id`` has nothing to do (a job on one machine), else ``""``."""
    return f"job {job_id} runs on one machine (nodes {max(spec.nodes, 1)}): there is nothing to join" \
        if spec.nodes < 2 else ""


def _failed(job_id: str, message: str) -> bytes:
    return training_pb2.JobEvent(kind=training_pb2.JOB_EVENT_KIND_STATE, state=training_pb2.JOB_STATE_FAILED,
                                 job_id=job_id, message=message).SerializeToString()


def run_data_parallel(plan: JobPlan, checkpoint: Path | None, send: Callable[[bytes], None],
                      control: Any, digest: str, job_id: str, rdzv_endpoint: str = "",
                      share_checkpoints: bool = False, scratch: str | None = None, reached_step: int = 0) -> None:
    """Train ``plan`` on ``plan.world_size`` ranks; ``send`` forwards rank 0's serialized events
    (``reached_step``: as :func:`run_job`'s).

    With ``plan.nodes`` > 1, this machine runs ranks ``0 … world_size/nodes − 1`` and waits (up to
    :data:`JOIN_TIMEOUT`, or a cancel) for ``nodes − 1`` machines to join on ``rdzv_endpoint``.
    Returns after the job's terminal (or INTERRUPTED) event was sent; when a rank fails first, sends a
    FAILED event naming the rank and its error, after stopping the other ranks. Temporary folders are made
    in ``scratch`` (which the server deletes once this process has ended, even if it was killed).
    """
    if plan.nodes == 1:
        folder = tempfile.mkdtemp(prefix=f"lossd-store-{job_id}-", dir=scratch)  # mode 0700: this user's only
        try:
            _run_ranks(plan, checkpoint, send, control, digest, job_id,
                       Rendezvous("", 0, "", 0, plan.world_size, store_file=os.path.join(folder, "store")),
                       share_checkpoints, scratch=scratch, reached_step=reached_step)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    host, port = rendezvous_address(rdzv_endpoint)
    store = dist.TCPStore(host, port, is_master=False, timeout=RANK_TIMEOUT)
    joined, group = _keys(job_id)
    build, refused = _build_keys(job_id)
    store.set(build, json.dumps(build_of(plan), sort_keys=True))  # before the group: a joiner reads it then
    store.set(group, f"lossd/{job_id}/{os.urandom(6).hex()}/")  # a fresh prefix per start of the job
    deadline = time.monotonic() + JOIN_TIMEOUT.total_seconds()
    log.info("job %s: waiting for %d machines to join on %s", job_id, plan.nodes - 1, rdzv_endpoint)
    refusal = ""  # the last machine's that would not join
    while (count := store.add(joined, 0)) < plan.nodes - 1:
        if line := _take_refusal(store, refused):  # a machine of another build said why it would not join
            refusal = line
            log.warning("job %s: a machine would not join: %s", job_id, refusal)
            send(training_pb2.JobEvent(kind=training_pb2.JOB_EVENT_KIND_WARNING, state=training_pb2.JOB_STATE_QUEUED,
                                       job_id=job_id, message=f"a machine would not join: {refusal}; still "
                                       f"waiting for {plan.nodes - 1 - count} of {plan.nodes - 1}").SerializeToString())
        if control.cancel.is_set() or control.interrupt.is_set():
            state = training_pb2.JOB_STATE_CANCELLED if control.cancel.is_set() else training_pb2.JOB_STATE_INTERRUPTED
            send(training_pb2.JobEvent(kind=training_pb2.JOB_EVENT_KIND_STATE, state=state, job_id=job_id,
                                       message=f"stopped while waiting for machines to join ({count} of "
                                       f"{plan.nodes - 1})").SerializeToString())
            return
        if time.monotonic() > deadline:
            send(_failed(job_id, f"{count} of the {plan.nodes - 1} other machines joined within "
                         f"{JOIN_TIMEOUT.total_seconds():.0f} s (lossd join {job_id} --rdzv-endpoint "
                         f"{rdzv_endpoint})" + (f"; the last that would not join: {refusal}" if refusal else "")))
            return
        time.sleep(0.2)
    local = plan.world_size // plan.nodes
    prefix = store.get(group).decode()
    _run_ranks(plan, checkpoint, send, control, digest, job_id, Rendezvous(host, port, prefix, 0, local),
               share_checkpoints, stop_reason=_SilentMachines(store, prefix, plan.nodes, local), scratch=scratch,
               reached_step=reached_step)


def join_data_parallel(plan: JobPlan, job_id: str, rdzv_endpoint: str,
                       job_ended: Callable[[], str] = lambda: "") -> str:
    """Run this machine's share of a multi-node job (``lossd join``); returns ``""`` once the ranks ended
    well, else why not. The job's events and checkpoints stay with the server's rank 0. Until the job starts it
    waits (up to :data:`JOIN_TIMEOUT`), asking ``job_ended`` every :data:`JOB_CHECK_S` (``""``: it has not; else
    why it will not start; Ctrl-C is seen too: the wait polls). It takes its machine's place (the next index of the
    run's counter) only once the run waits for its machines and this machine runs the build the server's worker
    published (:func:`build_of`); a machine of another build refuses, before it runs a rank."""
    host, port = rendezvous_address(rdzv_endpoint)
    try:
        store = dist.TCPStore(host, port, is_master=False, timeout=JOIN_CONNECT_TIMEOUT)
    except (RuntimeError, OSError) as e:  # DistNetworkError: nothing answers there, or not a rendezvous
        return (f"no rendezvous answered at {rdzv_endpoint} within {JOIN_CONNECT_TIMEOUT.total_seconds():.0f} s "
                f"(give the server's --rdzv-endpoint): {first_line(e)}")
    joined, group = _keys(job_id)
    why, placed = "interrupted", False
    try:
        # No place while it waits: the worker counts only machines that will run its ranks.
        why = _wait_for_start(store, group, job_id, job_ended) or _refuse_other_builds(store, plan, job_id)
        if not why:
            prefix = store.get(group).decode()  # set by the server's worker when the job's run starts
            why = "interrupted"  # until the checks below say otherwise: a Ctrl-C gives the place back too
            node = int(store.add(joined, 1))
            placed = True
            why = (f"job {job_id} already has its {plan.nodes} machines" if node > plan.nodes - 1 else
                   f"the server's run of job {job_id} ended as this machine joined; if the job resumes, run lossd "
                   "join again" if _run_ended(store, group, prefix) else "")
    except (RuntimeError, OSError) as e:  # DistNetworkError: the server's store went away
        why = f"the rendezvous at {rdzv_endpoint} stopped answering (the server stopped?): {first_line(e)}"
    finally:
        if why and placed:  # this machine does not run: its place goes back
            with contextlib.suppress(Exception):
                store.add(joined, -1)
    if why:
        return why
    local = plan.world_size // plan.nodes
    store.set_timeout(RUN_CHECK_TIMEOUT)  # from now on only _joined_run_check uses it: no long waits
    failures: list[bytes] = []
    _run_ranks(plan, None, failures.append, Control(), "", job_id, Rendezvous(host, port, prefix, node * local, local),
               stop_reason=functools.partial(_joined_run_check, store, group, prefix, node, job_id))
    return training_pb2.JobEvent.FromString(failures[-1]).message if failures else ""


def _refuse_other_builds(store: Any, plan: JobPlan, job_id: str) -> str:
    """``""`` when this machine runs the build the server's worker of ``job_id`` published, else why not, which the
    worker is also told (it repeats it in the job's events). A server that published none (an older lossd) differs
    too."""
    build, refused = _build_keys(job_id)
    why = _build_mismatch(store.get(build) if store.check([build]) else b"", build_of(plan), job_id)
    if why:
        store.set(refused, why)
    return why


def _wait_for_start(store: Any, group: str, job_id: str, job_ended: Callable[[], str]) -> str:
    """Poll until the server's worker of ``job_id`` has started (its ``group`` key set): ``""``, else why not (the
    job ended, or :data:`JOIN_TIMEOUT` passed). A blocking ``get`` here held Ctrl-C and outlived a cancelled job
    for up to 10 minutes (an audit, 2026-12-06)."""
    deadline = time.monotonic() + JOIN_TIMEOUT.total_seconds()
    asked = time.monotonic()
    while not store.check([group]):
        if time.monotonic() - asked >= JOB_CHECK_S:
            asked = time.monotonic()
            if why := job_ended():
                return why
        if time.monotonic() > deadline:
            return (f"job {job_id} did not start within {JOIN_TIMEOUT.total_seconds():.0f} s (it waits for a free "
                    "slot on its server); run lossd join again")
        time.sleep(0.2)
    return ""


def _joined_run_check(store: Any, group: str, prefix: str, node: int, job_id: str) -> str:
    """``lossd join``'s question every :data:`RUN_CHECK_S`: check in (the server's worker watches for it,
    :class:`_SilentMachines`), then ``""`` while the server's run it joined goes on, else why its ranks stop."""
    with contextlib.suppress(RuntimeError, OSError):  # a store that cannot answer: _run_ended says so
        store.add(_check_in_key(prefix, node), 1)
    if not _run_ended(store, group, prefix):
        return ""
    return (f"the server's run of job {job_id} ended while this machine's ranks were still running (its worker "
            "stopped: the job ended, was cancelled or interrupted, or is restarting); they were stopped. If the "
            "job resumes, run lossd join again")


class _SilentMachines:
    """The server's worker's question every :data:`RUN_CHECK_S`: ``""`` while every joined machine of the
    run with group ``prefix`` checks in, else which one has not for :data:`MACHINE_SILENT_S` (counted from
    this object's making for a machine not heard from yet)."""

    def __init__(self, store: Any, prefix: str, nodes: int, local: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store, self._prefix, self._local, self._clock = store, prefix, local, clock
        now = clock()
        self._seen = {node: (0, now) for node in range(1, nodes)}  # node: (its count, when it last changed)

    def __call__(self) -> str:
        now = self._clock()
        for node, (count, since) in self._seen.items():
            try:
                current = int(self._store.add(_check_in_key(self._prefix, node), 0))
            except (RuntimeError, OSError):  # the server's own store: this worker dies with the server
                return ""
            if current != count:
                self._seen[node] = (current, now)
            elif now - since >= MACHINE_SILENT_S:
                first, last = node * self._local, (node + 1) * self._local - 1
                ranks = f"rank {first}" if first == last else f"ranks {first}-{last}"
                return (f"machine {node} ({ranks}) has not been heard from for {now - since:.0f} s (frozen, cut "
                        "off or gone: its lossd join checks in every second); the job's ranks were stopped")
        return ""


def _run_ended(store: Any, group: str, prefix: str) -> bool:
    """Whether the server's run of the job that this machine joined (its group ``prefix``) has ended: the
    server deletes the key when the job's worker ends (:func:`forget_rendezvous`), and a new run sets a new
    prefix. A store that cannot answer (the server is gone; or a timeout of :data:`RUN_CHECK_TIMEOUT`: the
    key went between ``check`` and ``get``) counts as ended too; :func:`_run_ranks` asks twice."""
    try:
        return not store.check([group]) or store.get(group).decode() != prefix
    except (RuntimeError, OSError):  # DistStoreError, DistNetworkError
        return True


def join_job(spec: training_pb2.TrainJobRequest, job_id: str, rdzv_endpoint: str, plugins: str = "all",
             job_ended: Callable[[], str] = lambda: "") -> str:
    """``lossd join``: validate the job's spec as the server did (same data, same model), then run this
    machine's ranks of it; returns ``""`` when they ended well, else why not (``job_ended``: see
    :func:`join_data_parallel`)."""
    rendezvous_address(rdzv_endpoint)  # a bad endpoint, a job on one machine: before the data is built
    if why := nothing_to_join(spec, job_id):
        return why
    load_plugin_setting(plugins, REGISTRY)
    plan = plan_job(spec, REGISTRY, TrainingLimits.accepted(max_world_size=max(spec.world_size, 1)))
    torch.set_num_threads(RANK_THREADS)
    return join_data_parallel(plan, job_id, rdzv_endpoint, job_ended)


def _run_ranks(plan: JobPlan, checkpoint: Path | None, send: Callable[[bytes], None], control: Any, digest: str,
               job_id: str, rdzv: Rendezvous, share_checkpoints: bool = False,
               stop_reason: Callable[[], str] | None = None, scratch: str | None = None,
               reached_step: int = 0) -> None:
    """Fork this machine's ranks and relay for them (see the module docstring). ``stop_reason`` (a multi-node
    job's), asked every :data:`RUN_CHECK_S`: ``""``, or why the ranks must stop (on another machine, the
    server's run of the job ended; on the server, a joined machine went silent). Once it has said so for
    :data:`RUN_ENDED_GRACE_S` in a row (the ranks may end by themselves meanwhile), the ranks are killed and
    the job fails with that reason: a rank blocked in a gloo collective does not always notice that a peer
    on another machine died, and would wait :data:`RANK_TIMEOUT`."""
    size, local = plan.world_size, rdzv.local
    ctx = multiprocessing.get_context("fork")
    flags = ctx.RawArray("b", 2)
    lives = [ctx.Pipe(duplex=True) for _ in range(local)]  # (worker end, rank end)
    events_r, events_w = ctx.Pipe(duplex=False)
    # Whatever a rank inherits and must not keep: a held copy would hide the other side's end of file.
    ours = [w for w, _ in lives] + [events_r]
    args = {}
    for r in range(local):
        rank = rdzv.first_rank + r
        others = [c for i, (_, c) in enumerate(lives) if i != r] + ([] if rank == 0 else [events_w])
        args[r] = (rank, size, rdzv, plan, str(checkpoint) if checkpoint else None, digest, flags,
                   lives[r][1], events_w if rank == 0 else None, ours + others, share_checkpoints, reached_step)
    log_dir = tempfile.mkdtemp(prefix=f"lossd-ranks-{job_id}-", dir=scratch)
    sent_final = False

    def forward(data: bytes) -> None:
        nonlocal sent_final
        if data.startswith(CHECKPOINT_MESSAGE):  # rank 0's checkpoint, for the event after it
            send(data)
            return
        event = training_pb2.JobEvent.FromString(data)
        event.job_id = job_id
        if event.kind == training_pb2.JOB_EVENT_KIND_STATE and event.state in FINAL_STATES:
            sent_final = True
        send(event.SerializeToString())

    def drain(budget: float, idle: float) -> None:
        """Forward events for up to ``budget`` seconds, or until none came for ``idle`` seconds."""
        deadline = time.monotonic() + budget
        with contextlib.suppress(EOFError, OSError):
            while (left := deadline - time.monotonic()) > 0 and events_r.poll(min(left, idle)):
                forward(events_r.recv_bytes())

    started = time.perf_counter()
    context = start_processes(name=f"lossd-job-{job_id}", entrypoint=_rank_main, args=args,
                              envs={r: {"LOCAL_RANK": str(r), "RANK": str(rdzv.first_rank + r),
                                        "WORLD_SIZE": str(size)} for r in range(local)},
                              logs_specs=DefaultLogsSpecs(log_dir=log_dir), start_method="fork")
    for _, rank_end in lives:
        rank_end.close()
    events_w.close()
    log.info("job %s: ranks %d-%d of %d started in %.0f ms, pids %s", job_id, rdzv.first_rank,
             rdzv.first_rank + local - 1, size, (time.perf_counter() - started) * 1e3,
             " ".join(str(p) for p in context.pids().values()))
    result = None
    checked, since = time.monotonic(), None  # when stop_reason was last asked, and since when it says stop
    stopped = ""  # why the ranks were stopped (stop_reason)
    try:
        while result is None:
            flags[0], flags[1] = int(control.cancel.is_set()), int(control.interrupt.is_set())
            drain(0.05, 0.05)  # bounded: the flags and the ranks' health are looked at every 50 ms
            result = context.wait(0)
            if result is None and stop_reason is not None and time.monotonic() - checked >= RUN_CHECK_S:
                checked = time.monotonic()
                reason = stop_reason()
                since = None if not reason else (checked if since is None else since)
                if since is not None and checked - since >= RUN_ENDED_GRACE_S:  # not a moment's loss
                    stopped = reason
                    break
        drain(30.0, 0.2)
    finally:
        if stopped:  # killed: a rank blocked in a collective has nothing to save, and may not take SIGTERM
            context.close(signal.SIGKILL)
        else:
            context.close()
        # Exit codes as the ranks left (elastic's ``_poll`` stops the others when it sees the first failure).
        processes = getattr(getattr(context, "_pc", None), "processes", None) or []
        exits = {r: (p.pid, p.exitcode) for r, p in enumerate(processes)}
        errors = []
        for worker_end, _ in lives:
            with contextlib.suppress(EOFError, OSError):
                while worker_end.poll(0):
                    errors.append(json.loads(worker_end.recv_bytes()))
            worker_end.close()
        events_r.close()
        shutil.rmtree(log_dir, ignore_errors=True)
    if sent_final:
        return
    if result is not None and not result.is_failed() and rdzv.first_rank:
        return  # another machine's ranks: rank 0, on the server, reports
    if stopped:
        send(_failed(job_id, stopped))
        return
    send(_failed(job_id, _failure(job_id, errors, exits, rdzv.first_rank)))


def _failure(job_id: str, errors: list[dict[str, Any]], exits: dict[int, tuple[int, int | None]],
             first_rank: int = 0) -> str:
    """Why the ranks failed: a rank killed by a signal without a word (a crash, the OOM killer; SIGTERM is
    how the launcher stops the others), else the earliest error a rank reported (the other ranks' errors
    follow from it: their peer went away), else a rank's exit code."""
    reported = {e["rank"] for e in errors}
    silent = [(first_rank + r, pid, code) for r, (pid, code) in sorted(exits.items())
              if first_rank + r not in reported and code]
    for r, pid, code in silent:
        if code is not None and code < 0 and -code != signal.SIGTERM:
            return f"rank {r} (pid {pid}) was killed by signal {-code}; the other ranks were stopped"
    if errors:
        first = min(errors, key=lambda e: e["t"])
        log.error("job %s: rank %s failed:\n%s", job_id, first["rank"], first["trace"])
        return str(first["error"])
    for r, pid, code in silent:
        return f"rank {r} (pid {pid}) exited with code {code}; the other ranks were stopped"
    return "the ranks ended without a result"

"""The job store (real SQLite, WAL) and checkpoints (atomic, weights_only)."""

from __future__ import annotations

import contextlib
import pickle
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lossd.server.training import SQLiteJobStore as JobStore
from lossd.server.training._checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from lossd.v1 import lossd_pb2
from lossd.v1 import training_pb2 as pb


def _state(state: int, **kw: object) -> pb.JobEvent:
    return pb.JobEvent(kind=pb.JOB_EVENT_KIND_STATE, state=state, **kw)  # type: ignore[arg-type]


def test_events_are_numbered_per_job_without_gaps_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for job in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
        store.create_job(job, job[:1], b"spec-" + job.encode(), epochs=3, total_steps=30, encoding="values")
    store.append_event("aaaaaaaaaaaa", _state(pb.JOB_STATE_QUEUED))
    store.append_event("bbbbbbbbbbbb", _state(pb.JOB_STATE_QUEUED))
    store.append_event("aaaaaaaaaaaa", _state(pb.JOB_STATE_RUNNING))
    store.close()
    store = JobStore(path)
    e = store.append_event("aaaaaaaaaaaa", pb.JobEvent(kind=pb.JOB_EVENT_KIND_EPOCH, state=pb.JOB_STATE_RUNNING,
                                                       epoch=1, step=10, loss=0.5, metrics={"val_accuracy": 0.75}))
    assert (e.seq, e.job_id) == (3, "aaaaaaaaaaaa") and e.time.seconds > 0
    assert [x.seq for x in store.events_after("aaaaaaaaaaaa", 0)] == [1, 2, 3]
    assert [x.seq for x in store.events_after("aaaaaaaaaaaa", 1)] == [2, 3]
    assert [x.seq for x in store.events_after("bbbbbbbbbbbb", 0)] == [1]
    row = store.get_job("aaaaaaaaaaaa", with_spec=True)
    assert row is not None and row.spec == b"spec-aaaaaaaaaaaa"
    assert (row.state, row.epoch, row.step, row.loss, row.metrics, row.last_seq) == (
        pb.JOB_STATE_RUNNING, 1, 10, 0.5, {"val_accuracy": 0.75}, 3)
    assert store.get_job("cccccccccccc") is None
    assert store.integrity_check() == "ok"
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_resumes_results_and_unfinished_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    ids = ["000000000001", "000000000002", "000000000003"]
    for job in ids:
        store.create_job(job, "", b"", epochs=1, total_steps=1, encoding="raw")
        store.append_event(job, _state(pb.JOB_STATE_QUEUED))
    store.append_event(ids[0], _state(pb.JOB_STATE_RUNNING))
    store.append_event(ids[0], _state(pb.JOB_STATE_INTERRUPTED))
    store.append_event(ids[0], _state(pb.JOB_STATE_RUNNING, message="resumed"))
    assert store.get_job(ids[0]).resumes == 1  # type: ignore[union-attr]
    result = pb.JobEvent()
    result.parameters["w"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[1], raw=b"\x00\x00\x80?"))
    store.append_event(ids[1], _state(pb.JOB_STATE_SUCCEEDED), parameters=result)
    assert store.result(ids[1]).parameters["w"].raw == b"\x00\x00\x80?"  # type: ignore[union-attr]
    assert store.result(ids[0]) is None
    assert [c.row.job_id for c in store.claim("replica", 30.0, 10)] == [ids[0], ids[2]]  # not ended, oldest first
    assert [r.job_id for r in store.list_jobs([pb.JOB_STATE_SUCCEEDED])] == [ids[1]]
    assert {r.job_id for r in store.list_jobs()} == set(ids)
    job = store.get_job(ids[0])
    assert job is not None and job.to_proto().state == pb.JOB_STATE_RUNNING and not job.to_proto().HasField("spec")


def test_checkpoints_are_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "0123456789ab.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(3)})
    (tmp_path / ".0123456789ab.pt.999.tmp").write_bytes(b"half a checkpoint")  # a writer killed mid-write
    state = load_checkpoint(path)
    assert state is not None and state["epoch"] == 1
    save_checkpoint(path, {"epoch": 2, "w": torch.ones(3)})
    assert load_checkpoint(path)["epoch"] == 2  # type: ignore[index]
    remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == [] and load_checkpoint(path) is None


def test_deleted_jobs_give_their_space_back_to_the_file_system(tmp_path: Path) -> None:
    """An audit deleted every job of a store (ListJobs empty) and jobs.sqlite3 stayed at 80 MB, plus a 10 MB
    WAL, restart or not: DeleteJob and --job-retention freed nothing, where deleting jobs is how a full data
    directory is meant to get room back. A store made now has auto_vacuum; each deletion gives pages back."""
    import os

    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    ids = [f"{i:012x}" for i in range(4)]
    for job in ids:
        store.create_job(job, "", os.urandom(2_000_000), epochs=1, total_steps=1, encoding="raw")
        store.append_event(job, _state(pb.JOB_STATE_CANCELLED))

    def size() -> int:
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    full = size()
    assert full > 8_000_000
    assert store.delete_job(ids[0]) is not None and size() < full - 1_500_000
    assert store.delete_ended_before(time.time() + 60) == 3 and size() < 1_000_000
    store.close()
    # A store made by a lossd before this keeps SQLite's default (pages reused, not given back): still served.
    old = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(old)) as db:
        db.execute("CREATE TABLE t (x)")  # a table first: auto_vacuum can no longer be set
    store = JobStore(old)
    store.create_job(ids[0], "", b"spec", epochs=1, total_steps=1, encoding="raw")
    store.append_event(ids[0], _state(pb.JOB_STATE_CANCELLED))
    assert store.delete_job(ids[0]) is not None and store.get_job(ids[0]) is None
    store.close()
    with contextlib.closing(sqlite3.connect(old)) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0


def test_a_checkpoint_damaged_on_disk_is_found_when_it_is_read(tmp_path: Path) -> None:
    """One flipped bit of a tensor: torch.load took it, and the resumed job ended with other parameters than
    an uninterrupted run's (an audit). Its SHA-256, after torch's bytes, finds it: the job starts over."""
    from lossd.server.training._checkpoint import DIGEST_TAG

    path = tmp_path / "0123456789ab.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.arange(1000, dtype=torch.float32)})
    whole = path.read_bytes()
    assert whole[-32 - len(DIGEST_TAG):-32] == DIGEST_TAG
    data = whole.find(torch.arange(1000, dtype=torch.float32).numpy().tobytes())
    assert data > 0
    damaged = bytearray(whole)
    damaged[data + 400] ^= 0x01  # one mantissa bit of one weight
    path.write_bytes(bytes(damaged))
    assert torch.load(path, weights_only=True)["w"][100] != 100  # torch reads it without a word
    with pytest.raises(ValueError, match="0123456789ab.pt is damaged: its bytes do not match their SHA-256"):
        load_checkpoint(path)
    path.write_bytes(whole[:-(32 + len(DIGEST_TAG))])  # a checkpoint from before the digest: read as it is
    assert load_checkpoint(path)["epoch"] == 1  # type: ignore[index]


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickled code ran",))


def test_checkpoints_load_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "0123456789ab.pt"
    torch.save({"epoch": 1, "evil": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)


def test_leftover_checkpoints_of_ended_or_unknown_jobs_are_swept_at_start(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from lossd.server.losses import REGISTRY
    from lossd.server.training import TrainingConfig
    from lossd.server.training._manager import JobManager

    with ThreadPoolExecutor(1) as executor:
        manager = JobManager(TrainingConfig(tmp_path), REGISTRY, executor)
        ended, unfinished, unknown = "00000000000a", "00000000000b", "00000000000c"
        for job in (ended, unfinished):
            manager.store.create_job(job, "", b"", epochs=1, total_steps=1, encoding="raw")
            manager.store.append_event(job, _state(pb.JOB_STATE_QUEUED))
        manager.store.append_event(ended, _state(pb.JOB_STATE_SUCCEEDED))
        folder = tmp_path / "checkpoints"
        for name in (f"{ended}.pt", f".{ended}.pt.123.tmp", f"{unfinished}.pt", f"{unknown}.pt", "notes.txt"):
            (folder / name).write_bytes(b"x")
        manager._sweep_checkpoints()
        assert sorted(p.name for p in folder.iterdir()) == [f"{unfinished}.pt", "notes.txt"]
        # A folder where a checkpoint or its temp file goes (an audit): the start raised IsADirectoryError on
        # every try. It is logged and left; the rest is swept, and the sweep, a start's, goes on.
        for name in (f".{unknown}.pt.1.tmp", f"{ended}.pt"):
            (folder / name).mkdir()
        (folder / f".{ended}.pt.7.tmp").write_bytes(b"x")
        manager._sweep_checkpoints()
        assert sorted(p.name for p in folder.iterdir()) == [f".{unknown}.pt.1.tmp", f"{ended}.pt",
                                                             f"{unfinished}.pt", "notes.txt"]
        manager.store.close()
        manager._lock_file.release()


def test_a_full_disk_under_torch_save_is_a_full_disk() -> None:
    """torch.save's zip writer answers ENOSPC with a RuntimeError ("unexpected pos ...") raised while handling
    it: the worker took that for a defect and failed the job, where a full data directory interrupts it (it
    resumes once space is freed). An audit filled a tmpfs; here the file itself fills."""
    import errno
    import io

    from lossd.server.training._checkpoint import disk_full

    class Filling(io.RawIOBase):
        def __init__(self, room: int) -> None:
            self.room = room

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            if self.room < len(b):
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room -= len(b)
            return len(b)

    with pytest.raises(RuntimeError) as info:
        torch.save({"w": torch.zeros(10_000)}, Filling(20_000))
    assert disk_full(info.value)
    assert not disk_full(RuntimeError("unexpected pos")) and not disk_full(OSError(errno.EIO, "I/O error"))


def test_a_watch_left_early_drops_its_wake_up_event_when_it_is_closed(tmp_path: Path) -> None:
    """A consumer that stops reading a job's events and closes the stream (TrainJob with ``detach``,
    a follower after the terminal event, a cancelled call) ends the manager's inner watch with it: its
    wake-up event is gone when ``aclose`` returns, not when the garbage collector's hook closes the
    inner generator a loop turn or two later (the race behind a flaky bookkeeping test)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from lossd.server.losses import REGISTRY
    from lossd.server.training import TrainingConfig
    from lossd.server.training._manager import JobManager

    with ThreadPoolExecutor(1) as executor:
        manager = JobManager(TrainingConfig(tmp_path), REGISTRY, executor)
        job = "00000000000a"
        manager.store.create_job(job, "", b"", epochs=1, total_steps=1, encoding="raw")
        manager.store.append_event(job, _state(pb.JOB_STATE_QUEUED))

        async def leave_early() -> None:
            manager._loop = asyncio.get_running_loop()
            events = manager.watch(job, 0)
            first = await events.__anext__()
            assert first.state == pb.JOB_STATE_QUEUED and manager._waiters and manager.watchers == 1
            await events.aclose()
            assert manager._waiters == {} and manager.watchers == 0

        try:
            asyncio.run(leave_early())
        finally:
            manager.store.close()
            manager._lock_file.release()


def test_a_job_found_running_at_open_keeps_its_owner_until_it_is_claimed(tmp_path: Path) -> None:
    """A server killed (-9) while it ran a job leaves the row RUNNING with its name as owner. The next open voids
    the lease (the job is claimable at once) but keeps the owner, so that the claim's row says who ran it: the
    INTERRUPTED event names that server (docs/training.md). The open cleared the owner, and it read "unknown"."""
    from lossd.server.training._store import Lease

    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.create_job("00000000000a", "", b"spec", epochs=1, total_steps=1, encoding="raw")
    store.append_event("00000000000a", _state(pb.JOB_STATE_QUEUED))
    [claim] = store.claim("host-1-aaaaaa", 30.0, 5)
    store.append_event("00000000000a", _state(pb.JOB_STATE_RUNNING), lease=claim.lease)
    store.close()  # killed: nothing released

    store = JobStore(path)
    assert store.count_waiting() == 1  # the dead server's lease is void: the job waits to be claimed
    assert store.request_cancel("00000000000b", "") == "gone"
    [again] = store.claim("host-2-bbbbbb", 30.0, 5)
    assert (again.row.state, again.row.owner, again.lease) == (pb.JOB_STATE_RUNNING, "host-1-aaaaaa",
                                                               Lease("00000000000a", 2))
    assert store.get_job("00000000000a").owner == "host-2-bbbbbb"  # type: ignore[union-attr]
    store.close()

    store = JobStore(path)  # a job found waiting (not held) at open is cancelled at once, not requested
    assert store.request_cancel("00000000000a", "cancelled before it resumed") == "cancelled"
    store.close()

"""The training worker logs as the server does: with ``--log-format json`` its warnings and the traceback of an
internal error are JSON lines on stderr (they were ``warnings``' own text and ``traceback.print_exc``).

The worker runs in a forked child whose stderr is a file, its engine replaced by one that warns and fails.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lossd.server.training import _worker
from lossd.v1 import training_pb2 as pb
from support.training import request, small_spec

JOB = "0123456789ab"


def _worker_whose_engine_fails(stderr: str, control: Connection, events: Connection, log_format: str) -> None:
    fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115  (pytest's capture replaced it)

    def engine(*args: Any, **kwargs: Any) -> None:
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size")
        raise RuntimeError("a bug in the engine")

    _worker.plan_job = lambda *args: SimpleNamespace(world_size=1)  # type: ignore[attr-defined]
    _worker.run_job = engine  # type: ignore[attr-defined]
    _worker.worker_main(JOB, request(small_spec()).SerializeToString(), os.devnull, "none", control, events,
                        log_settings=(log_format, logging.INFO))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("log_format", ["json", "plain"])
def test_the_worker_logs_warnings_and_internal_errors_in_the_servers_format(tmp_path: Path, log_format: str) -> None:
    ctx = multiprocessing.get_context("fork")
    control_r, control_w = ctx.Pipe(duplex=False)
    events_r, events_w = ctx.Pipe(duplex=False)
    stderr = tmp_path / "stderr"
    child = ctx.Process(target=_worker_whose_engine_fails, args=(str(stderr), control_r, events_w, log_format))
    child.start()
    control_r.close()
    events_w.close()
    try:
        assert events_r.poll(60)
        event = pb.JobEvent.FromString(events_r.recv_bytes())
    finally:
        control_w.close()
        child.join(30)
    assert (event.job_id, event.state) == (JOB, pb.JOB_STATE_FAILED)
    assert event.message == "internal error in the training worker (RuntimeError); see the server log"
    lines = stderr.read_text().splitlines()
    if log_format == "plain":
        assert " WARNING py.warnings: " in lines[0] and "UserWarning: reduction: 'mean'" in lines[0], lines
        error = [k for k, line in enumerate(lines) if " ERROR lossd.server.training: " in line]
        assert len(error) == 1 and lines[error[0]].endswith(f"job {JOB}: internal error in the training worker")
        assert lines[error[0] + 1] == "Traceback (most recent call last):", lines
        assert lines[-1] == "RuntimeError: a bug in the engine", lines
        return
    records = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert [(r["level"], r["logger"]) for r in records] == [("WARNING", "py.warnings"),
                                                            ("ERROR", "lossd.server.training")], records
    assert "UserWarning: reduction: 'mean' divides" in records[0]["message"]
    assert records[1]["message"] == f"job {JOB}: internal error in the training worker"
    assert records[1]["exception"].endswith("RuntimeError: a bug in the engine")

"""The job store's ``world_size`` column: stored per job, shown in ``Job``, added to a store written
before data-parallel jobs existed (jobs there had one process)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lossd.server.training._store import SQLiteJobStore as JobStore

#: The jobs table as lossd created it before data-parallel jobs (no world_size column).
OLD_JOBS_TABLE = """
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
    spec        BLOB NOT NULL
);
"""


def test_world_size_is_stored_and_shown(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.create_job("0123456789ab", "a", b"", epochs=1, total_steps=1, encoding="values", world_size=4)
    store.create_job("0123456789ac", "b", b"", epochs=1, total_steps=1, encoding="values")
    assert store.get_job("0123456789ab").to_proto().world_size == 4  # type: ignore[union-attr]
    assert {r.job_id: r.to_proto().world_size for r in store.list_jobs()} == {"0123456789ab": 4, "0123456789ac": 1}
    store.close()


def test_a_store_from_before_world_size_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_JOBS_TABLE)
        db.execute("PRAGMA user_version=1")
        db.execute("INSERT INTO jobs (job_id, name, state, created, updated, epochs, total_steps, encoding, spec) "
                   "VALUES ('0123456789ab', 'old', 2, 0, 0, 3, 30, 'values', x'')")
    store = JobStore(path)
    row = store.get_job("0123456789ab", with_spec=True)
    assert row is not None and row.world_size == 1 and row.name == "old"
    store.close()

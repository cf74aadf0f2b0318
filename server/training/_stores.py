"""Which job store a ``--job-store`` URL names: SQLite in the data directory, or a shared PostgreSQL.

The one place that knows both implementations (:mod:`._store`, :mod:`._pgstore`); the manager
opens its store here. psycopg is imported only when a PostgreSQL store is opened, so the
embedded default needs nothing beyond lossd[server]::

    >>> import tempfile
    >>> type(open_store("", Path(tempfile.mkdtemp()))).__name__
    'SQLiteJobStore'
    >>> try:
    ...     open_store("mysql://lossd:s3cret@db/jobs", Path("."))
    ... except StoreError as e:
    ...     print(str(e)[:62])
    --job-store 'mysql://lossd:***@db/jobs' is not a postgresql://
"""

from __future__ import annotations

from pathlib import Path

from ._pgstore import PostgresJobStore, mask_url
from ._store import JobStore, SQLiteJobStore, StoreError

__all__ = ["open_store"]


def open_store(url: str, data_dir: Path, *, max_checkpoint_bytes: int = 0, timeout_s: float = 5.0) -> JobStore:
    """The store ``url`` names: ``""`` (SQLite in ``data_dir``) or ``postgresql://…`` (PostgreSQL).

    ``timeout_s`` bounds every wait on the database (connecting, an unanswered packet). Raises
    :class:`StoreError` for a URL of another kind, a missing driver, an unreachable database (its
    message names the URL with the password masked), a ``jobs.sqlite3`` SQLite cannot open or read (not a
    database, damaged, a folder) or a schema newer than this lossd.
    """
    if not url:
        return SQLiteJobStore(data_dir / "jobs.sqlite3")
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresJobStore(url, max_checkpoint_bytes=max_checkpoint_bytes, timeout_s=timeout_s)
    raise StoreError(
        f"--job-store {mask_url(url)!r} is not a postgresql:// URL (leave it unset for SQLite in --data-dir)"
    )

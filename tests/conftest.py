"""Shared fixtures: a real lossd server on an ephemeral loopback port.

``server_address`` runs the server in this process (a background thread with
its own event loop) — fast, and the same code path as ``lossd serve``.
``served_process`` runs ``python -m lossd.server`` as a separate process, for
tests that need the real entry point (grpcurl, CLI, signals).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/support is importable as `support`

from support.dist import build_dist  # noqa: E402
from support.servers import ServedProcess, start_in_process  # noqa: E402

#: The replica scenarios (``@pytest.mark.replicas``: PostgreSQL failovers, network partitions) take minutes:
#: ``make replicas`` sets this and runs them; otherwise they skip, saying how to run them.
REPLICA_TESTS = os.environ.get("LOSSD_REPLICA_TESTS", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REPLICA_TESTS:
        return
    skip = pytest.mark.skip(reason="replica scenario (minutes): run with `make replicas` (LOSSD_REPLICA_TESTS=1)")
    for item in items:
        if item.get_closest_marker("replicas") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server_address() -> Iterator[str]:
    with start_in_process() as address:
        yield address


@pytest.fixture(scope="session")
def served_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    with ServedProcess.start(tmp_path_factory.mktemp("served")) as proc:
        yield proc


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``make dist``'s sdist and wheel, built once for the session (tests/support/dist.py)."""
    yield build_dist(tmp_path_factory.mktemp("dist"))


@pytest.fixture()
def client(server_address: str):  # type: ignore[no-untyped-def]
    from lossd.client import Client

    with Client(server_address) as c:
        yield c


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real PostgreSQL server (tests/support/postgres.py) for the session, on a free loopback port (as the
    ``postgres`` user under root). Skips, saying why, only where the machine has no PostgreSQL binaries;
    any other reason it cannot start (no postgres user, no psycopg) fails the test."""
    from support.postgres import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer.start_new(None)
    try:
        yield server
    finally:
        server.destroy()

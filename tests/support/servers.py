"""Start real lossd servers for tests: in-process (thread) or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def start_in_process(**config: object) -> Iterator[str]:
    """Serve on 127.0.0.1:<ephemeral> in a background thread; yields the address."""
    from lossd.server import ServerConfig, create_server

    async def build() -> Any:
        # The suite compares with local CPU torch bit for bit, so the server computes on the CPU too.
        # Plugins installed in the venv must not leak into the registry the tests read.
        # Training jobs get a fresh data directory unless the test names one.
        settings = {"device": "cpu", "plugins": "none", "data_dir": data_dir, **config}
        return await create_server(ServerConfig(host="127.0.0.1", port=0, **settings))  # type: ignore[arg-type]

    with scratch_dir("lossd-data-") as data_dir, serve_in_thread(build) as port:
        yield f"127.0.0.1:{port}"


def on_this_loop(calls: Callable[[Any], Awaitable[Any]], **config: object) -> Any:
    """``await calls(client)`` against a real server started on the caller's own event loop (``asyncio.run``
    here), with an AsyncClient, the server closed after: server code a test patched then runs where the
    test can see which thread ran it (the loop's: the calling thread)."""
    from lossd.client import AsyncClient
    from lossd.server import ServerConfig, create_server

    async def run(data_dir: str) -> Any:
        settings = {"device": "cpu", "plugins": "none", "data_dir": data_dir, **config}
        server = await create_server(ServerConfig(host="127.0.0.1", port=0, **settings))  # type: ignore[arg-type]
        await server.start()
        try:
            async with AsyncClient(f"127.0.0.1:{server.port}") as client:
                return await calls(client)
        finally:
            await server.close()

    with scratch_dir("lossd-data-") as data_dir:
        return asyncio.run(run(data_dir))


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    """A fresh directory under the system's temporary folder (a server's ``data_dir``), removed with
    everything in it on exit: each test server left its job database and checkpoints behind."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as path:
        yield path


@contextlib.contextmanager
def serve_in_thread(build: Callable[[], Awaitable[Any]]) -> Iterator[int]:
    """Run the server that ``build()`` makes (a :class:`lossd.server.LossdServer`, or anything with
    its ``port``, ``start()`` and ``close()``) on its own event loop in a background thread; yields
    the port it bound, stops the server on exit."""
    loop = asyncio.new_event_loop()
    ready: dict[str, object] = {}
    started = threading.Event()

    async def main() -> None:
        try:
            server = await build()
            await server.start()
        except BaseException as e:  # reported in the caller's thread
            ready["error"] = e
            started.set()
            return
        stop = asyncio.Event()
        ready["stop"], ready["port"] = stop, server.port
        started.set()
        await stop.wait()
        await server.close()  # running training jobs checkpoint and stop; the data dir is released

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("in-process server did not start")
    if "error" in ready:
        thread.join(10)
        raise RuntimeError("in-process server did not start") from ready["error"]  # type: ignore[misc]
    try:
        yield ready["port"]  # type: ignore[misc]
    finally:
        loop.call_soon_threadsafe(ready["stop"].set)  # type: ignore[attr-defined]
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("in-process server did not stop within 10 s")


@dataclass
class ServedProcess:
    """``python -m lossd.server`` (or another ``command``) on an ephemeral port, with its output."""

    proc: subprocess.Popen[str]
    address: str
    log: list[str]

    def report(self, lines: int = 40) -> str:
        """The server's state and the tail of its output, for a failure message.

        >>> served.report()  # doctest: +SKIP
        'server pid 4242 (127.0.0.1:40123): exited with code -9; its last 40 lines of output:\n...'
        """
        code = self.proc.poll()
        state = "still running" if code is None else f"exited with code {code}"
        return (f"server pid {self.proc.pid} ({self.address}): {state}; its last {lines} lines of output:\n"
                + "".join(list(self.log)[-lines:]))

    @classmethod
    @contextlib.contextmanager
    def start(cls, workdir: Path, *args: str, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = (), command: tuple[str, ...] = (sys.executable, "-m", "lossd.server"),
              ) -> Iterator[ServedProcess]:
        """``prefix``: a command that runs the server (``("ip", "netns", "exec", "ns1")``); it must exec it.
        ``command``: the server's own command (``lossd serve``: ``(".venv/bin/lossd", "serve")``)."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOSSD_DEVICE": "cpu", **(env or {})}
        proc = subprocess.Popen(
            [*prefix, *command, "--port", "0", *args],
            cwd=workdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        log: list[str] = []
        assert proc.stdout is not None
        address = None
        for line in proc.stdout:
            log.append(line)
            m = re.search(r"listening on (\S+:\d+)", line)
            if m:
                address = m.group(1)
                break
        if address is None:
            proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(log))
        reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
        reader.start()
        served = cls(proc, address, log)
        try:
            yield served
        except BaseException as e:  # a failing test shows what the server said, and whether it still runs
            e.add_note(served.report())
            raise
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            reader.join(5)

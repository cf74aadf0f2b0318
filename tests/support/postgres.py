"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` on a free loopback port, as a non-root user.

The binaries come from the machine (Debian's ``postgresql`` package; ``.ci/run``
installs it when missing): ``initdb``/``pg_ctl`` on PATH, else the newest
``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root, so under root
the server runs as the ``postgres`` user (``runuser``). The cluster asks for a
password over TCP (scram-sha-256), so tests see a real password in the URL::

    server = PostgresServer.start_new(tmp_path)   # or the session fixture ``postgres`` (tests/conftest.py)
    server.url   # postgresql://lossd:<password>@127.0.0.1:<port>/lossd
    server.restart()
    server.stop()
"""

from __future__ import annotations

import glob
import ipaddress
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "postgres_binaries", "setup_problem", "unavailable_reason"]


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None``."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _run_as() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a non-root user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def unavailable_reason() -> str:
    """Why no test server can start here ("" when one can): only missing PostgreSQL binaries.

    Anything else that stops a start (no ``postgres`` user under root, no psycopg) is a broken
    setup, not a machine without PostgreSQL: :func:`setup_problem` names it and the tests fail.
    """
    if postgres_binaries() is None:
        return "no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql package (.ci/run does)"
    return ""


def setup_problem() -> str:
    """What keeps the machine's PostgreSQL binaries from starting a test server ("" when nothing)."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return ("running as root and there is no postgres user to run PostgreSQL as (PostgreSQL refuses "
                    "root; Debian's postgresql package makes that user)")
        if shutil.which("runuser") is None:
            return "running as root and runuser (util-linux) is missing"
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg / psycopg-pool are not installed: they are in lossd[dev] (make venv) and lossd[postgres]"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """One throwaway cluster; :meth:`start_new` makes it, :meth:`stop` ends it."""

    folder: Path
    port: int
    password: str
    user: str = "lossd"
    database: str = "lossd"
    #: Addresses it listens on (the first is the one ``url`` names); others get a password rule in pg_hba.conf.
    listen: tuple[str, ...] = ("127.0.0.1",)

    @property
    def url(self) -> str:
        return self.url_at(self.listen[0])

    def url_at(self, host: str, database: str | None = None) -> str:
        """The URL through ``host`` (one of ``listen``)."""
        return f"postgresql://{self.user}:{self.password}@{host}:{self.port}/{database or self.database}"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        bin_dir = postgres_binaries()
        assert bin_dir is not None
        subprocess.run([*_run_as(), str(bin_dir / "pg_ctl"), "-D", str(self.data), *args], check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @classmethod
    def start_new(cls, parent: Path | None = None, listen: tuple[str, ...] = ("127.0.0.1",)) -> PostgresServer:
        """initdb a cluster in a fresh folder, start it on a free port of ``listen`` and create the database."""
        reason = unavailable_reason() or setup_problem()
        if reason:
            raise RuntimeError(reason)
        bin_dir = postgres_binaries()
        assert bin_dir is not None
        folder = Path(tempfile.mkdtemp(prefix="lossd-pg-", dir=parent))
        server = cls(folder, _free_port(), secrets.token_hex(12), listen=listen)
        (folder / "pw").write_text(server.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
            shutil.chown(folder / "pw", "postgres", "postgres")
            os.chmod(folder, 0o755)
        subprocess.run([*_run_as(), str(bin_dir / "initdb"), "-D", str(server.data), "-U", server.user,
                        f"--pwfile={folder / 'pw'}", "--auth-host=scram-sha-256", "--auth-local=trust",
                        "-E", "UTF8", "--no-sync"],
                       check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with open(server.data / "pg_hba.conf", "a") as hba:
            for address in listen[1:]:
                hba.write(f"host all all {ipaddress.ip_interface(f'{address}/24').network} scram-sha-256\n")
        server.start()
        import psycopg

        with psycopg.connect(server.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {server.database}")
        return server

    def start(self) -> None:
        """Start (again) on the same port; returns once it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses={','.join(self.listen)} -k {self.folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._ctl("-o", options, "-l", str(self.folder / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: ends every connection, as a database restart does)."""
        self._ctl("-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop and start: every client connection is lost, the data stays."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop it if it runs and delete its folder."""
        try:
            self.stop("immediate")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def fresh_database(self) -> str:
        """A new, empty database on this server; returns its URL (one per test keeps tests apart)."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"


def main(argv: list[str] | None = None) -> int:
    """For scripts (``deploy/image_test.sh``): ``start PARENT`` starts a server in a new folder under
    PARENT and prints its URL, then that folder; ``destroy FOLDER`` stops it and deletes the folder. The folder keeps
    what ``destroy`` needs (``server.json``, next to the password file)."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "start":
        server = PostgresServer.start_new(Path(args[1]))
        (server.folder / "server.json").write_text(json.dumps({"port": server.port, "password": server.password}))
        print(server.url)
        print(server.folder)
        return 0
    if len(args) == 2 and args[0] == "destroy":
        folder = Path(args[1])
        facts = json.loads((folder / "server.json").read_text())
        PostgresServer(folder, facts["port"], facts["password"]).destroy()
        return 0
    print("usage: postgres.py start PARENT | destroy FOLDER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

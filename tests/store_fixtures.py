"""Fixtures for the study store tests: a real PostgreSQL server for the session, and databases on both backends."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_processes import free_port

from radialog.app.database import Database

__all__ = ["database_url", "open_database", "postgres_server"]

# initdb refuses to run as root: as root, the server runs as this user.
UNPRIVILEGED_USER = "nobody"
_database_numbers = itertools.count()


def _postgres_bin() -> Path | None:
    for candidate in [shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)]:
        if candidate:
            return Path(candidate).parent
    return None


@dataclass(frozen=True)
class PostgresServer:
    port: int
    run: Callable[..., subprocess.CompletedProcess]  # a server binary, as the server's user

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """One statement outside a transaction (CREATE DATABASE, ALTER DATABASE)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port, its data and socket in a temporary directory."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on PATH or in /usr/lib/postgresql/*/bin")
    root = Path(tempfile.mkdtemp(prefix="radialog-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam(UNPRIVILEGED_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", UNPRIVILEGED_USER, "--"]

    def run(binary: str, *args: str) -> subprocess.CompletedProcess:
        command = [*as_user, str(bin_dir / binary), *args]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, cwd=root)

    data, port = root / "data", free_port()
    run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
    run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60", "start")
    try:
        yield PostgresServer(port, run)
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh, empty study database: a SQLite data directory, or a new database on the PostgreSQL server.

    SQLite is named by its directory (`radialog serve --data-dir`), PostgreSQL by its URL.
    """
    if request.param == "sqlite":
        return str(tmp_path / "data")
    server = request.getfixturevalue("postgres_server")
    name = f"studies_{os.getpid()}_{next(_database_numbers)}"
    server.execute(f"CREATE DATABASE {name}")
    return server.url(name)


@pytest.fixture
def open_database(database_url) -> Iterator[Callable[[], Database]]:
    """Opens another connection to the test's database, as a restarted or second server process would."""
    opened: list[Database] = []

    def open_() -> Database:
        if database_url.startswith("postgresql://"):
            database = Database.open(database_url, None)
        else:
            database = Database.open(None, Path(database_url))
        opened.append(database)
        return database

    yield open_
    for database in opened:
        database.close()

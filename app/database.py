"""The study database: SQLite in a data directory (the default) or PostgreSQL (several servers), one SQL.

Both backends run the same statements (written with `?` placeholders; PostgreSQL's driver gets `%s`)
through one connection per process, used by one thread at a time. Any driver error becomes
`DatabaseUnavailable` (the API answers 503); a PostgreSQL connection that failed is dropped and the
next statement connects again, so a database that comes back is used again without a restart.

The schema is versioned by a one-row `schema_version` table and the numbered `MIGRATIONS` below, run
in order at start-up inside one transaction. Not alembic: the schema is three tables, it must run on
two backends from the same statements, and a migration table costs no dependency.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SQLITE_FILE = "studies.sqlite3"
# Serialises migrations, and the count-then-insert of a new study, across processes (PostgreSQL).
LOCK_KEY = 0x5241_4449  # "RADI"

# Migration n (1-based) is MIGRATIONS[n - 1]; `{blob}` is the dialect's binary type. Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE studies (
            id TEXT PRIMARY KEY,
            model_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_s DOUBLE PRECISION NOT NULL,
            revision TEXT NOT NULL,
            image {blob} NOT NULL,
            image_format TEXT NOT NULL,
            image_window TEXT,
            probabilities TEXT NOT NULL,
            positive TEXT NOT NULL,
            report TEXT,
            anchor TEXT,
            context_start INTEGER NOT NULL
        )""",
        "CREATE INDEX studies_updated ON studies (updated_s)",
        """CREATE TABLE turns (
            study_id TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            task TEXT NOT NULL,
            user_text TEXT NOT NULL,
            prompt TEXT NOT NULL,
            answer TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (study_id, seq)
        )""",
        """CREATE TABLE report_revisions (
            study_id TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            report TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (study_id, seq)
        )""",
    ),
    # 2: a prior image of the same patient, as uploaded, and whether the image encoder reads it (0 or 1).
    (
        "ALTER TABLE studies ADD COLUMN prior_image {blob}",
        "ALTER TABLE studies ADD COLUMN prior_used INTEGER",
    ),
)


class DatabaseUnavailable(Exception):
    """The study database cannot be reached or failed a statement (the API answers 503)."""


Run = Callable[[str, Sequence[Any]], Any]  # run(sql, params) → the cursor


@dataclass(frozen=True)
class _Dialect:
    name: str
    blob: str
    errors: tuple[type[BaseException], ...]
    begin_write: str | None  # SQLite takes its write lock up front; PostgreSQL begins implicitly
    lock: str | None  # a transaction-scoped lock for LOCK_KEY
    reconnect: bool  # drop the connection after an error (a lost server); SQLite's file stays open


class Database:
    """One connection, one thread at a time; `transaction()` commits on success and rolls back otherwise."""

    def __init__(self, connect: Callable[[], Any], dialect: _Dialect, where: str) -> None:
        self._connect = connect
        self.dialect = dialect
        self.where = where  # for messages: a file path or a URL without its password
        self._conn: Any = None
        self._lock = threading.Lock()

    @classmethod
    def sqlite(cls, path: str | Path) -> Database:
        """A SQLite file (WAL mode: readers never wait for the writer) or ":memory:" (tests)."""
        path = str(path)

        def connect() -> sqlite3.Connection:
            # isolation_level=None: transactions are begun explicitly, below; timeout waits for another process.
            conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")  # a deleted study's pages are zeroed, not just freed
            return conn

        dialect = _Dialect("sqlite", "BLOB", (sqlite3.Error,), "BEGIN IMMEDIATE", None, reconnect=False)
        return cls(connect, dialect, path)

    @classmethod
    def postgres(cls, url: str) -> Database:
        import psycopg

        def connect() -> Any:
            return psycopg.connect(url, connect_timeout=5)

        dialect = _Dialect(
            "postgresql", "BYTEA", (psycopg.Error,), None, f"SELECT pg_advisory_xact_lock({LOCK_KEY})", reconnect=True
        )
        return cls(connect, dialect, _without_password(url))

    @classmethod
    def open(cls, url: str | None, data_dir: Path | None) -> Database:
        """PostgreSQL when `url` is set, else SQLite in `data_dir` (created if missing), else in memory."""
        if url:
            return cls.postgres(url)
        if data_dir is None:
            return cls.sqlite(":memory:")
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls.sqlite(data_dir / SQLITE_FILE)

    @contextlib.contextmanager
    def transaction(self, write: bool = False, locked: bool = False) -> Iterator[Run]:
        """`with db.transaction(write=True) as run: run(sql, params)`; `locked` also takes LOCK_KEY."""
        with self._lock:
            try:
                conn = self._connection()
                cursor = conn.cursor()

                def run(sql: str, params: Sequence[Any] = ()) -> Any:
                    if self.dialect.name == "postgresql":
                        sql = sql.replace("?", "%s")
                    cursor.execute(sql, tuple(params))
                    return cursor

                if self.dialect.name == "sqlite":
                    cursor.execute(self.dialect.begin_write if write else "BEGIN")
                if locked and self.dialect.lock:
                    cursor.execute(self.dialect.lock)
                yield run
                conn.commit()
            except self.dialect.errors as err:
                self._after_error()
                logger.error("study database %s failed: %s", self.where, err)
                raise DatabaseUnavailable(f"the study database is unavailable ({type(err).__name__}: {err})") from err
            except BaseException:
                self._after_error()
                raise

    def checkpoint(self) -> None:
        """SQLite: move the write-ahead log into the file and empty it (after a delete, so no old copy stays)."""
        if self.dialect.name != "sqlite":
            return
        with self._lock:
            try:
                self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as err:
                logger.warning("study database %s: checkpoint failed: %s", self.where, err)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _after_error(self) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(Exception):
            self._conn.rollback()
        if self.dialect.reconnect:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def migrate(db: Database) -> int:
    """Bring the schema to the newest version; returns it. Refuses a database newer than this code."""
    with db.transaction(write=True, locked=True) as run:
        run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", ())
        row = run("SELECT version FROM schema_version", ()).fetchone()
        if row is None:
            run("INSERT INTO schema_version (version) VALUES (0)", ())
        current = row[0] if row else 0
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"the study database {db.where} has schema version {current}, newer than this RaDialog "
                f"knows ({len(MIGRATIONS)}): upgrade RaDialog"
            )
        for number in range(current + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[number - 1]:
                run(statement.format(blob=db.dialect.blob), ())
            logger.info("study database %s: migrated to schema version %d", db.where, number)
        run("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
    return len(MIGRATIONS)


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()

"""Studies of the REST API and the UI, kept in the study database (`radialog.app.database`).

The database is the truth: each study's image bytes as uploaded, any prior image's, its findings, report,
report revisions, the transcript and the conversation state, time stamps and the model id. A process keeps its
recently used `Session`s (with their image embeddings) in a small cache, and checks each one's revision
in the database on every `get`, so a study changed or deleted by another process is never served stale;
a study it has never seen (created by another process, or before a restart) is rebuilt by the caller's
`restore`, which recomputes the embeddings from the stored image.

Studies are deleted `retention_days` after their last change, and `delete` erases the rows, image bytes
included. A full store refuses new studies (`StoreFull`): a study someone may still be reading is never
evicted to make room.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from radialog.app.database import Database, DatabaseUnavailable, migrate
from radialog.chat import ConversationState, ImageInfo, Session, Task, Turn

__all__ = ["DatabaseUnavailable", "StoreFull", "StoreSettings", "StoredStudy", "StudyNotFound", "StudyStore"]

logger = logging.getLogger(__name__)

DAY_S = 86400.0


class StudyNotFound(Exception):
    pass


class StoreFull(Exception):
    """The store holds `max_studies` studies: a new one is refused (the API answers 507)."""


@dataclass(frozen=True)
class StoreSettings:
    max_studies: int = 1000
    retention_days: float = 30.0  # a study is deleted this long after its last change
    cache_size: int = 64  # live sessions (each with its image embeddings) kept in this process's memory


@dataclass(frozen=True)
class StoredStudy:
    """A study as the database holds it: what `restore` needs to rebuild its session."""

    id: str
    model_id: str
    created_at: str
    image: bytes  # as uploaded
    image_info: ImageInfo
    probabilities: dict[str, float]  # the findings the conversation was built on (NaN: no output)
    positive: list[str]
    state: ConversationState
    prior_image: bytes | None = None  # a prior image of the same patient, as uploaded
    prior_used: bool = False  # whether the image encoder read it with the current image


@dataclass(frozen=True)
class ReportRevision:
    report: str
    source: str  # the task that wrote it ("report", "correct") or "edit"
    created_at: str


class StudyStore:
    """Studies in `database` (by default a private in-memory SQLite database, for tests and one-offs)."""

    def __init__(self, settings: StoreSettings = StoreSettings(), database: Database | None = None) -> None:
        self.settings = settings
        self.db = database if database is not None else Database.sqlite(":memory:")
        migrate(self.db)
        self._cache: OrderedDict[str, tuple[Session, str]] = OrderedDict()  # id → (session, its revision)
        self._lock = threading.Lock()
        self.purge_expired()

    def __len__(self) -> int:
        with self.db.transaction() as run:
            return run("SELECT COUNT(*) FROM studies WHERE updated_s >= ?", (self._cutoff(),)).fetchone()[0]

    # ------------------------------------------------------------------ studies
    def add(self, session: Session, image: bytes, model_id: str) -> None:
        """Store a new study; `StoreFull` when the store holds `max_studies` unexpired studies."""
        revision = uuid.uuid4().hex
        with self.db.transaction(write=True, locked=True) as run:
            self._delete_expired(run)
            count = run("SELECT COUNT(*) FROM studies", ()).fetchone()[0]
            if count >= self.settings.max_studies:
                logger.warning("study store full (%d studies): new study refused", count)
                raise StoreFull(
                    f"the study store is full ({count} studies): delete studies you no longer need, or wait "
                    f"until older ones expire ({self.settings.retention_days:g} days after their last change)"
                )
            state = session.state()
            window = json.dumps(list(session.image.window)) if session.image.window else None
            run(
                "INSERT INTO studies (id, model_id, created_at, updated_s, revision, image, image_format, "
                "image_window, probabilities, positive, report, anchor, context_start) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    model_id,
                    session.created_at,
                    time.time(),
                    revision,
                    image,
                    session.image.source_format,
                    window,
                    json.dumps({label: None if math.isnan(p) else p for label, p in session.probabilities.items()}),
                    json.dumps(session.positive),
                    state.report,
                    _turn_json(state.anchor),
                    state.context_start,
                ),
            )
            self._insert_turns(run, session.id, state.transcript, 0)
        self._cache_put(session, revision)

    def get(self, study_id: str, restore: Callable[[StoredStudy], Session]) -> Session:
        """The study's session: the cached one when the database holds the same revision, else rebuilt."""
        with self.db.transaction() as run:
            row = run(
                "SELECT revision FROM studies WHERE id = ? AND updated_s >= ?", (study_id, self._cutoff())
            ).fetchone()
        with self._lock:
            cached = self._cache.pop(study_id, None)
            if row is None:
                raise StudyNotFound(f"no study {study_id!r} (it may have expired or been deleted)")
            if cached is not None and cached[1] == row[0]:
                self._cache[study_id] = cached
                return cached[0]
        stored, revision = self._load(study_id)
        if cached is not None and _same_prior(cached[0], stored):  # changed by another process: newer conversation
            session = cached[0]
            session.restore_state(stored.state)
        else:
            session = restore(stored)
        self._cache_put(session, revision)
        return session

    def save(self, session: Session, action: Task | str) -> None:
        """Write the session's report and conversation after `action` (a task, or "edit") changed them."""
        try:
            self._save(session, str(action))
        except BaseException:
            # The session in memory may now be ahead of the database: the next get() reloads it.
            with self._lock:
                self._cache.pop(session.id, None)
            raise

    def save_prior(self, session: Session, image: bytes) -> None:
        """Store the session's prior image as uploaded (replacing any earlier one), whether the model reads it,
        and the conversation state that goes with it."""
        if session.prior is None:
            raise ValueError("the session has no prior image to store")
        state = session.state()
        revision = uuid.uuid4().hex
        try:
            with self.db.transaction(write=True) as run:
                updated = run(
                    "UPDATE studies SET updated_s = ?, revision = ?, anchor = ?, prior_image = ?, prior_used = ? "
                    "WHERE id = ?",
                    (
                        time.time(),
                        revision,
                        _turn_json(state.anchor),
                        image,
                        int(session.prior.used_by_model),
                        session.id,
                    ),
                )
                if updated.rowcount == 0:
                    raise StudyNotFound(f"no study {session.id!r} (it was deleted meanwhile)")
        except BaseException:
            with self._lock:  # as in `save`: the next get() reloads the study
                self._cache.pop(session.id, None)
            raise
        self._cache_put(session, revision)

    def prior_image(self, study_id: str) -> bytes | None:
        """The study's prior image as uploaded, or None when it has none."""
        with self.db.transaction() as run:
            row = run("SELECT prior_image FROM studies WHERE id = ?", (study_id,)).fetchone()
        if row is None:
            raise StudyNotFound(f"no study {study_id!r}")
        return None if row[0] is None else bytes(row[0])

    def delete(self, study_id: str) -> None:
        """Erase the study: its rows, image bytes, turns and revisions."""
        with self._lock:
            self._cache.pop(study_id, None)
        with self.db.transaction(write=True) as run:
            if run("DELETE FROM studies WHERE id = ?", (study_id,)).rowcount == 0:
                raise StudyNotFound(f"no study {study_id!r}")
        self.db.checkpoint()

    def image(self, study_id: str) -> bytes:
        """The study's image as uploaded."""
        with self.db.transaction() as run:
            row = run("SELECT image FROM studies WHERE id = ?", (study_id,)).fetchone()
        if row is None:
            raise StudyNotFound(f"no study {study_id!r}")
        return bytes(row[0])

    def revisions(self, study_id: str) -> list[ReportRevision]:
        """Every report the study has had, oldest first."""
        with self.db.transaction() as run:
            rows = run(
                "SELECT report, source, created_at FROM report_revisions WHERE study_id = ? ORDER BY seq",
                (study_id,),
            ).fetchall()
        return [ReportRevision(*row) for row in rows]

    def purge_expired(self) -> int:
        """Delete the studies past their retention; returns how many."""
        with self.db.transaction(write=True) as run:
            deleted = self._delete_expired(run)
        if deleted:
            self.db.checkpoint()
        return deleted

    # ------------------------------------------------------------------ internals
    def _cutoff(self) -> float:
        return time.time() - self.settings.retention_days * DAY_S

    def _delete_expired(self, run) -> int:
        deleted = run("DELETE FROM studies WHERE updated_s < ?", (self._cutoff(),)).rowcount
        if deleted:
            logger.info("%d studies deleted after %g days of retention", deleted, self.settings.retention_days)
        return deleted

    def _cache_put(self, session: Session, revision: str) -> None:
        with self._lock:
            self._cache.pop(session.id, None)
            self._cache[session.id] = (session, revision)
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)  # only the memory copy: the database keeps the study

    def _save(self, session: Session, action: str) -> None:
        state = session.state()
        revision = uuid.uuid4().hex
        with self.db.transaction(write=True) as run:
            row = run("SELECT report FROM studies WHERE id = ?", (session.id,)).fetchone()
            if row is None:
                raise StudyNotFound(f"no study {session.id!r} (it was deleted meanwhile)")
            run(
                "UPDATE studies SET updated_s = ?, revision = ?, report = ?, anchor = ?, context_start = ? "
                "WHERE id = ?",
                (time.time(), revision, state.report, _turn_json(state.anchor), state.context_start, session.id),
            )
            stored_turns = run("SELECT COUNT(*) FROM turns WHERE study_id = ?", (session.id,)).fetchone()[0]
            self._insert_turns(run, session.id, state.transcript[stored_turns:], stored_turns)
            if state.report is not None and state.report != row[0]:
                seq = run("SELECT COUNT(*) FROM report_revisions WHERE study_id = ?", (session.id,)).fetchone()[0]
                run(
                    "INSERT INTO report_revisions (study_id, seq, report, source, created_at) VALUES (?, ?, ?, ?, ?)",
                    (session.id, seq, state.report, action, _now_iso()),
                )
        self._cache_put(session, revision)

    @staticmethod
    def _insert_turns(run, study_id: str, turns: list[Turn], first_seq: int) -> None:
        for seq, turn in enumerate(turns, start=first_seq):
            run(
                "INSERT INTO turns (study_id, seq, task, user_text, prompt, answer, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (study_id, seq, str(turn.task), turn.user, turn.prompt, turn.answer, turn.created_at),
            )

    def _load(self, study_id: str) -> tuple[StoredStudy, str]:
        with self.db.transaction() as run:
            row = run(
                "SELECT model_id, created_at, revision, image, image_format, image_window, probabilities, "
                "positive, report, anchor, context_start, prior_image, prior_used FROM studies WHERE id = ?",
                (study_id,),
            ).fetchone()
            if row is None:
                raise StudyNotFound(f"no study {study_id!r} (it was deleted meanwhile)")
            turns = run(
                "SELECT task, user_text, prompt, answer, created_at FROM turns WHERE study_id = ? ORDER BY seq",
                (study_id,),
            ).fetchall()
        model_id, created_at, revision, image, fmt, window, probabilities, positive, report, anchor, start = row[:11]
        prior_image, prior_used = row[11:]
        stored = StoredStudy(
            id=study_id,
            model_id=model_id,
            created_at=created_at,
            image=bytes(image),
            image_info=ImageInfo(fmt, tuple(json.loads(window)) if window else None),
            probabilities={k: math.nan if p is None else p for k, p in json.loads(probabilities).items()},
            positive=json.loads(positive),
            state=ConversationState(report, [Turn(Task(t[0]), *t[1:]) for t in turns], _turn_from_json(anchor), start),
            prior_image=None if prior_image is None else bytes(prior_image),
            prior_used=bool(prior_used),
        )
        return stored, revision


def _same_prior(session: Session, stored: StoredStudy) -> bool:
    """Whether the session's embeddings still go with the stored prior (another process may have attached one)."""
    if session.prior is None or stored.prior_image is None:
        return session.prior is None and stored.prior_image is None
    return (
        session.prior.digest == hashlib.sha256(stored.prior_image).hexdigest()
        and session.prior.used_by_model == stored.prior_used
    )


def _turn_json(turn: Turn | None) -> str | None:
    if turn is None:
        return None
    return json.dumps(
        {
            "task": str(turn.task),
            "user": turn.user,
            "prompt": turn.prompt,
            "answer": turn.answer,
            "created_at": turn.created_at,
        }
    )


def _turn_from_json(text: str | None) -> Turn | None:
    if text is None:
        return None
    fields = json.loads(text)
    return Turn(Task(fields.pop("task")), **fields)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")  # as the turns' time stamps

"""The study service: what the REST API and the Gradio UI do with a study, in one place.

A study is one uploaded X-ray's `radialog.chat.Session`, kept in the `StudyStore` (in memory, capped in
number, expired after a time without use) whichever web layer created it. The service checks and decodes
uploads, runs every model call inside `ModelWorker.admit()`, and streams answers while it holds the model;
the API and the UI only translate their requests into these calls, and the errors into responses:
`UploadTooLarge` and other `ImageLoadError`s (the upload), other `RaDialogError`s (input the user must
change), `StudyNotFound`, `ModelNotReady` and `QueueFull`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from radialog.app.studies import StudyStore
from radialog.app.worker import ModelWorker
from radialog.chat import Session, Task
from radialog.errors import ImageLoadError, InputError
from radialog.imaging import XRay, load_xray

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class UploadTooLarge(ImageLoadError):
    """The upload is over the byte limit (the API answers 413)."""

    def __init__(self, limit: int) -> None:
        size = f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit:,} bytes"
        super().__init__(f"the file is larger than the {size} upload limit")


@dataclass(frozen=True)
class NewStudy:
    session: Session  # already stored: its `id` names the study from now on
    xray: XRay  # the image as the model read it, for display; the store keeps only the session


@dataclass(frozen=True)
class RunningTask:
    """A task admitted and prepared: its answer streams from `pieces`, which holds the model meanwhile.

    The model is given back once `pieces` is exhausted, closed or dropped; a stream closed early still
    finishes its generation first (see `Session.run`), so the model never runs two jobs at once.
    """

    session: Session
    user: str  # the user's turn as a chat window shows it
    pieces: Generator[str]

    def answer(self) -> str:
        """The whole answer, once the stream is drained (what a non-streaming request returns)."""
        return "".join(self.pieces).strip()


class StudyService:
    """Studies on one model worker and one store; keeps no state of its own."""

    def __init__(self, worker: ModelWorker, store: StudyStore, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.worker = worker
        self.store = store
        self.max_upload_bytes = max_upload_bytes

    def create_study(self, data: bytes) -> NewStudy:
        """Decode an upload (PNG, JPEG or DICOM bytes), encode it on the model and store the study."""
        if len(data) > self.max_upload_bytes:
            raise UploadTooLarge(self.max_upload_bytes)
        xray = load_xray(data)  # before queueing: bad input never waits for the model
        with self.worker.admit() as model:
            session = Session.start(model, xray)
        self.store.add(session)
        logger.info("study %s: %s image, findings %s", session.id, xray.source_format, session.positive)
        return NewStudy(session, xray)

    def get(self, study_id: str) -> Session:
        return self.store.get(study_id)

    def delete(self, study_id: str) -> None:
        self.store.delete(study_id)

    def start_task(
        self, study_id: str, task: Task, message: str = "", remove: Sequence[str] = (), add: Sequence[str] = ()
    ) -> RunningTask:
        """Admit and prepare one task now, so that a full queue or bad input raises here, before any of
        the answer is sent (the API can still answer 503 or 400); the answer then streams from `pieces`."""
        session = self.store.get(study_id)
        held = self._held_turn(session, task, message, remove, add)
        user = next(held)
        return RunningTask(session, user, held)

    def edit_report(self, study_id: str, text: str) -> Session:
        """The user's edit becomes the report the conversation continues from."""
        session = self.store.get(study_id)
        session.set_report(text)
        return session

    def export_record(self, study_id: str) -> dict:
        """The study's exportable record (`Session.record`), naming the model's source."""
        session = self.store.get(study_id)
        if session.report is None:
            raise InputError("there is no report to export yet")
        return session.record(self.worker.model_id)

    def _held_turn(
        self, session: Session, task: Task, message: str, remove: Sequence[str], add: Sequence[str]
    ) -> Generator[str]:
        # The first next() admits and prepares, and yields what the user asked. The generator then stays
        # suspended inside `admit()`: the model is held until the answer has been pulled out, or until
        # the generator is closed or dropped, which exits the `with` as for any suspended generator.
        with self.worker.admit():
            pending = session.prepare(task, message, remove=remove, add=add)
            yield pending.user
            yield from session.run(pending)

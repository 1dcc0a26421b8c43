"""The study service: what the REST API and the Gradio UI do with a study, in one place.

A study is one uploaded X-ray's `radialog.chat.Session`, kept in the `StudyStore` (the study database,
capped in number, deleted after its retention) whichever web layer created it; the service saves it after
every change, and rebuilds a study this process does not hold (after a restart, or made by another server
process) from the stored image, encoding it again inside `ModelWorker.admit()`. The service checks and decodes
uploads, encodes images inside `ModelWorker.admit()`, and streams answers inside `admit_generation()`;
the API and the UI only translate their requests into these calls, and the errors into responses:
`UploadTooLarge` and other `ImageLoadError`s (the upload), other `RaDialogError`s (input the user must
change), `StudyNotFound`, `StoreFull`, `DatabaseUnavailable`, `ModelNotReady`, `QueueFull`, the engine's
`EngineUnavailable`, `OutOfMemory` (one request's model work; the next may fit) and `GenerationTimeout`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import pydicom

from radialog.app.studies import StoredStudy, StudyStore
from radialog.app.worker import ModelWorker
from radialog.chat import PriorInfo, Session, Task, prior_is_used
from radialog.consistency import ConsistencyResult, check_consistency
from radialog.errors import ImageLoadError, InputError
from radialog.export_formats import ExportFile, export_file
from radialog.heatmap import finding_heatmap, overlay_png
from radialog.imaging import XRay, load_xray
from radialog.model.modeling import EncodedImage

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
GENERATION_TIMEOUT_S = 300.0


class GenerationTimeout(Exception):
    """An answer took longer than the generation time limit and was cancelled (the API answers 504)."""


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
    """A task admitted and prepared: its answer streams from `pieces`, which holds its place on the engine.

    The place is given back once `pieces` is exhausted, closed or dropped; a stream closed early cancels
    its generation first (see `Session.run`).
    """

    session: Session
    user: str  # the user's turn as a chat window shows it
    pieces: Generator[str]

    def answer(self) -> str:
        """The whole answer, once the stream is drained (what a non-streaming request returns)."""
        return "".join(self.pieces).strip()


def report_consistency(session: Session) -> ConsistencyResult | None:
    """The session's report against its classifier's findings (None before there is a report)."""
    if session.report is None:
        return None
    return check_consistency(session.report, session.positive, session.probabilities)


class StudyService:
    """Studies on one model worker and one store; keeps no state of its own."""

    def __init__(
        self,
        worker: ModelWorker,
        store: StudyStore,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        generation_timeout_s: float = GENERATION_TIMEOUT_S,
    ) -> None:
        self.worker = worker
        self.store = store
        self.max_upload_bytes = max_upload_bytes
        self.generation_timeout_s = generation_timeout_s

    def create_study(self, data: bytes) -> NewStudy:
        """Decode an upload (PNG, JPEG or DICOM bytes), encode it on the model and store the study."""
        if len(data) > self.max_upload_bytes:
            raise UploadTooLarge(self.max_upload_bytes)
        xray = load_xray(data)  # before queueing: bad input never waits for the model
        with self.worker.admit() as model:
            session = Session.start(model, xray, engine=self.worker.engine)
        self.store.add(session, data, self.worker.model_id)
        logger.info("study %s: %s image, findings %s", session.id, xray.source_format, session.positive)
        return NewStudy(session, xray)

    def get(self, study_id: str) -> Session:
        return self.store.get(study_id, self._restore)

    def attach_prior(self, study_id: str, data: bytes, use_prior: bool | None = None) -> Session:
        """Attach a prior image of the same patient (PNG, JPEG or DICOM bytes), replacing any earlier one.

        The image encoder reads it with the current image when `use_prior` says so, by default only when the
        weights were trained with priors (`ImageEncoderConfig.trained_with_priors`); otherwise it is kept for
        display and the embeddings stay the single image's. The findings, report and turns are kept.
        """
        if len(data) > self.max_upload_bytes:
            raise UploadTooLarge(self.max_upload_bytes)
        prior_xray = load_xray(data)  # before queueing: bad input never waits for the model
        session = self.get(study_id)
        encoder = session.model.config.image_encoder
        used = prior_is_used(encoder, use_prior)
        encoded = session.encoded
        if used or encoded.with_prior:  # a new prior to read, or an earlier one to stop reading
            xray = load_xray(self.store.image(study_id))
            with self.worker.admit() as model:
                image_embeds = model.embed_image(xray, prior_xray if used else None)
            encoded = EncodedImage(image_embeds, session.probabilities, session.positive, with_prior=used)
        session.attach_prior(PriorInfo.of(encoder, used, data), encoded)
        self.store.save_prior(session, data)
        logger.info(
            "study %s: %s prior image attached, used by the model: %s", study_id, prior_xray.source_format, used
        )
        return session

    def prior_image(self, study_id: str) -> bytes | None:
        """The study's prior image as uploaded, or None."""
        return self.store.prior_image(study_id)

    def heatmap(self, study_id: str, finding: str) -> bytes:
        """PNG: where the classifier's evidence for `finding` lies (`radialog.heatmap`), over the study's image
        as the model reads it. `InputError` for an unknown finding or a model without a classifier."""
        self.get(study_id)  # an unknown study is a 404 before any decoding
        xray = load_xray(self.store.image(study_id))
        with self.worker.admit() as model:
            heatmap = finding_heatmap(model, xray, finding)
        return overlay_png(xray, heatmap)

    def delete(self, study_id: str) -> None:
        self.store.delete(study_id)

    def start_task(
        self, study_id: str, task: Task, message: str = "", remove: Sequence[str] = (), add: Sequence[str] = ()
    ) -> RunningTask:
        """Admit and prepare one task now, so that a full queue or bad input raises here, before any of
        the answer is sent (the API can still answer 503 or 400); the answer then streams from `pieces`."""
        session = self.get(study_id)
        held = self._held_turn(session, task, message, remove, add)
        user = next(held)
        return RunningTask(session, user, held)

    def edit_report(self, study_id: str, text: str) -> Session:
        """The user's edit becomes the report the conversation continues from."""
        session = self.get(study_id)
        session.set_report(text)
        self.store.save(session, "edit")
        return session

    def export_record(self, study_id: str) -> dict:
        """The study's exportable record (`Session.record`), naming the model's source."""
        session = self.get(study_id)
        if session.report is None:
            raise InputError("there is no report to export yet")
        record = session.record(self.worker.model_id)
        record["consistency"] = report_consistency(session).to_dict()
        return record

    def export(self, study_id: str, fmt: str) -> ExportFile:
        """The exported record as a file (`radialog.export_formats`). A DICOM SR of a DICOM upload joins the
        X-ray's study and patient and cites the image; of any other upload it opens a new study."""
        record = self.export_record(study_id)
        source = None
        if fmt == "dicom-sr" and self.get(study_id).image.source_format == "dicom":
            source = pydicom.dcmread(io.BytesIO(self.store.image(study_id)), stop_before_pixels=True)
        return export_file(record, fmt, source)

    def consistency(self, study_id: str) -> ConsistencyResult:
        """The current report checked against the study's findings."""
        session = self.get(study_id)
        if session.report is None:
            raise InputError("there is no report to check yet")
        return report_consistency(session)

    def _held_turn(
        self, session: Session, task: Task, message: str, remove: Sequence[str], add: Sequence[str]
    ) -> Generator[str]:
        # The first next() admits and prepares, and yields what the user asked. The generator then stays
        # suspended inside `admit_generation()`: its place is held until the answer has been pulled out,
        # or until the generator is closed or dropped, which exits the `with` as for any suspended generator.
        with self.worker.admit_generation() as engine:
            pending = session.prepare(task, message, remove=remove, add=add)
            engine.check_available()  # an engine server that is down: refused before any of the answer is sent
            yield pending.user
            # The limit is checked as each piece arrives (the in-process engine sends one per token); leaving
            # the `closing` block cancels the generation and gives its place back at once.
            deadline = time.monotonic() + self.generation_timeout_s
            with contextlib.closing(session.run(pending)) as pieces:
                for piece in pieces:
                    if time.monotonic() > deadline:
                        limit = self.generation_timeout_s
                        logger.warning("study %s: %s cancelled after %g s", session.id, task, limit)
                        raise GenerationTimeout(f"the answer took longer than {limit:g} s")
                    yield piece
            self.store.save(session, task)

    def _restore(self, stored: StoredStudy) -> Session:
        """A stored study's session: its image encoded again, its findings and conversation as stored."""
        xray = load_xray(stored.image)
        with self.worker.admit() as model:
            encoder = model.config.image_encoder
            prior_used = stored.prior_used and encoder.accepts_prior
            if stored.prior_used and not prior_used:
                logger.warning(
                    "study %s: this model's image encoder takes no prior: reading the image alone", stored.id
                )
            prior_xray = load_xray(stored.prior_image) if prior_used else None
            image_embeds = model.embed_image(xray, prior_xray)
        if stored.model_id != self.worker.model_id:
            logger.warning(
                "study %s was made with %s, continues on %s", stored.id, stored.model_id, self.worker.model_id
            )
        # The stored findings are those the report and conversation were built on: only the embeddings are
        # computed again (with the prior when it was read), not the classifier.
        encoded = EncodedImage(image_embeds, stored.probabilities, stored.positive, with_prior=prior_used)
        prior = None if stored.prior_image is None else PriorInfo.of(encoder, prior_used, stored.prior_image)
        session = Session(model, stored.image_info, encoded, stored.id, engine=self.worker.engine, prior=prior)
        session.created_at = stored.created_at
        session.restore_state(stored.state)
        logger.info("study %s restored from the store", stored.id)
        return session

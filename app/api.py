"""The REST API: studies (an uploaded X-ray and its conversation), reports and chat turns.

The routes translate HTTP to `StudyService` calls and its errors to statuses: every error a client can
cause answers 4xx with `{"detail": "<message>"}`; a busy model or an unreachable study database answers
503 with Retry-After, a full study store 507. Studies live in the study database (see
`radialog.app.studies`); uploads are read in memory (see `radialog.app.uploads`).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from radialog.app.audit import log_access
from radialog.app.service import (
    GENERATION_TIMEOUT_S,
    MAX_UPLOAD_BYTES,
    GenerationTimeout,
    RunningTask,
    StudyService,
    UploadTooLarge,
    report_consistency,
)
from radialog.app.studies import DatabaseUnavailable, StoreFull, StudyNotFound, StudyStore
from radialog.app.uploads import DeclaredSizeLimit, read_file_field
from radialog.app.worker import ModelNotReady, ModelWorker, QueueFull
from radialog.chat import MAX_MESSAGE_CHARS, Session, Task
from radialog.consistency import ConsistencyResult, Verdict
from radialog.engines.base import EngineError, EngineUnavailable
from radialog.errors import ImageLoadError, RaDialogError
from radialog.export_formats import ExportFormat
from radialog.memory import OutOfMemory, free_memory

RETRY_AFTER_S = 10
# One line per access to a study: who, which study, what. Never the image, a message or a report.

EXAMPLE_FINDINGS = {"Cardiomegaly": 0.71, "Edema": 0.12, "No Finding": 0.05}
EXAMPLE_REPORT = "The heart is enlarged. No focal consolidation, pleural effusion or pneumothorax."


# ---------------------------------------------------------------------- schemas
class ErrorOut(BaseModel):
    detail: str = Field(examples=["not a readable image: expected PNG, JPEG or DICOM"])


class StudyCreated(BaseModel):
    id: str = Field(examples=["3f2a9c0e5b7d4e1fa2c3d4e5f6a7b8c9"])
    findings: dict[str, float | None] = Field(
        description="probability per CheXpert label (null where the classifier has no output)",
        examples=[EXAMPLE_FINDINGS],
    )
    positive_findings: list[str] = Field(examples=[["Cardiomegaly"]])
    model: str = Field(examples=["embedded:demo_checkpoint"])
    model_name: str = Field(description="which model answers (its configured name)", examples=["radialog-v1-report"])
    created_at: str = Field(examples=["2025-01-31T09:30:00+00:00"])


class TurnOut(BaseModel):
    task: Task
    user: str = Field(examples=["Is there any pleural effusion?"])
    answer: str = Field(examples=["No."])
    created_at: str


class FindingCheckOut(BaseModel):
    finding: str = Field(examples=["Pleural Effusion"])
    verdict: Verdict = Field(
        description="contradiction: report and classifier disagree; omission: a positive finding the report "
        "does not mention"
    )
    report: str = Field(description="positive, negative, uncertain or not mentioned", examples=["negative"])
    classifier_positive: bool
    probability: float | None = Field(examples=[0.97])
    sentence: str | None = Field(description="the report sentence that says it", examples=["No pleural effusion"])


class ConsistencyOut(BaseModel):
    """The report checked against the classifier's findings, finding by finding (`radialog.consistency`)."""

    consistent: bool
    counts: dict[str, int] = Field(examples=[{"agreement": 12, "contradiction": 1, "omission": 0}])
    checks: list[FindingCheckOut]


class PriorOut(BaseModel):
    """A prior image of the same patient attached to the study."""

    present: bool
    used_by_model: bool = Field(description="whether the image encoder compares the current image with it")
    notice: str = Field(
        description="what a UI shows beside the two images",
        examples=[
            "These weights were not trained with prior images: the prior is shown for comparison only, and the "
            "report reads the current image alone."
        ],
    )


class StudyOut(StudyCreated):
    report: str | None = Field(examples=[EXAMPLE_REPORT])
    consistency: ConsistencyOut | None = Field(description="the report against the findings; null before a report")
    turns: list[TurnOut]
    prior: PriorOut | None = Field(default=None, description="the attached prior image; null when there is none")


class ReportOut(BaseModel):
    id: str
    report: str = Field(examples=[EXAMPLE_REPORT])
    consistency: ConsistencyOut


class MessageIn(BaseModel):
    message: str = Field(
        default="",
        max_length=MAX_MESSAGE_CHARS,
        description="the question or message; for `correct`, a correction in words (or use `remove`/`add`)",
        examples=["Is there any pleural effusion?"],
    )
    task: Task = Field(default=Task.CHAT, description="what to do; `plain_language`/`summarize` need no message")
    remove: list[Annotated[str, Field(max_length=64)]] = Field(
        default=[], max_length=14, description="`correct`: findings the report wrongly has", examples=[["Edema"]]
    )
    add: list[Annotated[str, Field(max_length=64)]] = Field(
        default=[], max_length=14, description="`correct`: findings the report misses", examples=[[]]
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"message": "Is there any pleural effusion?"},
                {"task": "correct", "remove": ["Edema"]},
                {"task": "plain_language"},
            ]
        }
    }


class MessageOut(BaseModel):
    id: str
    task: Task
    answer: str = Field(examples=["No, there is no pleural effusion."])
    report: str | None = Field(description="the current report, after this turn", examples=[EXAMPLE_REPORT])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    model: str = Field(examples=["embedded:demo_checkpoint"])
    model_name: str | None = Field(
        default=None, description="the loaded model's configured name; null while loading", examples=["r2gengpt"]
    )
    demo_weights: bool = Field(
        description="true for presets and the embedded demo checkpoint: never trained on real radiographs"
    )
    detail: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": description}
    for code, description in [
        (401, "missing or wrong API token"),
        (404, "no such study"),
        (
            503,
            "the model is loading or busy or ran out of memory, or its LLM engine or the study database is "
            "unreachable; retry after Retry-After seconds",
        ),
    ]
}
INPUT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the request cannot be carried out (e.g. no report yet)"},
    504: {"model": ErrorOut, "description": "the answer took longer than the generation time limit"},
    **ERRORS,
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "malformed multipart data"},
    413: {"model": ErrorOut, "description": "the file is larger than the upload limit"},
    415: {"model": ErrorOut, "description": "not a PNG, JPEG or DICOM image, or a corrupt one"},
    422: {"model": ErrorOut, "description": "not a multipart/form-data body with a `file` file"},
    507: {"model": ErrorOut, "description": "the study store is full: delete studies or wait for them to expire"},
    **ERRORS,
}
# The upload is read by `read_file_field`, not by FastAPI's form parsing, so its schema is spelt out here.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "PNG, JPEG or DICOM",
                        }
                    },
                }
            }
        },
    }
}
# Module level: endpoint annotations are resolved in this module's globals (postponed annotations).
BEARER = HTTPBearer(auto_error=False, description="required when the server has RADIALOG_API_TOKEN set")
STREAM_DOC = {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "the text as it is generated"}


# ---------------------------------------------------------------------- app
def create_api(
    worker: ModelWorker,
    store: StudyStore,
    api_token: str | None = None,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    generation_timeout_s: float = GENERATION_TIMEOUT_S,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The FastAPI app with /healthz, /readyz and the /v1 studies API (Bearer token when `api_token`).

    Its studies are `store`'s: a UI given a `StudyService` on the same worker and store shares them.
    """
    service = StudyService(worker, store, max_upload_bytes, generation_timeout_s)
    api = FastAPI(
        lifespan=lifespan,
        title="RaDialog API",
        summary="Draft chest X-ray reports and a conversation about them. Research prototype: not for clinical use.",
        version="1",
    )
    _add_error_handlers(api)
    api.add_middleware(DeclaredSizeLimit, max_upload_bytes=service.max_upload_bytes)
    api.include_router(_health_router(worker))
    api.include_router(_studies_router(service, api_token))
    return api


def _add_error_handlers(api: FastAPI) -> None:
    def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    retry = {"Retry-After": str(RETRY_AFTER_S)}
    api.add_exception_handler(StudyNotFound, lambda _, err: error(404, str(err)))
    api.add_exception_handler(StoreFull, lambda _, err: error(507, str(err)))
    api.add_exception_handler(DatabaseUnavailable, lambda _, err: error(503, str(err), retry))
    api.add_exception_handler(QueueFull, lambda _, err: error(503, f"the server is busy ({err})", retry))
    api.add_exception_handler(ModelNotReady, lambda _, err: error(503, str(err), retry))
    api.add_exception_handler(EngineUnavailable, lambda _, err: error(503, f"the LLM is unavailable: {err}", retry))
    api.add_exception_handler(EngineError, lambda _, err: error(502, f"the LLM engine failed: {err}"))
    api.add_exception_handler(UploadTooLarge, lambda _, err: error(413, str(err)))  # an ImageLoadError too
    api.add_exception_handler(ImageLoadError, lambda _, err: error(415, str(err)))
    api.add_exception_handler(RaDialogError, lambda _, err: error(400, str(err)))
    api.add_exception_handler(GenerationTimeout, lambda _, err: error(504, f"{err}; it was cancelled"))

    def out_of_memory(_: Request, err: OutOfMemory) -> JSONResponse:
        free_memory()  # the failed job's tensors are unreferenced by now: their cached blocks can go
        return error(503, f"the server ran out of memory for this request ({err}); retry", retry)

    api.add_exception_handler(OutOfMemory, out_of_memory)


def _health_router(worker: ModelWorker) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=Health, summary="the server is up")
    def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        response_model=Readiness,
        summary="the model is loaded",
        responses={503: {"model": Readiness, "description": "the model is still loading or failed"}},
    )
    def readyz() -> Response:
        body = Readiness(
            ready=worker.ready, model=worker.model_id, model_name=worker.model_name, demo_weights=worker.is_demo
        )
        if not worker.ready:
            try:
                worker.model  # noqa: B018 — its error says whether it is loading or failed
            except ModelNotReady as err:
                body.detail = str(err)
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse(body.model_dump())

    return router


def _studies_router(service: StudyService, api_token: str | None) -> APIRouter:
    def check_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        if api_token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), api_token.encode()):
            raise HTTPException(401, "missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})

    # Names the token without revealing it: its hash's first 8 hex digits.
    token_id = hashlib.sha256(api_token.encode()).hexdigest()[:8] if api_token else None

    def who(request: Request) -> str:
        host = request.client.host if request.client else "unknown"
        return f"{host} token={token_id}" if token_id else host

    def audit(request: Request) -> None:
        route = request.scope.get("route")
        action = f"{request.method} {getattr(route, 'path', request.url.path)}"
        log_access(who(request), request.path_params.get("study_id"), action)

    # Router dependencies run before the route: the token is checked before an upload is read, and an
    # access is logged once the token is accepted.
    router = APIRouter(prefix="/v1", tags=["studies"], dependencies=[Depends(check_token), Depends(audit)])
    model_id = service.worker.model_id

    @router.post(
        "/studies",
        status_code=201,
        response_model=StudyCreated,
        responses=UPLOAD_ERRORS,
        summary="upload a chest X-ray (PNG, JPEG or DICOM) and get the predicted findings",
        openapi_extra=UPLOAD_BODY,
    )
    async def create_study(request: Request) -> StudyCreated:
        data = await read_file_field(request, "file", service.max_upload_bytes)
        # Decoding and encoding block: off the event loop, as FastAPI runs the other (plain) routes.
        study = await run_in_threadpool(service.create_study, data)
        log_access(who(request), study.session.id, "created")
        return _study_created(study.session, model_id)

    @router.get("/studies/{study_id}", response_model=StudyOut, responses=ERRORS, summary="a study's state")
    def get_study(study_id: str) -> StudyOut:
        return _study_out(service.get(study_id), model_id)

    @router.post(
        "/studies/{study_id}/prior",
        response_model=StudyOut,
        responses={k: v for k, v in UPLOAD_ERRORS.items() if k != 507},
        summary="attach a prior X-ray of the same patient (PNG, JPEG or DICOM), replacing any earlier one",
        openapi_extra=UPLOAD_BODY,
    )
    async def attach_prior(
        request: Request,
        study_id: str,
        use_prior: Annotated[
            bool | None,
            Query(
                description="feed the prior to the image encoder (BioViL-T only); default: only when the weights "
                "were trained with priors, else it is kept for comparison only"
            ),
        ] = None,
    ) -> StudyOut:
        data = await read_file_field(request, "file", service.max_upload_bytes)
        session = await run_in_threadpool(service.attach_prior, study_id, data, use_prior)
        return _study_out(session, model_id)

    @router.get(
        "/studies/{study_id}/consistency",
        response_model=ConsistencyOut,
        responses=INPUT_ERRORS,
        summary="the current report checked against the predicted findings: contradictions and omissions",
    )
    def get_consistency(study_id: str) -> ConsistencyOut:
        return _consistency_out(service.consistency(study_id))

    @router.get(
        "/studies/{study_id}/export",
        responses={
            **INPUT_ERRORS,
            200: {"description": "the record as JSON, plain text, a FHIR R4 DiagnosticReport or a DICOM SR"},
        },
        response_class=Response,
        summary="download the report: json, txt, fhir (DiagnosticReport) or dicom-sr (Comprehensive SR)",
    )
    def export_study(study_id: str, fmt: Annotated[ExportFormat, Query(alias="format")] = "json") -> Response:
        exported = service.export(study_id, fmt)
        disposition = f'attachment; filename="{exported.filename}"'
        return Response(exported.content, media_type=exported.media_type, headers={"Content-Disposition": disposition})

    @router.get(
        "/studies/{study_id}/heatmap",
        responses={**INPUT_ERRORS, 200: {"content": {"image/png": {}}, "description": "the overlay, PNG"}},
        response_class=Response,
        summary="where the classifier sees a finding: a class-activation map over the image, as PNG",
    )
    def get_heatmap(
        study_id: str, finding: Annotated[str, Query(description="a CheXpert label, e.g. Pleural Effusion")]
    ) -> Response:
        return Response(service.heatmap(study_id, finding), media_type="image/png")

    @router.delete("/studies/{study_id}", status_code=204, responses=ERRORS, summary="forget a study")
    def delete_study(study_id: str) -> Response:
        service.delete(study_id)
        return Response(status_code=204)

    @router.post(
        "/studies/{study_id}/report",
        response_model=ReportOut,
        responses={**INPUT_ERRORS, 200: STREAM_DOC},
        summary="generate the report (replaces any earlier one)",
    )
    def create_report(
        study_id: str, stream: Annotated[bool, Query(description="stream text/plain as it is generated")] = False
    ):
        running = service.start_task(study_id, Task.REPORT)
        if stream:
            return _text_stream(running)
        report = running.answer()
        return ReportOut(
            id=running.session.id, report=report, consistency=_consistency_out(report_consistency(running.session))
        )

    @router.post(
        "/studies/{study_id}/messages",
        response_model=MessageOut,
        responses={**INPUT_ERRORS, 200: STREAM_DOC},
        summary="one chat turn: a question, a correction, plain language, a summary or free chat",
    )
    def post_message(
        study_id: str,
        body: MessageIn,
        stream: Annotated[bool, Query(description="stream text/plain as it is generated")] = False,
    ):
        running = service.start_task(study_id, body.task, body.message, body.remove, body.add)
        if stream:
            return _text_stream(running)
        answer = running.answer()
        return MessageOut(id=running.session.id, task=body.task, answer=answer, report=running.session.report)

    return router


def _study_created(session: Session, model_id: str) -> StudyCreated:
    return StudyCreated(
        id=session.id,
        findings={label: None if math.isnan(p) else round(p, 4) for label, p in session.probabilities.items()},
        positive_findings=session.positive,
        model=model_id,
        model_name=session.model.config.name,
        created_at=session.created_at,
    )


def _study_out(session: Session, model_id: str) -> StudyOut:
    turns = [TurnOut(task=t.task, user=t.user, answer=t.answer, created_at=t.created_at) for t in session.transcript]
    prior = session.prior
    return StudyOut(
        **_study_created(session, model_id).model_dump(),
        report=session.report,
        consistency=_consistency_out(report_consistency(session)),
        turns=turns,
        prior=None if prior is None else PriorOut(present=True, used_by_model=prior.used_by_model, notice=prior.notice),
    )


def _consistency_out(result: ConsistencyResult | None) -> ConsistencyOut | None:
    return None if result is None else ConsistencyOut(**result.to_dict())


def _text_stream(running: RunningTask) -> StreamingResponse:
    """The answer as text/plain; the task was admitted and prepared already, so errors got their status."""
    return StreamingResponse(_pieces_in_threadpool(running.pieces), media_type="text/plain; charset=utf-8")


async def _pieces_in_threadpool(pieces: Generator[str]) -> AsyncIterator[str]:
    # Starlette pulls a plain iterator from worker threads, but never closes it when the client leaves:
    # suspended inside `worker.admit()`, it would hold the model until the garbage collector found it.
    # Closing it here finishes the generation (`Session.run`) and gives the model back, in a worker thread
    # too, since that may take a while and the event loop serves every other request meanwhile.
    try:
        async for piece in iterate_in_threadpool(pieces):
            yield piece
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(pieces.close)

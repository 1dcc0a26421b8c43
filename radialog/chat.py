"""The conversation engine: one `Session` per study, independent of any UI or server.

A session encodes its image once (the image embeddings plus any predicted findings) and then runs
tasks on it, each with RaDialog's prompt wording: generate the report, correct it, answer a question,
explain it in plain language, summarize it, or chat freely.

What the model sees (the context rule)
--------------------------------------
    system prompt
    anchor turn:   the first user turn, which carries the `<IMG>` positions and the predicted
                   findings, and its answer. Once a report exists this is the report instruction
                   answered by the *current* report.
    context turns: the turns since the report last changed, oldest first
    the new user message, open assistant turn

Every change of the report (generated, corrected, or edited by the user) becomes the answer of the
anchor turn and empties the context turns: they discussed a report that no longer exists, and the
conversation continues from the new one. When the prompt would not leave room for the task's answer in
the LLM context, the oldest context turns are dropped first, one at a time; the anchor turn and the new
message are never dropped (if they alone do not fit, `InputError`). The transcript keeps every turn
for display and export regardless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from radialog.engines.base import LLMEngine
from radialog.engines.transformers_engine import one_at_a_time
from radialog.errors import ContextOverflow, InputError
from radialog.imaging import XRay
from radialog.model.configuration import ImageEncoderConfig
from radialog.model.modeling import EncodedImage, RaDialogModel
from radialog.prompts import Conversation, build_correction_prompt, build_finding_question

logger = logging.getLogger(__name__)

# One template each from RaDialog's instruct prompts (data/instruct_prompts/EL_prompts.csv and
# SU_prompts.csv), word for word: the released adapter was tuned on exactly these phrasings.
PLAIN_LANGUAGE_PROMPT = "Please rewrite this report in simple language."
SUMMARY_PROMPT = "Summarize this report with bullet points."

MAX_MESSAGE_CHARS = 4000

# What a UI says beside a prior image, by how the model reads it (see `PriorInfo.of`).
PRIOR_COMPARED = (
    "The image encoder compares the current image with this prior (BioViL-T's temporal input), and the "
    "prompt says a prior exists."
)
PRIOR_UNTRAINED_BUT_USED = (
    "The prior is fed to the image encoder as asked, but these weights were not trained with prior images: "
    "answers may be less reliable than from the current image alone."
)
PRIOR_FOR_COMPARISON_ONLY = (
    "These weights were not trained with prior images: the prior is shown for comparison only, and the "
    "report reads the current image alone."
)
PRIOR_NOT_ASKED = "The prior is shown for comparison only: as asked, the report reads the current image alone."
PRIOR_NOT_ACCEPTED = (
    "This model's image encoder takes no prior image: the prior is shown for comparison only, and the report "
    "reads the current image alone."
)


class Task(StrEnum):
    REPORT = "report"
    CORRECT = "correct"
    QUESTION = "question"
    PLAIN_LANGUAGE = "plain_language"
    SUMMARIZE = "summarize"
    CHAT = "chat"


# Tasks that rewrite the report: their answer becomes the current report.
REPORT_TASKS = (Task.REPORT, Task.CORRECT)
# Tasks that only make sense once there is a report to work on.
NEEDS_REPORT = (Task.CORRECT, Task.PLAIN_LANGUAGE, Task.SUMMARIZE)


@dataclass
class Turn:
    task: Task
    user: str  # what the user asked, as shown in a chat window
    prompt: str  # what the model was given (the anchor turn's carries the image placeholders)
    answer: str
    created_at: str = field(default_factory=lambda: _now())


@dataclass
class PendingTurn:
    """A prepared, not yet answered turn: the full conversation and the answer's token budget."""

    task: Task
    user: str
    prompt: str
    conversation: Conversation
    max_new_tokens: int
    dropped_turns: int  # context turns left out to fit the LLM context
    min_new_tokens: int = 0


@dataclass(frozen=True)
class ImageInfo:
    """What a session keeps of its X-ray: the record's image metadata, never the pixels.

    Once encoded, the embeddings stand for the image in every turn: keeping the decoded array (megabytes
    for a DICOM film) in each stored study would only cost the server memory.
    """

    source_format: str  # "png", "jpeg", "dicom", ...
    window: tuple[float, float] | None = None  # DICOM window (center, width) that was applied, if any

    @classmethod
    def of(cls, xray: XRay) -> ImageInfo:
        return cls(xray.source_format, xray.window)


def prior_is_used(encoder: ImageEncoderConfig, use_prior: bool | None = None) -> bool:
    """Whether a prior image goes into the image encoder: as the caller asks, else only when the weights were
    trained with priors (RaDialog v1's were not: single-image behaviour by default)."""
    if use_prior and not encoder.accepts_prior:
        raise InputError(f"this model's {encoder.kind!r} image encoder takes no prior image")
    return encoder.trained_with_priors if use_prior is None else use_prior


@dataclass(frozen=True)
class PriorInfo:
    """A prior image of the same patient attached to a session (its bytes stay in the study store)."""

    used_by_model: bool  # whether the image embeddings compare the current image with it
    notice: str  # the sentence a UI shows beside the two images
    digest: str  # SHA-256 of the upload: tells a replaced prior from this one

    @classmethod
    def of(cls, encoder: ImageEncoderConfig, used_by_model: bool, data: bytes) -> PriorInfo:
        if used_by_model:
            notice = PRIOR_COMPARED if encoder.trained_with_priors else PRIOR_UNTRAINED_BUT_USED
        elif not encoder.accepts_prior:
            notice = PRIOR_NOT_ACCEPTED
        else:
            notice = PRIOR_NOT_ASKED if encoder.trained_with_priors else PRIOR_FOR_COMPARISON_ONLY
        return cls(used_by_model, notice, hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class ConversationState:
    """What a session's next prompt is built from besides its image: enough to store it and restore it."""

    report: str | None
    transcript: list[Turn]
    anchor: Turn | None
    context_start: int  # the context turns are transcript[context_start:] (see `Session._commit`)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Session:
    """One study: its image's metadata, cached embeddings and findings, the current report and the turns.

    The model builds each turn's prompt embeddings and `engine` generates the answer (by default the
    model's own LLM in this process, one answer at a time). Not thread-safe: the caller runs one turn of
    a session at a time; turns of different sessions may run at once on a shared engine.
    """

    def __init__(
        self,
        model: RaDialogModel,
        image: ImageInfo,
        encoded: EncodedImage,
        session_id: str | None = None,
        engine: LLMEngine | None = None,
        prior: PriorInfo | None = None,
    ):
        self.model = model
        self.engine = engine if engine is not None else one_at_a_time(model)
        self.image = image
        self.encoded = encoded
        self.prior = prior
        self.id = session_id or uuid.uuid4().hex
        self.created_at = _now()
        self.transcript: list[Turn] = []
        self._anchor: Turn | None = None
        self._context: list[Turn] = []
        self.report: str | None = None

    @classmethod
    def start(
        cls, model: RaDialogModel, xray: XRay, session_id: str | None = None, engine: LLMEngine | None = None
    ) -> Session:
        """Encode the image once; every later turn reuses these embeddings (the pixels are not kept)."""
        return cls(model, ImageInfo.of(xray), model.encode_image(xray), session_id, engine)

    # ------------------------------------------------------------------ state
    @property
    def probabilities(self) -> dict[str, float]:
        return self.encoded.probabilities

    @property
    def positive(self) -> list[str]:
        return self.encoded.positive

    def set_report(self, text: str) -> None:
        """The user's edited report replaces the assistant's report turn; the conversation goes on from it."""
        text = text.strip()
        if not text:
            raise InputError("the report is empty")
        if text == self.report:
            return
        self._anchor = Turn(Task.REPORT, "(report edited by the user)", self._report_prompt(), text)
        self._context = []
        self.report = text
        logger.debug("session %s: report replaced by the user's edit", self.id)

    def attach_prior(self, prior: PriorInfo, encoded: EncodedImage) -> None:
        """A prior image joins the study with `encoded`, the current image's encoding that goes with it (compared
        with the prior when it is used, else the single image's). The report and the turns are kept; the anchor
        turn's prompt is reworded so that it says a prior exists exactly when the embeddings read one."""
        if encoded.with_prior != prior.used_by_model:
            raise ValueError("the encoding must read the prior exactly when the prior is used by the model")
        old_report_prompt, old_prefix = self._report_prompt(), self._image_prefix()
        self.encoded, self.prior = encoded, prior
        if self._anchor is not None:
            prompt = self._anchor.prompt
            if prompt == old_report_prompt:
                prompt = self._report_prompt()
            elif prompt.startswith(old_prefix):
                prompt = self._image_prefix() + prompt[len(old_prefix) :]
            self._anchor = dataclasses.replace(self._anchor, prompt=prompt)
        logger.debug("session %s: prior attached, used by the model: %s", self.id, prior.used_by_model)

    def state(self) -> ConversationState:
        # The context turns are always the transcript's last ones: each is appended to both, and a report
        # change or a dropped turn only shortens the context from the front.
        return ConversationState(
            self.report, list(self.transcript), self._anchor, len(self.transcript) - len(self._context)
        )

    def restore_state(self, state: ConversationState) -> None:
        """Continue from a stored state (after a restart, or a turn another server process added)."""
        self.report = state.report
        self.transcript = list(state.transcript)
        self._anchor = state.anchor
        self._context = self.transcript[state.context_start :]

    def record(self, model_id: str | None = None) -> dict:
        """The exportable record: findings, report, transcript, model and time stamp."""
        return {
            "study_id": self.id,
            "created_at": self.created_at,
            "exported_at": _now(),
            "model": self.model.config.name,
            "model_id": model_id or self.model.config.name,
            "image": {"format": self.image.source_format, "window": self.image.window},
            "prior": None
            if self.prior is None
            else {"present": True, "used_by_model": self.prior.used_by_model, "notice": self.prior.notice},
            "findings": {label: _json_probability(p) for label, p in self.probabilities.items()},
            "positive_findings": list(self.positive),
            "report": self.report,
            "turns": [
                {"task": str(t.task), "user": t.user, "answer": t.answer, "created_at": t.created_at}
                for t in self.transcript
            ],
        }

    # ------------------------------------------------------------------ turns
    def prepare(
        self,
        task: Task | str,
        text: str | None = None,
        remove: Sequence[str] = (),
        add: Sequence[str] = (),
    ) -> PendingTurn:
        """Build the prompt for one task; raises `InputError` for anything the user must change.

        `text` is the question or chat message (QUESTION, CHAT), or a free-text correction (CORRECT
        without `remove`/`add`). A QUESTION without text and with one finding in `add` asks RaDialog's
        finding question ("Is there any edema?").
        """
        task = Task(task)
        text = (text or "").strip()
        if len(text) > MAX_MESSAGE_CHARS:
            raise InputError(f"the message has {len(text)} characters, over the limit of {MAX_MESSAGE_CHARS}")
        if task in NEEDS_REPORT and self.report is None:
            raise InputError(f"'{task}' needs a report: generate one first")
        settings = self.model.config.generation
        if task is Task.REPORT:
            pending = self._fit(
                task, "Generate report", self._report_prompt(), settings.report_max_new_tokens, with_history=False
            )
            pending.min_new_tokens = settings.report_min_new_tokens
            return pending
        if task is Task.CORRECT:
            if remove or add:
                prompt = build_correction_prompt(remove=list(remove), add=list(add))
            elif text:
                prompt = text
            else:
                raise InputError("a correction needs findings to add or remove, or a correction in words")
            return self._fit(task, prompt, prompt, settings.correction_max_new_tokens)
        if task is Task.PLAIN_LANGUAGE:
            return self._fit(task, "Plain language", PLAIN_LANGUAGE_PROMPT, settings.chat_max_new_tokens)
        if task is Task.SUMMARIZE:
            return self._fit(task, "Summarize", SUMMARY_PROMPT, settings.chat_max_new_tokens)
        budget, prompt = settings.chat_max_new_tokens, text
        if task is Task.QUESTION and not text and len(add) == 1:
            # RaDialog's wording, with the leading space its evaluation put after "USER: ".
            prompt, budget = build_finding_question(add[0]), settings.yes_no_max_new_tokens
            text = prompt.strip()
        if not text:
            raise InputError("the message is empty")
        if self._anchor is None:
            # No report yet: this question becomes the anchor turn and carries the image.
            return self._fit(task, text, self._image_prefix() + text, budget, with_history=False)
        return self._fit(task, text, prompt, budget)

    def run(self, pending: PendingTurn) -> Iterator[str]:
        """Stream the answer's text pieces; the turn is recorded once the generation has finished.

        If the consumer stops early (a client went away), the generation is cancelled and the turn is not
        recorded: a truncated report must not become the one the conversation continues from. By the time
        the stream is closed, the engine has stopped working on it.
        """
        inputs_embeds = self.model.prompt_embeds(
            pending.conversation, self.encoded.image_embeds, pending.max_new_tokens
        )
        # A minimum length is a report-task setting (R2GenGPT's 80 tokens).
        settings = self.model.decoding_settings(pending.max_new_tokens, pending.min_new_tokens)
        pieces: list[str] = []
        with contextlib.closing(self.engine.stream(inputs_embeds, settings)) as stream:
            for piece in stream:
                pieces.append(piece)
                yield piece
        self._commit(pending, "".join(pieces).strip())

    def ask(
        self, task: Task | str, text: str | None = None, remove: Sequence[str] = (), add: Sequence[str] = ()
    ) -> str:
        """Prepare and run one turn, returning the whole answer."""
        pending = self.prepare(task, text, remove=remove, add=add)
        return "".join(self.run(pending)).strip()

    # ------------------------------------------------------------------ internals
    def _report_prompt(self) -> str:
        return self.model.processor.report_prompt(self.encoded.predicted_findings, self.encoded.with_prior)

    def _image_prefix(self) -> str:
        return self.model.processor.image_prefix(self.encoded.predicted_findings, self.encoded.with_prior)

    def _fit(self, task: Task, user: str, prompt: str, max_new_tokens: int, with_history: bool = True) -> PendingTurn:
        """The conversation for `prompt`, dropping the oldest context turns until it fits the context."""
        anchor_turn = self._anchor if with_history else None
        context = list(self._context) if anchor_turn is not None else []
        dropped = 0
        while True:
            conversation = Conversation()
            for turn in ([anchor_turn] if anchor_turn else []) + context:
                conversation.add_user(turn.prompt)
                conversation.add_assistant(turn.answer)
            conversation.add_user(prompt)
            conversation.add_assistant(None)
            try:
                self.model.prompt_ids(conversation, max_new_tokens)
                break
            except ContextOverflow as overflow:
                if not context:
                    raise InputError(
                        f"the message does not fit the model's context ({overflow.length} tokens, "
                        f"{overflow.budget} free): shorten it"
                    ) from None
            context.pop(0)
            dropped += 1
        if dropped:
            logger.info("session %s: dropped the %d oldest turn(s) to fit the context", self.id, dropped)
        return PendingTurn(task, user, prompt, conversation, max_new_tokens, dropped)

    def _commit(self, pending: PendingTurn, answer: str) -> None:
        turn = Turn(pending.task, pending.user, pending.prompt, answer)
        self.transcript.append(turn)
        if pending.task in REPORT_TASKS:
            self.report = answer
            self._anchor = Turn(Task.REPORT, turn.user, self._report_prompt(), answer)
            self._context = []
        elif self._anchor is None:
            self._anchor = turn
        else:
            self._context.append(turn)
            # Keep in step with the prompt actually used: turns dropped to fit stay dropped.
            if pending.dropped_turns:
                self._context = self._context[pending.dropped_turns :]


def _json_probability(p: float) -> float | None:
    return None if p != p else round(p, 4)  # NaN (no classifier output for the label) → null

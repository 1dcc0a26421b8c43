"""The in-process engine: the model's own LLM through transformers' `generate()`, batching waiting requests.

Requests that arrive while the LLM is busy wait; when it is free, a scheduler thread takes the waiting
requests (up to `max_batch_size` with the same decoding settings) and runs them as one left-padded
batch (`left_pad`), streaming each row's text to its own request as it is decoded. Every row decodes as
it would alone: greedy answers equal one-at-a-time `generate()`.

Rows may have different token budgets: the batch runs to the largest, and a row stops at its own
(a stopping criterion per row), or when its request is cancelled. Requests arriving during a batch
wait for the next one (static batching: transformers' `generate()` cannot take rows in mid-flight).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from radialog.engines.base import DecodingSettings, EngineError, LLMEngine
from radialog.memory import OutOfMemory, surviving_out_of_memory
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)

GENERATION_TIMEOUT_S = 600.0  # longest wait for the next piece before a stream gives up
_END = object()  # queued after a request's last piece


@dataclass(eq=False)  # a request is itself, whatever its tensors hold
class _Request:
    inputs_embeds: torch.Tensor  # (T, hidden)
    settings: DecodingSettings
    pieces: queue.Queue = field(default_factory=queue.Queue)  # text pieces, then _END or an exception
    cancelled: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)  # the LLM no longer works on it
    token_ids: list[int] = field(default_factory=list)
    sent: str = ""  # text handed out so far

    @property
    def batch_key(self) -> DecodingSettings:
        """Requests with equal keys share a batch: everything but the greedy budget, which is per row."""
        greedy = self.settings.num_beams == 1
        return replace(self.settings, max_new_tokens=0) if greedy else self.settings

    def send_text(self, text: str, final: bool) -> None:
        """Hand out what `text` (the whole answer so far) adds; before the end, trailing whitespace and an
        incomplete character wait, since the next token may still change how they decode."""
        if not final:
            text = text.rstrip().removesuffix("\ufffd")
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.pieces.put(text[len(self.sent) :])
            self.sent = text
        elif final and not text.startswith(self.sent):
            logger.debug("streamed text %r is not a prefix of the decoded answer %r", self.sent, text)

    def end(self, error: BaseException | None = None) -> None:
        if not self.stopped.is_set():
            self.pieces.put(error if error is not None else _END)
            self.stopped.set()


class _BatchStreamer(BaseStreamer):
    """Receives each step's new tokens (one per row) and streams every row's text to its request."""

    def __init__(self, batch: list[_Request], tokenizer) -> None:
        self.batch = batch
        self.tokenizer = tokenizer

    def put(self, value: torch.Tensor) -> None:
        if value.ndim > 1:  # generate() first hands over the prompt's ids: none with inputs_embeds only
            return
        for request, token in zip(self.batch, value.tolist(), strict=True):
            if request.stopped.is_set():
                continue
            if request.cancelled.is_set():
                request.end()
                continue
            done = token == request.settings.eos_token_id
            if not done:
                request.token_ids.append(token)
                done = len(request.token_ids) >= request.settings.max_new_tokens
            request.send_text(self.decode(request), final=done)
            if done:
                request.end()

    def end(self) -> None:
        for request in self.batch:
            if not request.stopped.is_set():
                request.send_text(self.decode(request), final=True)
                request.end()

    def decode(self, request: _Request) -> str:
        return self.tokenizer.decode(request.token_ids, skip_special_tokens=True)


class _RowsStopped(StoppingCriteria):
    """Marks a row finished once its request has ended (its own budget, or cancelled)."""

    def __init__(self, batch: list[_Request]) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        stopped = [r.stopped.is_set() or r.cancelled.is_set() for r in self.batch]
        return torch.tensor(stopped, dtype=torch.bool, device=input_ids.device)


def pad_embedding(model: RaDialogModel) -> torch.Tensor:
    """(hidden,): the pad token's input embedding, what fills the left of the shorter rows."""
    pad_id = torch.tensor([model.tokenizer.pad_token_id], device=model.device)
    return model.language_model.get_input_embeddings()(pad_id)[0]


def left_pad(rows: list[torch.Tensor], pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts' (T_i, hidden) embeddings → (B, T, hidden) left-padded with `pad`, and the (B, T) 0/1 mask.

    generate() derives the position ids from the mask, so every row decodes as it would alone.
    """
    length = max(row.shape[0] for row in rows)
    embeds = torch.stack([torch.cat([pad.expand(length - r.shape[0], -1).to(r.dtype), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(length - r.shape[0]), torch.ones(r.shape[0])]) for r in rows])
    return embeds, mask.to(device=embeds.device, dtype=torch.long)


class TransformersEngine(LLMEngine):
    """`model`'s LLM in this process (CPU or GPU), up to `max_batch_size` requests per `generate()` call.

    A request that finds the LLM idle waits `batch_window_s` for others arriving with it (sessions that
    start together), then runs. The scheduler thread lives only while there is work.
    """

    def __init__(self, model: RaDialogModel, max_batch_size: int = 8, batch_window_s: float = 0.01) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self.model = model
        self.max_batch_size = self.max_concurrent = max_batch_size
        self.batch_window_s = batch_window_s if max_batch_size > 1 else 0.0
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._scheduler: threading.Thread | None = None
        self._pad: torch.Tensor | None = None

    def stream(self, inputs_embeds: torch.Tensor, settings: DecodingSettings) -> Generator[str]:
        # Beam search cannot stream (the best beam is known only at the end): its answer comes in one piece.
        request = _Request(inputs_embeds, settings)
        self._submit(request)
        try:
            while (item := self._next_item(request)) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._cancel(request)

    # ------------------------------------------------------------------ scheduling
    def _next_item(self, request: _Request):
        try:
            return request.pieces.get(timeout=GENERATION_TIMEOUT_S)
        except queue.Empty:
            raise EngineError(f"no text from the LLM for {GENERATION_TIMEOUT_S:.0f} s") from None

    def _submit(self, request: _Request) -> None:
        with self._lock:
            self._waiting.append(request)
            if self._scheduler is None:
                self._scheduler = threading.Thread(target=self._schedule, name="transformers-engine", daemon=True)
                self._scheduler.start()

    def _cancel(self, request: _Request) -> None:
        """Stop working on `request` (a consumer that closed its stream); returns once the LLM has let it go."""
        with self._lock:
            if request in self._waiting:  # not started: nothing to stop
                self._waiting.remove(request)
                return
        if not request.stopped.is_set():
            request.cancelled.set()  # the row ends at the batch's next step
            request.stopped.wait()

    def _schedule(self) -> None:
        while True:
            if self.batch_window_s and len(self._waiting) < self.max_batch_size:
                time.sleep(self.batch_window_s)
            with self._lock:
                batch = self._take_batch()
                if not batch:
                    self._scheduler = None
                    return
            try:
                with surviving_out_of_memory(f"generating {len(batch)} answer(s)"):
                    self._run(batch)
            except OutOfMemory as err:  # answered with 503: the next batch may well fit
                for request in batch:
                    request.end(OutOfMemory(str(err)))
            except Exception as err:  # a failed batch fails its requests, never the ones after it
                logger.exception("generation failed for a batch of %d", len(batch))
                for request in batch:
                    request.end(EngineError(f"generation failed: {err}"))

    def _take_batch(self) -> list[_Request]:
        """The oldest waiting request and those that may share its batch, in order of arrival."""
        if not self._waiting:
            return []
        key = self._waiting[0].batch_key
        batch = [r for r in self._waiting if r.batch_key == key][: self.max_batch_size]
        self._waiting = [r for r in self._waiting if r not in batch]
        return batch

    # ------------------------------------------------------------------ one batch
    @torch.no_grad()
    def _run(self, batch: list[_Request]) -> None:
        model = self.model
        if self._pad is None:
            self._pad = pad_embedding(model)
        embeds, mask = left_pad([r.inputs_embeds for r in batch], self._pad)
        budget = max(r.settings.max_new_tokens for r in batch)
        kwargs = replace(batch[0].settings, max_new_tokens=budget).generate_kwargs()
        if batch[0].settings.num_beams > 1:
            output = model.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
            texts = model.tokenizer.batch_decode(output, skip_special_tokens=True)
            for request, text in zip(batch, texts, strict=True):
                request.send_text(text, final=True)
                request.end()
            return
        streamer = _BatchStreamer(batch, model.tokenizer)
        model.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_RowsStopped(batch)]),
            **kwargs,
        )
        streamer.end()


def one_at_a_time(model: RaDialogModel) -> TransformersEngine:
    """The in-process engine without batching: one answer at a time, as a single user or the plain server
    has it."""
    return TransformersEngine(model, max_batch_size=1)

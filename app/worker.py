"""The model worker: owns the one model and its LLM engine, loads them in the background, and admits jobs.

As in LLaVA's serve split, the web layers (API, UI) never touch the model directly: the study service
encodes images inside `worker.admit()` (one job on the model at a time) and generates answers inside
`worker.admit_generation()`: up to the engine's `max_concurrent` generations side by side, which a
batching engine serves together. Both bound how many requests may wait; a request that finds the queue
full is refused at once (the API answers 503 with Retry-After) instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from radialog.engines.base import LLMEngine
from radialog.engines.transformers_engine import one_at_a_time
from radialog.memory import surviving_out_of_memory
from radialog.model.loading import ModelSource
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)


class ModelNotReady(Exception):
    """The model is still loading, or failed to load."""


class QueueFull(Exception):
    """Too many requests are already waiting for the model."""


class _Slots:
    """`capacity` jobs at once, at most `max_waiting` more queued behind them, each waiting `timeout_s` at most."""

    def __init__(self, capacity: int, max_waiting: int, timeout_s: float, what: str) -> None:
        self.capacity, self.max_waiting, self.timeout_s, self.what = capacity, max_waiting, timeout_s, what
        # A semaphore, not an RLock: a stream resumes on whichever thread pulls it next, so the thread
        # that releases a slot need not be the one that acquired it.
        self._free = threading.BoundedSemaphore(capacity)
        self._mutex = threading.Lock()
        self._pending = 0  # running jobs too

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._mutex:
            if self._pending >= self.capacity + self.max_waiting:
                raise QueueFull(f"{self._pending - self.capacity + 1} requests are already waiting for {self.what}")
            self._pending += 1
        try:
            if not self._free.acquire(timeout=self.timeout_s):
                raise QueueFull(f"{self.what} stayed busy for {self.timeout_s:.0f} s")
            try:
                yield
            finally:
                self._free.release()
        finally:
            with self._mutex:
                self._pending -= 1


class ModelWorker:
    """One model behind a lock, with at most `max_waiting` requests queued behind the running one; its
    engine (made by `engine_factory` once the model is loaded) generates, batching where it can."""

    def __init__(
        self,
        source: ModelSource,
        loader: Callable[[], RaDialogModel],
        max_waiting: int = 8,
        wait_timeout_s: float = 600.0,
        engine_factory: Callable[[RaDialogModel], LLMEngine] = one_at_a_time,
    ) -> None:
        self.source = source
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self._loader = loader
        self._engine_factory = engine_factory
        self._model: RaDialogModel | None = None
        self._engine: LLMEngine | None = None
        self._load_error: BaseException | None = None
        self._model_slots = _Slots(1, max_waiting, wait_timeout_s, "the model")
        self._generation_slots: _Slots | None = None

    @classmethod
    def from_model(cls, model: RaDialogModel, source: ModelSource, **kwargs) -> ModelWorker:
        worker = cls(source, loader=lambda: model, **kwargs)
        worker._set_model(model)
        return worker

    def _set_model(self, model: RaDialogModel) -> None:
        engine = self._engine_factory(model)
        if engine.max_concurrent > 1:
            self._generation_slots = _Slots(engine.max_concurrent, self.max_waiting, self.wait_timeout_s, "the LLM")
        self._engine, self._model = engine, model

    @property
    def model_id(self) -> str:
        return self.source.label

    @property
    def model_name(self) -> str | None:
        """The loaded model's configured name (e.g. radialog-v1-report, r2gengpt); None until it is loaded."""
        return self._model.config.name if self._model is not None else None

    @property
    def is_demo(self) -> bool:
        """Presets and the embedded demo checkpoint: weights that never saw a real radiograph."""
        return self.source.is_demo

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> RaDialogModel:
        if self._model is None:
            reason = f"failed to load: {self._load_error}" if self._load_error else "is still loading"
            raise ModelNotReady(f"the model {reason}")
        return self._model

    @property
    def engine(self) -> LLMEngine:
        self.model  # noqa: B018 — raises ModelNotReady while there is no engine either
        return self._engine

    def load(self) -> None:
        logger.info("loading model %s", self.model_id)
        try:
            self._set_model(self._loader())
        except BaseException as err:
            self._load_error = err
            logger.exception("model %s failed to load", self.model_id)
            raise
        logger.info("model %s ready (%s)", self.model_id, self._model.config.name)

    def load_in_background(self) -> threading.Thread:
        """Start loading so the server can answer /healthz and /readyz while the weights come in."""

        def run() -> None:
            with contextlib.suppress(Exception):  # already logged; /readyz reports it
                self.load()

        thread = threading.Thread(target=run, name="model-loader", daemon=True)
        thread.start()
        return thread

    @contextlib.contextmanager
    def admit(self) -> Iterator[RaDialogModel]:
        """Hold the model for one job: `with worker.admit() as model:`.

        The place in the queue is taken at once (`QueueFull` at once when `max_waiting` requests already
        wait), then the block waits for the model (`QueueFull` after `wait_timeout_s`). Both are given
        back when the block exits, however it exits; a generator suspended inside the block (a stream)
        keeps the model until it is exhausted or closed. A job that runs out of memory
        raises `OutOfMemory` (`radialog.memory`): it fails, the next job gets the model as usual.
        """
        model = self.model  # raises ModelNotReady before anyone queues for a model that is not there
        with self._model_slots.hold(), surviving_out_of_memory("working on the model"):
            yield model

    @contextlib.contextmanager
    def admit_generation(self) -> Iterator[LLMEngine]:
        """Hold a place on the engine for one answer: `with worker.admit_generation() as engine:`.

        An engine that generates one answer at a time holds the model, as `admit()` does (the in-process
        LLM shares it with the image encoder); one that batches (or a vLLM server) has `max_concurrent`
        places of its own, so answers stream side by side while images are still encoded one at a time.
        """
        engine = self.engine
        if self._generation_slots is None:
            with self.admit():
                yield engine
            return
        with self._generation_slots.hold():
            yield engine

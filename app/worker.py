"""The model worker: owns the one model, loads it in the background, and admits one job at a time.

As in LLaVA's serve split, the web layers (API, UI) never touch the model directly: the study service
runs every model call inside `worker.admit()`, which bounds how many requests may wait for the model.
A request that finds the queue full is refused at once (the API answers 503 with Retry-After) instead
of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from radialog.model.loading import ModelSource
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)


class ModelNotReady(Exception):
    """The model is still loading, or failed to load."""


class QueueFull(Exception):
    """Too many requests are already waiting for the model."""


class ModelWorker:
    """One model behind a lock, with at most `max_waiting` requests queued behind the running one."""

    def __init__(
        self,
        source: ModelSource,
        loader: Callable[[], RaDialogModel],
        max_waiting: int = 8,
        wait_timeout_s: float = 600.0,
    ) -> None:
        self.source = source
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self._loader = loader
        self._model: RaDialogModel | None = None
        self._load_error: BaseException | None = None
        # A Lock, not an RLock: a stream resumes on whichever thread pulls it next, so the thread that
        # releases the model need not be the one that acquired it.
        self._run_lock = threading.Lock()
        self._mutex = threading.Lock()
        self._pending = 0

    @classmethod
    def from_model(cls, model: RaDialogModel, source: ModelSource, **kwargs) -> ModelWorker:
        worker = cls(source, loader=lambda: model, **kwargs)
        worker._model = model
        return worker

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

    def load(self) -> None:
        logger.info("loading model %s", self.model_id)
        try:
            self._model = self._loader()
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
        keeps the model until it is exhausted or closed.
        """
        model = self.model  # raises ModelNotReady before anyone queues for a model that is not there
        with self._mutex:
            # `_pending` counts the running job too: at most max_waiting jobs wait behind it.
            if self._pending > self.max_waiting:
                raise QueueFull(f"{self._pending} requests are already waiting for the model")
            self._pending += 1
        try:
            if not self._run_lock.acquire(timeout=self.wait_timeout_s):
                raise QueueFull(f"the model stayed busy for {self.wait_timeout_s:.0f} s")
            try:
                yield model
            finally:
                self._run_lock.release()
        finally:
            with self._mutex:
                self._pending -= 1

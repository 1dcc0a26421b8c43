"""The model worker's admission (`ModelWorker.admit`): one job on the model, a bounded queue, a wait timeout."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from radialog.app.worker import ModelNotReady, ModelWorker, QueueFull
from radialog.model.loading import ModelSource

# Admission never calls the model: any object stands in for it.
MODEL = SimpleNamespace(config=SimpleNamespace(name="stand-in"))


def worker(max_waiting: int = 0, wait_timeout_s: float = 60.0) -> ModelWorker:
    return ModelWorker.from_model(
        MODEL, ModelSource(preset="tiny"), max_waiting=max_waiting, wait_timeout_s=wait_timeout_s
    )


def assert_free(w: ModelWorker) -> None:
    """The model can be had at once, and nobody holds a place in the queue (max_waiting=0 would refuse)."""
    with w.admit() as model:
        assert model is MODEL


def test_admit_hands_out_the_model_and_takes_it_back():
    w = worker()
    with w.admit() as model:
        assert model is MODEL
    assert_free(w)


def test_a_full_queue_is_refused_at_once():
    w = worker(max_waiting=0, wait_timeout_s=60)
    with w.admit():
        start = time.monotonic()
        with pytest.raises(QueueFull, match="already waiting"), w.admit():
            pass
        assert time.monotonic() - start < 1, "refused without waiting for the model"
    assert_free(w)


def test_a_wait_past_the_timeout_is_refused_and_gives_its_place_back():
    w = worker(max_waiting=1, wait_timeout_s=0.1)
    with w.admit():
        for _ in range(2):  # had the first refusal kept its place, the second would be "already waiting"
            with pytest.raises(QueueFull, match="stayed busy"), w.admit():
                pass
    assert_free(w)


def test_a_waiting_job_gets_the_model_once_it_is_free():
    w = worker(max_waiting=1)
    got = threading.Event()

    def wait_for_model() -> None:
        with w.admit():
            got.set()

    with w.admit():
        waiter = threading.Thread(target=wait_for_model)
        waiter.start()
        assert not got.wait(0.2), "the model was handed out twice"
    waiter.join(timeout=10)
    assert got.is_set()


def test_an_error_in_the_job_frees_the_model():
    w = worker()
    with pytest.raises(RuntimeError), w.admit():
        raise RuntimeError("the job failed")
    assert_free(w)


def test_a_stream_holds_the_model_until_closed_even_from_another_thread():
    w = worker()

    def stream():
        with w.admit():
            yield "piece"
            yield "piece"

    pieces = stream()
    started = threading.Thread(target=next, args=(pieces,))  # a server pulls pieces from its thread pool
    started.start()
    started.join()
    with pytest.raises(QueueFull), w.admit():
        pass
    pieces.close()  # released from this thread: the lock admits that
    assert_free(w)


def test_no_place_in_the_queue_before_the_model_is_loaded():
    w = ModelWorker(ModelSource(preset="tiny"), loader=lambda: MODEL, max_waiting=0)
    with pytest.raises(ModelNotReady, match="loading"), w.admit():
        pass
    w.load()
    assert_free(w)

"""Out of memory in one job: the job fails, what it held is given back, and the process carries on.

A CUDA out-of-memory error (or a CPU `MemoryError`) in one request says nothing about the next: the
request's activations are freed once its error is gone, and the next request usually fits. The server
answers the failed one with 503 and Retry-After instead of dying or answering 500.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

OUT_OF_MEMORY_ERRORS = (torch.cuda.OutOfMemoryError, MemoryError)


class OutOfMemory(Exception):
    """A job ran out of GPU or CPU memory; its memory has been given back (the API answers 503)."""


def free_memory() -> None:
    """Give the CUDA caching allocator's free blocks back, so that the next job can have them."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def surviving_out_of_memory(what: str) -> Iterator[None]:
    """Turn an out-of-memory error raised inside the block into `OutOfMemory` (call `free_memory()` once
    the `OutOfMemory` is handled: only then are the failed job's tensors unreferenced)."""
    try:
        yield
    except OUT_OF_MEMORY_ERRORS as err:
        # CUDA's message runs over several lines of allocator advice: the first says what failed.
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        message = f"out of memory while {what}: {first_line}"
        # The traceback's frames hold the job's tensors: dropped here, they go with the job's own frames.
        err.__traceback__ = None
        logger.warning("%s; the request fails, the server carries on", message)
        raise OutOfMemory(message) from None

"""The `LLMEngine` interface: input embeddings and decoding settings in, text pieces out.

An engine never sees conversations, images or prompt formats: `RaDialogModel.prompt_embeds` turns a
conversation (with its `<IMG>` positions filled from the image) into the (T, hidden) embeddings the LLM
reads, and `RaDialogModel.decoding_settings` says how to decode. Everything an engine returns is text.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import torch


class EngineError(Exception):
    """The engine failed to answer (a malformed or refused request, an error in the middle of a stream)."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached or did not answer in time (the API answers 503)."""


@dataclass(frozen=True)
class DecodingSettings:
    """How one answer is decoded: deterministic (greedy, or beam search when `num_beams` > 1).

    The ids are the LLM tokenizer's: generation stops at `eos_token_id`; `pad_token_id` fills the rows
    of a batch that have finished.
    """

    max_new_tokens: int
    eos_token_id: int
    pad_token_id: int
    min_new_tokens: int = 0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0

    def generate_kwargs(self) -> dict:
        """transformers' `generate()` arguments for these settings."""
        kwargs = {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": min(self.min_new_tokens, self.max_new_tokens),
            "do_sample": False,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if self.num_beams > 1:  # length_penalty means something only to beam search
            kwargs.update(num_beams=self.num_beams, length_penalty=self.length_penalty)
        return kwargs


class LLMEngine:
    """Generates text from a prompt's input embeddings.

    `stream` returns a generator of text pieces whose concatenation is the answer (special tokens
    skipped). Closing the generator before its end cancels the request: by the time `close()` returns,
    the engine has stopped working on it. Engines are thread-safe: concurrent requests are what they
    are for.
    """

    #: Requests the engine works on at once; the server admits this many generations side by side.
    max_concurrent: int = 1

    def stream(self, inputs_embeds: torch.Tensor, settings: DecodingSettings) -> Generator[str]:
        """Text pieces of the answer to `inputs_embeds` (T, hidden), as they are decoded."""
        raise NotImplementedError

    def generate(self, inputs_embeds: torch.Tensor, settings: DecodingSettings) -> str:
        """The whole answer, stripped."""
        return "".join(self.stream(inputs_embeds, settings)).strip()

    def check_available(self) -> None:
        """Raise `EngineUnavailable` when a request would fail for want of the engine (a server that is
        down), so that a caller can refuse a request before it starts answering it."""

    def close(self) -> None:
        """Release what the engine holds (connections); it is not used afterwards."""

"""The vLLM engine: generation by a vLLM OpenAI-compatible server, from the prompt embeddings computed here.

The server serves the checkpoint's LLM with its LoRA merged (`radialog export CHECKPOINT --to DIR
--merge-lora --format hf`) and must be started with `--enable-prompt-embeds`; see
scripts/install_vllm.sh. Each answer is one streamed `/v1/completions` request whose `prompt_embeds`
is the (T, hidden) tensor, `torch.save`d and base64-encoded; vLLM batches concurrent requests itself
(continuous batching, paged KV cache, prefix caching).

Closing a stream closes its HTTP response; vLLM aborts a request whose client went away. A server that
cannot be reached, or that stops answering for `read_timeout_s`, raises `EngineUnavailable`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import httpx
import torch

from radialog.engines.base import DecodingSettings, EngineError, EngineUnavailable, LLMEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VLLMSettings:
    url: str = "http://127.0.0.1:8000"  # the server's base URL, without /v1
    model: str | None = None  # the served model name; None: the server's first (and usually only) model
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0  # longest wait for the next piece of an answer
    max_concurrent: int = 64  # answers in flight at once (vLLM schedules them; more wait in the app)


def encode_prompt_embeds(inputs_embeds: torch.Tensor) -> str:
    """The (T, hidden) tensor as vLLM's `prompt_embeds` field reads it: `torch.save` bytes in base64."""
    buffer = io.BytesIO()
    torch.save(inputs_embeds.detach().to("cpu").contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class VLLMEngine(LLMEngine):
    """HTTP client of one vLLM server; thread-safe (one connection pool for every session)."""

    def __init__(self, settings: VLLMSettings) -> None:
        self.settings = settings
        self.max_concurrent = settings.max_concurrent
        timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
        # Connections beyond the answers in flight serve health checks and the model lookup.
        limits = httpx.Limits(max_connections=settings.max_concurrent + 4)
        self._client = httpx.Client(base_url=settings.url.rstrip("/"), timeout=timeout, limits=limits)
        self._model = settings.model
        self._model_lock = threading.Lock()

    # ------------------------------------------------------------------ LLMEngine
    def stream(self, inputs_embeds: torch.Tensor, settings: DecodingSettings) -> Generator[str]:
        check_supported(settings)
        body = {
            "model": self._served_model(),
            "prompt_embeds": encode_prompt_embeds(inputs_embeds),
            "max_tokens": settings.max_new_tokens,
            "min_tokens": settings.min_new_tokens,
            "temperature": 0.0,  # greedy
            "repetition_penalty": settings.repetition_penalty,
            # Stop where RaDialog's tokenizer stops; nothing else the model's files may name.
            "stop_token_ids": [settings.eos_token_id],
            "skip_special_tokens": True,
            "stream": True,
        }
        with self._errors_as_engine_errors(), self._client.stream("POST", "/v1/completions", json=body) as response:
            _raise_for_status(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise EngineError(f"vLLM failed mid-answer: {chunk['error'].get('message', chunk['error'])}")
                text = chunk["choices"][0].get("text") or ""
                if text:
                    yield text
        raise EngineUnavailable(f"the vLLM server at {self.settings.url} ended the answer early")

    def check_available(self) -> None:
        with self._errors_as_engine_errors():
            response = self._client.get("/health", timeout=self.settings.connect_timeout_s)
        if response.status_code != 200:
            raise EngineUnavailable(f"the vLLM server at {self.settings.url} is not ready ({response.status_code})")

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ internals
    def _served_model(self) -> str:
        with self._model_lock:
            if self._model is None:
                with self._errors_as_engine_errors():
                    response = self._client.get("/v1/models")
                _raise_for_status(response)
                served = [entry["id"] for entry in response.json()["data"]]
                if not served:
                    raise EngineError(f"the vLLM server at {self.settings.url} serves no model")
                self._model = served[0]
                logger.info("vLLM at %s serves %s", self.settings.url, self._model)
            return self._model

    @contextlib.contextmanager
    def _errors_as_engine_errors(self) -> Iterator[None]:
        """httpx's connection and timeout errors as `EngineUnavailable`, naming the server."""
        url = self.settings.url
        try:
            yield
        except httpx.TimeoutException as err:
            raise EngineUnavailable(
                f"the vLLM server at {url} did not answer within {self.settings.read_timeout_s:.0f} s"
            ) from err
        except httpx.TransportError as err:
            raise EngineUnavailable(f"cannot reach the vLLM server at {url} ({err})") from err


def check_supported(settings: DecodingSettings) -> None:
    """vLLM's completions decode greedily with a repetition penalty: no beam search, no n-gram blocking."""
    if settings.num_beams > 1 or settings.no_repeat_ngram_size:
        raise EngineError(
            f"the vllm engine decodes greedily; this model's num_beams={settings.num_beams}, "
            f"no_repeat_ngram_size={settings.no_repeat_ngram_size} need --engine transformers"
        )


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    response.read()
    try:
        detail = response.json().get("error", {}).get("message") or response.text
    except (json.JSONDecodeError, AttributeError):
        detail = response.text
    if response.status_code in (502, 503, 504):
        raise EngineUnavailable(f"the vLLM server is unavailable ({response.status_code}: {detail})")
    raise EngineError(f"vLLM refused the request ({response.status_code}: {detail})")

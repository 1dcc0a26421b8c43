"""A checkpoint's LLM as a plain Hugging Face model directory, LoRA merged in: what a vLLM server loads.

The directory holds `config.json`, `model.safetensors`, `generation_config.json` and the tokenizer; the
image encoder, Q-Former/projector and classifier stay in the RaDialog checkpoint, which computes the
prompt embeddings the server generates from (`--enable-prompt-embeds`).

Why merged rather than vLLM's LoRA support: the adapter only touches the LLM's attention projections,
so W + B·A·alpha/r gives the same model with no adapter at serving time; one plain directory loads in
any vLLM build (CPU included) with no `--enable-lora` and no per-request adapter name, and prompt
embeddings are checked with the merged model by the tests (tests/test_vllm_engine.py).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import GenerationConfig
from transformers.utils import SAFE_WEIGHTS_NAME

from radialog.model.checkpoint import cast_floating
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)


def save_merged_language_model(model: RaDialogModel, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `model`'s LLM, its LoRA (if any) merged into the base weights, to `directory`.

    `dtype` casts the stored floating-point weights (None: as loaded). The model's LLM is merged in
    place: use a model loaded for this purpose only.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    llm = model.language_model
    if isinstance(llm, PeftModel):
        llm = llm.merge_and_unload()
    state = {k: v.detach().contiguous() for k, v in llm.state_dict().items()}
    config = copy.deepcopy(llm.config)
    if config.get_text_config().tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the same tensor as the input embeddings; loaders re-tie it
    # An LLM read from a GGUF file is dequantized on loading; transformers still calls it quantized and
    # refuses `save_pretrained`, so the weights and config are written directly, as plain floats.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if dtype is not None:
        config.dtype = dtype  # what vLLM's `--dtype auto` reads
    config.save_pretrained(directory)
    save_file(cast_floating(state, dtype), str(directory / SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    # Decoding as RaDialog decodes: stop at its tokenizer's EOS only (a GGUF's metadata may name others).
    tokenizer = model.tokenizer
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    logger.info("wrote the merged LLM (%s) to %s", type(llm).__name__, directory)
    return directory

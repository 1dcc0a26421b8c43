"""Reading and writing RaDialog checkpoints: which file holds what, and nothing about computing.

Layout (`RaDialogModel.save_pretrained` / `from_pretrained`):

    config.json            RaDialogConfig
    model.safetensors      image_encoder.*, alignment.*, classifier.* (a LoRA trained into the image
                           encoder is merged into its weights here, so loading needs no adapter)
    adapter/               peft LoRA adapter (when config.lora is set)
    tokenizer/             the LLM tokenizer with `<IMG>` added
    language_model/        base LLM weights, only when they were randomly initialised; otherwise
                           config.language_model.pretrained points at them (e.g. Vicuna-7b)
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from radialog.errors import CheckpointError
from radialog.model.configuration import CONFIG_NAME, RaDialogConfig
from radialog.model.language_model import PACKAGE_PREFIX, as_causal_tokenizer, resolve_model_path

if TYPE_CHECKING:
    from radialog.model.modeling import RaDialogModel

WEIGHTS_NAME = "model.safetensors"
ADAPTER_DIR, TOKENIZER_DIR, LANGUAGE_MODEL_DIR = "adapter", "tokenizer", "language_model"
ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME = "adapter_model.safetensors", "adapter_config.json"  # peft's names


def read_config(directory: Path) -> RaDialogConfig:
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(f"no RaDialog checkpoint at {directory} (missing {CONFIG_NAME})")
    return RaDialogConfig.load(directory)


def read_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    return as_causal_tokenizer(AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR, local_files_only=True))


def attach_adapter(llm: PreTrainedModel, directory: Path, config: RaDialogConfig) -> PreTrainedModel:
    """The checkpoint's LoRA adapter on `llm`, frozen; `llm` itself when the config has no LoRA."""
    if config.lora is None:
        return llm
    if not (directory / ADAPTER_DIR).is_dir():
        raise CheckpointError(f"the config asks for LoRA but {directory / ADAPTER_DIR} is missing")
    return PeftModel.from_pretrained(llm, directory / ADAPTER_DIR, is_trainable=False)


def read_component_weights(directory: Path) -> dict[str, torch.Tensor]:
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"missing {weights}")
    return load_file(str(weights))


def cast_floating(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating-point tensors cast to `dtype` (None: unchanged); integer buffers such as BatchNorm counts kept."""
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def write_checkpoint(
    model: RaDialogModel, directory: str | Path, save_language_model: bool = False, dtype: torch.dtype | None = None
) -> None:
    """Write `model` in the layout above. The base LLM is stored only when it exists nowhere else (random
    initialisation) or when asked (after full fine-tuning); otherwise the config points at it.

    `dtype` casts the stored floating-point weights (float16 halves a checkpoint meant for shipping);
    loading casts them back to the model's dtype.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    base = model.base_language_model
    reference = config.language_model.pretrained
    # A base LLM that lives in a checkpoint of ours is copied along, so checkpoints stay self-contained.
    if reference is None or reference == LANGUAGE_MODEL_DIR or save_language_model:
        # LoRA wraps layers in place: save the plain base weights, without the adapter's.
        state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if ".lora_" not in k}
        base.save_pretrained(directory / LANGUAGE_MODEL_DIR, state_dict=cast_floating(state, dtype))
        language_model = replace(config.language_model, pretrained=LANGUAGE_MODEL_DIR, random_init=None, gguf_file=None)
        config = replace(config, language_model=language_model)
    elif not reference.startswith(PACKAGE_PREFIX):
        # Keep the reference valid from the new location.
        absolute = resolve_model_path(reference, model.source_dir).resolve()
        config = replace(config, language_model=replace(config.language_model, pretrained=str(absolute)))
    config.save(directory)
    save_file(cast_floating(model.component_state_dict(), dtype), str(directory / WEIGHTS_NAME))
    model.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
    if isinstance(model.language_model, PeftModel):
        _write_adapter(model.language_model, directory / ADAPTER_DIR, config.language_model.pretrained, dtype)


def _write_adapter(llm: PeftModel, directory: Path, base_reference: str, dtype: torch.dtype | None) -> None:
    # LoRA never touches the embeddings (`<IMG>` positions get image features, not a new row), and peft's
    # "auto" check for a changed vocabulary would look the base model up on the Hub.
    llm.save_pretrained(directory, save_embedding_layers=False)
    # peft records where the base LLM sits on this machine; the config's reference is what loads it.
    adapter_config = directory / ADAPTER_CONFIG_NAME
    settings = json.loads(adapter_config.read_text())
    settings["base_model_name_or_path"] = base_reference
    adapter_config.write_text(json.dumps(settings, indent=2, sort_keys=True))
    if dtype is not None:  # peft writes the adapter in the model's dtype
        adapter = str(directory / ADAPTER_WEIGHTS_NAME)
        save_file(cast_floating(load_file(adapter), dtype), adapter, metadata={"format": "pt"})

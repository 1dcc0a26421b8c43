"""Building the causal LLM and its tokenizer from local files only (no hub access at run time)."""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from radialog.errors import CheckpointError
from radialog.model.configuration import LanguageModelConfig
from radialog.model.vicuna_tokenizer import image_token, is_sentencepiece_llama, load_legacy_llama_tokenizer
from radialog.prompts import IMAGE_PLACEHOLDER

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
QUANTIZATION_MODES = ("8bit", "4bit")


def resolve_model_path(
    reference: str, base_dir: str | Path | None = None, what: str = "language model weights"
) -> Path:
    """`package:NAME[/sub/dir]` → the installed package's directory; a relative path is tried against
    `base_dir` (the checkpoint directory) first, then the working directory. `what` names the weights
    in the error when nothing is there."""
    if reference.startswith(PACKAGE_PREFIX):
        name, _, sub = reference[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(f"the Python package {name!r} that holds the model is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / sub
    path = Path(reference)
    if not path.is_absolute() and base_dir is not None and (Path(base_dir) / path).exists():
        return Path(base_dir) / path
    if not path.exists():
        raise CheckpointError(f"{what} not found at {path} (see checkpoints/README.md for where to put them)")
    return path


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 259-token byte-level tokenizer built in code, for randomly initialised test models."""
    specials = ["<unk>", "<s>", "</s>"]
    byte_chars = list(pre_tokenizers.ByteLevel.alphabet())
    byte_chars.sort()
    vocab = {token: i for i, token in enumerate(specials + byte_chars)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


def add_image_token(tokenizer: PreTrainedTokenizerBase, strip_whitespace: bool = False) -> int:
    """Register the `<IMG>` placeholder as one special token and return its id.

    `strip_whitespace` makes the token take in the whitespace on both sides, as RaDialog's `<IMG>` did
    under its slow tokenizer (see `radialog.model.vicuna_tokenizer`).
    """
    if IMAGE_PLACEHOLDER not in tokenizer.get_vocab():
        token = image_token(IMAGE_PLACEHOLDER) if strip_whitespace else IMAGE_PLACEHOLDER
        tokenizer.add_tokens([token], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)


def as_causal_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Let a BERT-style tokenizer serve a causal LM: [CLS] opens a sequence, [SEP] ends a turn.

    BERT's post-processor would append [SEP] to every prompt, which reads as "end of answer" to
    the LLM, so sequences get only the leading [CLS].
    """
    if tokenizer.cls_token is None or tokenizer.sep_token is None:
        return tokenizer
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.cls_token} $A", special_tokens=[(tokenizer.cls_token, tokenizer.cls_token_id)]
    )
    return tokenizer


def uses_radialog_v1_tokenizer(config: LanguageModelConfig, path: Path) -> bool:
    """Vicuna-format prompts on a sentencepiece LLaMA tokenizer: RaDialog v1's setting (Vicuna-7b v1.3)."""
    return config.prompt_format == "vicuna_v1.1" and config.gguf_file is None and is_sentencepiece_llama(path)


def load_tokenizer(config: LanguageModelConfig, base_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The LLM's tokenizer with `<IMG>` added (id = the base vocabulary size), padding on the left.

    For a pretrained Llama/Vicuna directory with Vicuna prompts (the `radialog-v1` preset) it tokenizes
    as RaDialog's transformers 4.28.1 slow tokenizer did, id for id, since the released LoRA adapter was
    trained on those ids; transformers 5's own reading of the same files differs around `<IMG>` and `</s>`.
    """
    strip_around_image = False
    if config.pretrained is None and config.tokenizer is None:
        tokenizer = build_byte_tokenizer()
    elif config.pretrained is None:
        path = resolve_model_path(config.tokenizer, base_dir)
        tokenizer = as_causal_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))
    else:
        path = resolve_model_path(config.pretrained, base_dir)
        if uses_radialog_v1_tokenizer(config, path):
            tokenizer = load_legacy_llama_tokenizer(path)
            strip_around_image = True
        else:
            kwargs = {"gguf_file": config.gguf_file} if config.gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, **kwargs)
    if tokenizer.pad_token is None:
        # Vicuna has no pad token; RaDialog padded with unk, on the left for generation.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    add_image_token(tokenizer, strip_whitespace=strip_around_image)
    return tokenizer


def _quantization_config(mode: str | None, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    if mode is None:
        return None
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got {mode!r}")
    if not torch.cuda.is_available():
        raise CheckpointError("8-bit and 4-bit loading need a CUDA GPU (bitsandbytes)")
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def random_init_config(config: LanguageModelConfig, vocab_size: int | None = None) -> PretrainedConfig:
    """The transformers config of a randomly initialised LLM; `vocab_size` sizes it to its tokenizer."""
    arguments = dict(config.random_init)
    model_type = arguments.pop("model_type")
    if vocab_size is not None:
        arguments["vocab_size"] = vocab_size
    return AutoConfig.for_model(model_type, **arguments)


def load_language_model(
    config: LanguageModelConfig,
    vocab_size: int,
    dtype: torch.dtype,
    device: torch.device,
    base_dir: str | Path | None = None,
    quantization: str | None = None,
) -> PreTrainedModel:
    """A random causal LM from `config.random_init` (vocab sized to the tokenizer), or local pretrained weights;
    `quantization` ("8bit", "4bit") loads either through bitsandbytes."""
    quant = _quantization_config(quantization, dtype)
    if config.pretrained is None:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(random_init_config(config, vocab_size)).to(dtype)
        if quant is None:
            return model
        # from_config() cannot quantize: the random weights take the path real ones take, through a file,
        # so a full-size random model measures what a quantized release would.
        with tempfile.TemporaryDirectory(prefix="radialog-random-llm-") as scratch:
            model.save_pretrained(scratch)
            del model
            return _from_pretrained(Path(scratch), dtype, device, quant)
    path = resolve_model_path(config.pretrained, base_dir)
    logger.info("loading language model from %s", path)
    return _from_pretrained(path, dtype, device, quant, config.gguf_file)


def _from_pretrained(
    path: Path, dtype: torch.dtype, device: torch.device, quant: BitsAndBytesConfig | None, gguf_file: str | None = None
) -> PreTrainedModel:
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        local_files_only=True,
        quantization_config=quant,
        device_map={"": device} if quant is not None else None,
        **kwargs,
    )
    return model if quant is not None else model.to(device)

"""RaDialogModel: BioViL-T → Q-Former → projection → 32 image embeddings spliced into a LoRA-tuned LLM,
with a CheXpert classifier whose findings are written into the same prompt.

Checkpoint layout (`save_pretrained` / `from_pretrained`):

    config.json            RaDialogConfig
    model.safetensors      image_encoder.*, alignment.*, classifier.*
    adapter/               peft LoRA adapter (when config.lora is set)
    tokenizer/             the LLM tokenizer with `<IMG>` added
    language_model/        base LLM weights, only when they were randomly initialised; otherwise
                           config.language_model.pretrained points at them (e.g. Vicuna-7b)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TextIteratorStreamer,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from radialog.errors import CheckpointError, InputError
from radialog.imaging import XRay, preprocess
from radialog.labels import CHEXPERT_LABELS
from radialog.model.alignment import AlignmentModule
from radialog.model.classifier import build_findings_classifier, positive_findings
from radialog.model.configuration import CONFIG_NAME, RaDialogConfig
from radialog.model.image_encoder import ImageEncoder
from radialog.model.language_model import load_language_model, load_tokenizer, resolve_model_path
from radialog.prompts import IMAGE_PLACEHOLDER, Conversation, build_report_prompt, format_findings

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
ADAPTER_DIR, TOKENIZER_DIR, LANGUAGE_MODEL_DIR = "adapter", "tokenizer", "language_model"
GENERATION_TIMEOUT_S = 600.0


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there), bf16 on GPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass
class EncodedImage:
    """Everything the conversation needs from one image, computed once per study."""

    image_embeds: torch.Tensor  # (1, num_query_tokens, llm_hidden)
    findings: dict[str, float]  # label → probability (NaN where the classifier has no output)
    positive: list[str]  # labels above the classifier threshold, CheXpert order

    @property
    def findings_text(self) -> str:
        return format_findings(self.positive)


@dataclass
class ReportResult:
    findings: dict[str, float]
    report: str


class RaDialogModel(nn.Module):
    def __init__(
        self,
        config: RaDialogConfig,
        language_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config.image_encoder)
        self.alignment = AlignmentModule(
            config.alignment,
            encoder_hidden_size=config.image_encoder.projection_dim,
            llm_hidden_size=language_model.config.get_text_config().hidden_size,
        )
        self.classifier = build_findings_classifier(config.classifier)
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)

    # ------------------------------------------------------------------ construction and checkpoints
    @classmethod
    def from_config(
        cls,
        config: RaDialogConfig,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        quantization: str | None = None,
        base_dir: str | Path | None = None,
    ) -> RaDialogModel:
        """A model with fresh vision/alignment/classifier weights (BERT-initialised Q-Former if configured)."""
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        tokenizer = load_tokenizer(config.language_model, base_dir)
        llm = load_language_model(
            config.language_model, vocab_size=len(tokenizer) - 1, dtype=dtype, device=device,
            base_dir=base_dir, quantization=quantization,
        )  # fmt: skip
        if config.lora is not None:
            llm = get_peft_model(llm, _lora_config(config))
        model = cls(config, llm, tokenizer)
        if config.alignment.bert_init is not None:
            model.alignment.load_bert(resolve_model_path(config.alignment.bert_init, base_dir))
        return model._place(device, dtype)

    def _place(self, device: torch.device, dtype: torch.dtype) -> RaDialogModel:
        for part in (self.image_encoder, self.alignment, self.classifier):
            part.to(device=device, dtype=dtype)
        return self.eval()

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        quantization: str | None = None,
    ) -> RaDialogModel:
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise CheckpointError(f"no RaDialog checkpoint at {directory} (missing {CONFIG_NAME})")
        config = RaDialogConfig.load(directory)
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_dtype(device)
        tokenizer = AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR, local_files_only=True)
        llm = load_language_model(
            config.language_model, vocab_size=len(tokenizer) - 1, dtype=dtype, device=device,
            base_dir=directory, quantization=quantization,
        )  # fmt: skip
        if config.lora is not None:
            if not (directory / ADAPTER_DIR).is_dir():
                raise CheckpointError(f"the config asks for LoRA but {directory / ADAPTER_DIR} is missing")
            llm = PeftModel.from_pretrained(llm, directory / ADAPTER_DIR, is_trainable=False)
        model = cls(config, llm, tokenizer)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"missing {weights}")
        model.load_component_weights(load_file(str(weights)))
        return model._place(device, dtype)

    def component_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of everything but the LLM (vision, alignment, classifier)."""
        state = {}
        for prefix in ("image_encoder", "alignment", "classifier"):
            for key, value in getattr(self, prefix).state_dict().items():
                state[f"{prefix}.{key}"] = value.detach().contiguous().cpu()
        return state

    def load_component_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Strict load of vision/alignment/classifier weights; names every missing or unexpected key."""
        expected = set(self.component_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint does not fit the model: {len(missing)} missing keys {missing[:5]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:5]}"
            )
        for prefix in ("image_encoder", "alignment", "classifier"):
            part = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            getattr(self, prefix).load_state_dict(part, strict=True)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config
        if config.language_model.pretrained is None:
            # Random base weights exist only here: store them and point the config at the copy.
            # LoRA wraps layers in place: save the plain base weights, without the adapter's.
            state = {
                k.replace(".base_layer.", "."): v
                for k, v in self.base_language_model.state_dict().items()
                if ".lora_" not in k
            }
            self.base_language_model.save_pretrained(directory / LANGUAGE_MODEL_DIR, state_dict=state)
            config = replace(
                config,
                language_model=replace(config.language_model, pretrained=LANGUAGE_MODEL_DIR, llama=None),
            )
        config.save(directory)
        save_file(self.component_state_dict(), str(directory / WEIGHTS_NAME))
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        if isinstance(self.language_model, PeftModel):
            self.language_model.save_pretrained(directory / ADAPTER_DIR)

    @property
    def base_language_model(self) -> PreTrainedModel:
        llm = self.language_model
        return llm.get_base_model() if isinstance(llm, PeftModel) else llm

    @property
    def device(self) -> torch.device:
        return self.alignment.query_tokens.device

    @property
    def dtype(self) -> torch.dtype:
        return self.alignment.query_tokens.dtype

    # ------------------------------------------------------------------ image path
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, num_query_tokens, llm_hidden): the image embeddings the LLM reads."""
        return self.alignment(self.image_encoder.visual_tokens(pixel_values))

    @torch.no_grad()
    def encode_image(self, xray: XRay) -> EncodedImage:
        image = xray.to_pil()
        pixels = preprocess(image, self.config.image_encoder.processor)[None].to(self.device, self.dtype)
        classifier_pixels = preprocess(image, self.config.classifier.image_encoder.processor)[None]
        probs = self.classifier.probabilities(classifier_pixels.to(self.device, self.dtype))[0].float().cpu()
        findings = dict(zip(CHEXPERT_LABELS, probs.tolist(), strict=True))
        return EncodedImage(
            image_embeds=self.get_image_features(pixels),
            findings=findings,
            positive=positive_findings(findings, self.config.classifier.threshold),
        )

    # ------------------------------------------------------------------ text path
    def render_prompt(self, conversation: Conversation) -> str:
        if self.config.language_model.prompt_format == "chat_template":
            return self.tokenizer.apply_chat_template(
                conversation.as_chat_messages(), tokenize=False, add_generation_prompt=True
            )
        return conversation.render_vicuna(eos=self.tokenizer.eos_token)

    def tokenize(self, conversation: Conversation) -> torch.Tensor:
        """(1, T) input ids of the rendered conversation, ready for generation."""
        text = self.render_prompt(conversation)
        add_special = self.config.language_model.prompt_format == "vicuna_v1.1"
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=add_special)["input_ids"]
        return ids.to(self.device)

    def embed_inputs(self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with every `<IMG>` position replaced, in order, by the image embeddings."""
        image_mask = input_ids == self.image_token_id
        # `<IMG>` may lie beyond the LLM's embedding table (Vicuna has 32000 rows, `<IMG>` is 32000).
        embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        n_positions = int(image_mask.sum())
        if image_embeds is None:
            if n_positions:
                raise InputError(f"the prompt has {n_positions} image positions but no image embeddings")
            return embeds
        if n_positions != image_embeds.shape[0] * image_embeds.shape[1]:
            raise InputError(
                f"the prompt has {n_positions} image positions but {image_embeds.shape[0] * image_embeds.shape[1]} "
                "image embeddings were given"
            )
        mask = image_mask[..., None].expand_as(embeds)
        return embeds.masked_scatter(mask, image_embeds.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast:
        if pixel_values is not None:
            image_embeds = self.get_image_features(pixel_values)
        inputs_embeds = self.embed_inputs(input_ids, image_embeds)
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels)

    def _generation_kwargs(
        self, conversation: Conversation, image_embeds: torch.Tensor | None, max_new_tokens: int
    ) -> dict:
        input_ids = self.tokenize(conversation)
        budget = self.config.language_model.max_context - max_new_tokens
        if input_ids.shape[1] > budget:
            raise InputError(
                f"the conversation is {input_ids.shape[1]} tokens, more than the {budget} the context allows"
            )
        return {
            "inputs_embeds": self.embed_inputs(input_ids, image_embeds),
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "repetition_penalty": self.config.generation.repetition_penalty,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
        }

    @torch.no_grad()
    def generate(self, conversation: Conversation, image_embeds: torch.Tensor | None, max_new_tokens: int) -> str:
        """Greedy answer to the conversation's open assistant turn."""
        output = self.language_model.generate(**self._generation_kwargs(conversation, image_embeds, max_new_tokens))
        # With inputs_embeds only, generate() returns just the new tokens.
        return self.tokenizer.decode(output[0], skip_special_tokens=True).strip()

    def stream_generate(
        self, conversation: Conversation, image_embeds: torch.Tensor | None, max_new_tokens: int
    ) -> Iterator[str]:
        """Like `generate`, yielding text pieces as they are decoded."""
        streamer = TextIteratorStreamer(self.tokenizer, skip_special_tokens=True, timeout=GENERATION_TIMEOUT_S)
        kwargs = self._generation_kwargs(conversation, image_embeds, max_new_tokens)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.no_grad():
                    self.language_model.generate(**kwargs, streamer=streamer)
            except BaseException as err:  # surfaced in the caller's thread below
                errors.append(err)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ the report task
    def report_conversation(self, encoded: EncodedImage) -> Conversation:
        conversation = Conversation()
        conversation.add_user(build_report_prompt(encoded.findings_text, self.config.alignment.num_query_tokens))
        conversation.add_assistant(None)
        return conversation

    def generate_report(self, xray: XRay, max_new_tokens: int | None = None) -> ReportResult:
        encoded = self.encode_image(xray)
        report = self.generate(
            self.report_conversation(encoded),
            encoded.image_embeds,
            max_new_tokens or self.config.generation.report_max_new_tokens,
        )
        return ReportResult(findings=encoded.findings, report=report)


def _lora_config(config: RaDialogConfig) -> LoraConfig:
    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )

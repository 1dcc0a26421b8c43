"""RaDialogModel: BioViL-T → Q-Former → projection → 32 image embeddings spliced into a LoRA-tuned LLM,
with a CheXpert classifier whose findings are written into the same prompt. The same class runs R2GenGPT:
Swin → Linear + LayerNorm → 49 image embeddings in a frozen Llama-2, no classifier.

The model only computes: `RaDialogProcessor` (radialog/model/processing.py) turns studies and
conversations into its inputs, radialog/model/checkpoint.py reads and writes its files, and an
`LLMEngine` (radialog/engines/) generates from the prompt embeddings it computes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from radialog.engines.base import DecodingSettings
from radialog.errors import CheckpointError, ContextOverflow, InputError
from radialog.imaging import XRay
from radialog.labels import CHEXPERT_LABELS
from radialog.model.alignment import build_alignment
from radialog.model.checkpoint import (
    attach_adapter,
    read_component_weights,
    read_config,
    read_tokenizer,
    write_checkpoint,
)
from radialog.model.classifier import build_findings_classifier, positive_findings
from radialog.model.configuration import RaDialogConfig
from radialog.model.image_encoder import build_image_encoder
from radialog.model.language_model import load_language_model, load_tokenizer, resolve_model_path
from radialog.model.processing import RaDialogProcessor
from radialog.prompts import Conversation, format_predicted_findings

logger = logging.getLogger(__name__)

COMPONENTS = ("image_encoder", "alignment", "classifier")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def part_dtypes(
    config: RaDialogConfig, device: torch.device, dtype: torch.dtype | None = None
) -> tuple[torch.dtype, torch.dtype]:
    """(vision, LLM) dtypes: `dtype` for both when given; else float32 on CPU (half-precision matmuls are
    slow there), and the config's precision settings on a GPU."""
    if dtype is not None:
        return dtype, dtype
    if device.type != "cuda":
        return torch.float32, torch.float32
    return getattr(torch, config.precision.vision), getattr(torch, config.precision.language_model)


@dataclass
class EncodedImage:
    """Everything the conversation needs from one image, computed once per study."""

    image_embeds: torch.Tensor  # (1, num_image_tokens, llm_hidden)
    probabilities: dict[str, float]  # label → classifier probability (NaN: no output for it; {}: no classifier)
    positive: list[str]  # labels above the classifier threshold, CheXpert order
    with_prior: bool = False  # the embeddings compare the image with a prior one (the prompt then says so)

    @property
    def predicted_findings(self) -> str:
        return format_predicted_findings(self.positive)


@dataclass
class ReportResult:
    probabilities: dict[str, float]
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
        self.image_encoder = build_image_encoder(config.image_encoder)
        self.alignment = build_alignment(
            config.alignment,
            encoder_hidden_size=config.image_encoder.token_dim,
            llm_hidden_size=language_model.config.get_text_config().hidden_size,
        )
        self.classifier = build_findings_classifier(config.classifier) if config.classifier is not None else None
        self.language_model = language_model
        self.processor = RaDialogProcessor.from_config(config, tokenizer)
        self.tokenizer = tokenizer
        self.image_token_id = self.processor.image_token_id
        self.source_dir: Path | None = None  # where relative weight references were resolved from

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
        """A model with fresh vision/alignment/classifier weights (BERT-initialised Q-Former, pretrained Swin
        if configured)."""
        device = torch.device(device) if device is not None else default_device()
        vision_dtype, llm_dtype = part_dtypes(config, device, dtype)
        tokenizer = load_tokenizer(config.language_model, base_dir)
        llm = load_language_model(
            config.language_model, vocab_size=len(tokenizer) - 1, dtype=llm_dtype, device=device,
            base_dir=base_dir, quantization=quantization,
        )  # fmt: skip
        if config.lora is not None:
            llm = get_peft_model(llm, _lora_config(config))
        model = cls(config, llm, tokenizer)
        model.source_dir = Path(base_dir) if base_dir is not None else None
        if config.alignment.kind == "qformer" and config.alignment.bert_init is not None:
            model.alignment.load_bert(resolve_model_path(config.alignment.bert_init, base_dir, "Q-Former BERT weights"))
        if config.image_encoder.pretrained is not None:
            encoder_weights = resolve_model_path(config.image_encoder.pretrained, base_dir, "image encoder weights")
            model.image_encoder.load_pretrained(encoder_weights)
        return model._place(device, vision_dtype)

    def _place(self, device: torch.device, dtype: torch.dtype) -> RaDialogModel:
        for _, part in self.components():
            part.to(device=device, dtype=dtype)
        return self.eval()

    def components(self) -> list[tuple[str, nn.Module]]:
        """The parts stored in model.safetensors, by prefix (the classifier is optional)."""
        return [(name, getattr(self, name)) for name in COMPONENTS if getattr(self, name) is not None]

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        quantization: str | None = None,
    ) -> RaDialogModel:
        directory = Path(directory)
        config = read_config(directory)
        device = torch.device(device) if device is not None else default_device()
        vision_dtype, llm_dtype = part_dtypes(config, device, dtype)
        tokenizer = read_tokenizer(directory)
        llm = load_language_model(
            config.language_model, vocab_size=len(tokenizer) - 1, dtype=llm_dtype, device=device,
            base_dir=directory, quantization=quantization,
        )  # fmt: skip
        model = cls(config, attach_adapter(llm, directory, config), tokenizer)
        model.source_dir = directory
        model.load_component_weights(read_component_weights(directory))
        return model._place(device, vision_dtype)

    def component_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of everything but the LLM (vision, alignment, classifier), LoRA merged in."""
        state = {}
        for prefix, part in self.components():
            for key, value in merged_state_dict(part).items():
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
        for prefix, module in self.components():
            part = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            module.load_state_dict(part, strict=True)

    def save_pretrained(
        self, directory: str | Path, save_language_model: bool = False, dtype: torch.dtype | None = None
    ) -> None:
        """Write the checkpoint (radialog/model/checkpoint.py says what goes where); `dtype` casts the stored
        weights, e.g. float16 for shipping."""
        write_checkpoint(self, directory, save_language_model, dtype)

    def widen_lora(self, target_modules: Sequence[str]) -> list[str]:
        """Put the LLM's LoRA on `target_modules` as well, keeping every trained LoRA layer; returns the
        modules added. A new layer starts with B = 0, so the model computes what it did until trained."""
        if self.config.lora is None or not isinstance(self.language_model, PeftModel):
            raise InputError(f"the {self.config.name} model has no LoRA adapter to widen")
        current = self.config.lora.target_modules
        added = [m for m in target_modules if m not in current]
        if not added:
            return []
        trained = get_peft_model_state_dict(self.language_model)
        self.config.lora = replace(self.config.lora, target_modules=(*current, *added))
        training = self.language_model.training  # get_peft_model leaves its new layers in train mode
        self.language_model = get_peft_model(self.language_model.unload(), _lora_config(self.config))
        self.language_model.train(training)
        result = set_peft_model_state_dict(self.language_model, trained)
        if result.unexpected_keys:
            raise CheckpointError(f"the trained LoRA layers did not all load: {result.unexpected_keys[:5]}")
        logger.info("LoRA widened to %s (added %s)", list(self.config.lora.target_modules), added)
        return added

    @property
    def base_language_model(self) -> PreTrainedModel:
        llm = self.language_model
        return llm.get_base_model() if isinstance(llm, PeftModel) else llm

    @property
    def device(self) -> torch.device:
        return self.alignment.language_projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The vision side's dtype (image encoder, alignment, classifier); the LLM's may differ."""
        return self.alignment.language_projection.weight.dtype

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_image_tokens

    # ------------------------------------------------------------------ image path
    def get_image_features(
        self, pixel_values: torch.Tensor, previous_pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, S, S) → (B, num_image_tokens, llm_hidden): the image embeddings the LLM reads.

        (B, V, 3, S, S) holds V views of each study; their encoder tokens are averaged before the
        alignment, as R2GenGPT fuses the views of a study (`torch.stack(views).mean(0)`).
        `previous_pixel_values` (B, 3, S, S), a prior image of each study, goes into BioViL-T's
        temporal input; without it the encoder uses its learned "missing previous" embedding.
        """
        if previous_pixel_values is not None:
            if not self.config.image_encoder.accepts_prior:
                raise InputError(
                    f"this model's {self.config.image_encoder.kind!r} image encoder takes no prior image "
                    "(only BioViL-T compares a current and a previous image)"
                )
            if pixel_values.ndim != 4:
                raise InputError("a prior image goes with one view per study, not several")
            return self.alignment(self.image_encoder.visual_tokens(pixel_values, previous_pixel_values))
        if pixel_values.ndim == 5:
            B, V = pixel_values.shape[:2]
            tokens = self.image_encoder.visual_tokens(pixel_values.flatten(0, 1))  # (B*V, N, D)
            return self.alignment(tokens.unflatten(0, (B, V)).mean(1))
        return self.alignment(self.image_encoder.visual_tokens(pixel_values))

    @torch.no_grad()
    def encode_image(self, xray: XRay, previous: XRay | None = None) -> EncodedImage:
        """The image's embeddings (compared with `previous`, a prior image of the same patient, when
        given) and the classifier's findings, which read the current image only."""
        probabilities: dict[str, float] = {}
        positive: list[str] = []
        if self.classifier is not None:
            classifier_pixels = self.processor.classifier_pixel_values(xray).to(self.device, self.dtype)
            probs = self.classifier.probabilities(classifier_pixels)[0].float().cpu()
            probabilities = dict(zip(CHEXPERT_LABELS, probs.tolist(), strict=True))
            positive = positive_findings(probabilities, self.config.classifier.threshold)
        image_embeds = self.embed_image(xray, previous)
        return EncodedImage(image_embeds, probabilities, positive, with_prior=previous is not None)

    @torch.no_grad()
    def embed_image(self, xray: XRay, previous: XRay | None = None) -> torch.Tensor:
        """(1, num_image_tokens, llm_hidden): the image embeddings alone, without the classifier; `previous`
        goes through the same preprocessing into the encoder's prior-image input."""
        pixels = self.processor.pixel_values(xray).to(self.device, self.dtype)
        if previous is None:
            return self.get_image_features(pixels)
        return self.get_image_features(pixels, self.processor.pixel_values(previous).to(self.device, self.dtype))

    # ------------------------------------------------------------------ text path
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

    @property
    def max_context(self) -> int:
        """Tokens the LLM attends to: its own `max_position_embeddings`, lowered by the config's `max_context`."""
        own = self.base_language_model.config.get_text_config().max_position_embeddings
        cap = self.config.language_model.max_context
        return min(own, cap) if cap is not None else own

    def prompt_ids(self, conversation: Conversation, max_new_tokens: int) -> torch.Tensor:
        """(1, T) ids of the rendered conversation; `ContextOverflow` when the answer's `max_new_tokens`
        would not fit after them."""
        input_ids = self.processor.tokenize(conversation).to(self.device)
        budget = self.max_context - max_new_tokens
        if input_ids.shape[1] > budget:
            raise ContextOverflow(input_ids.shape[1], budget)
        return input_ids

    def decoding_settings(self, max_new_tokens: int, min_new_tokens: int = 0) -> DecodingSettings:
        """The configured decoding (greedy or beam search, with its penalties) for one answer's budget."""
        settings = self.config.generation
        return DecodingSettings(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            num_beams=settings.num_beams,
            repetition_penalty=settings.repetition_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
            length_penalty=settings.length_penalty,
        )

    def decoding_kwargs(self, max_new_tokens: int, min_new_tokens: int = 0) -> dict:
        """`generate()` arguments for the configured decoding, one call or a batch."""
        return self.decoding_settings(max_new_tokens, min_new_tokens).generate_kwargs()

    @torch.no_grad()
    def prompt_embeds(
        self, conversation: Conversation, image_embeds: torch.Tensor | None, max_new_tokens: int
    ) -> torch.Tensor:
        """(T, hidden): the input embeddings an `LLMEngine` generates the open assistant turn from."""
        return self.embed_inputs(self.prompt_ids(conversation, max_new_tokens), image_embeds)[0]

    def _generation_kwargs(
        self, conversation: Conversation, image_embeds: torch.Tensor | None, max_new_tokens: int, min_new_tokens: int
    ) -> dict:
        input_ids = self.prompt_ids(conversation, max_new_tokens)
        return {
            "inputs_embeds": self.embed_inputs(input_ids, image_embeds),
            "attention_mask": torch.ones_like(input_ids),
            **self.decoding_kwargs(max_new_tokens, min_new_tokens),
        }

    @torch.no_grad()
    def generate(
        self,
        conversation: Conversation,
        image_embeds: torch.Tensor | None,
        max_new_tokens: int,
        min_new_tokens: int = 0,
    ) -> str:
        """Deterministic answer (greedy, or beam search per the settings) to the open assistant turn, in one
        call (the command line, evaluations); a server streams through an `LLMEngine` instead."""
        kwargs = self._generation_kwargs(conversation, image_embeds, max_new_tokens, min_new_tokens)
        output = self.language_model.generate(**kwargs)
        # With inputs_embeds only, generate() returns just the new tokens.
        return self.tokenizer.decode(output[0], skip_special_tokens=True).strip()

    # ------------------------------------------------------------------ the report task
    def generate_report(
        self, xray: XRay, max_new_tokens: int | None = None, previous: XRay | None = None
    ) -> ReportResult:
        encoded = self.encode_image(xray, previous)
        settings = self.config.generation
        report = self.generate(
            self.processor.report_conversation(encoded.predicted_findings, encoded.with_prior),
            encoded.image_embeds,
            max_new_tokens or settings.report_max_new_tokens,
            settings.report_min_new_tokens,
        )
        return ReportResult(probabilities=encoded.probabilities, report=report)


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` under its plain names, with any peft LoRA layer folded into its base weight
    (W + B·A·alpha/r), so a LoRA-trained image encoder saves and loads like an untouched one."""
    state = {k: v for k, v in module.state_dict().items() if ".lora_" not in k}
    for name, layer in module.named_modules():
        if isinstance(layer, LoraLayer) and not layer.merged:
            key = f"{name}.base_layer.weight"
            for adapter in layer.active_adapters:
                state[key] = state[key] + layer.get_delta_weight(adapter).to(state[key].dtype)
    return {k.replace(".base_layer.", "."): v for k, v in state.items()}


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

"""RaDialogModel: BioViL-T → Q-Former → projection → 32 image embeddings spliced into a LoRA-tuned LLM,
with a CheXpert classifier whose findings are written into the same prompt. The same class runs R2GenGPT:
Swin → Linear + LayerNorm → 49 image embeddings in a frozen Llama-2, no classifier.

Checkpoint layout (`save_pretrained` / `from_pretrained`):

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
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TextIteratorStreamer,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from radialog.errors import CheckpointError, ContextOverflow, InputError
from radialog.imaging import XRay, preprocess
from radialog.labels import CHEXPERT_LABELS
from radialog.model.alignment import build_alignment
from radialog.model.classifier import build_findings_classifier, positive_findings
from radialog.model.configuration import CONFIG_NAME, RaDialogConfig
from radialog.model.image_encoder import build_image_encoder
from radialog.model.language_model import (
    PACKAGE_PREFIX,
    as_causal_tokenizer,
    load_language_model,
    load_tokenizer,
    resolve_model_path,
)
from radialog.prompts import (
    IMAGE_PLACEHOLDER,
    Conversation,
    build_image_prefix,
    build_r2gengpt_image_prefix,
    build_r2gengpt_report_prompt,
    build_report_prompt,
    format_predicted_findings,
)

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
COMPONENTS = ("image_encoder", "alignment", "classifier")
ADAPTER_DIR, TOKENIZER_DIR, LANGUAGE_MODEL_DIR = "adapter", "tokenizer", "language_model"
ADAPTER_WEIGHTS_NAME, ADAPTER_CONFIG_NAME = "adapter_model.safetensors", "adapter_config.json"  # peft's names
GENERATION_TIMEOUT_S = 600.0


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
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
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
        if not (directory / CONFIG_NAME).is_file():
            raise CheckpointError(f"no RaDialog checkpoint at {directory} (missing {CONFIG_NAME})")
        config = RaDialogConfig.load(directory)
        device = torch.device(device) if device is not None else default_device()
        vision_dtype, llm_dtype = part_dtypes(config, device, dtype)
        tokenizer = as_causal_tokenizer(AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR, local_files_only=True))
        llm = load_language_model(
            config.language_model, vocab_size=len(tokenizer) - 1, dtype=llm_dtype, device=device,
            base_dir=directory, quantization=quantization,
        )  # fmt: skip
        if config.lora is not None:
            if not (directory / ADAPTER_DIR).is_dir():
                raise CheckpointError(f"the config asks for LoRA but {directory / ADAPTER_DIR} is missing")
            llm = PeftModel.from_pretrained(llm, directory / ADAPTER_DIR, is_trainable=False)
        model = cls(config, llm, tokenizer)
        model.source_dir = directory
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"missing {weights}")
        model.load_component_weights(load_file(str(weights)))
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
        """Write the checkpoint. The base LLM is stored only when it exists nowhere else (random
        initialisation) or when asked (after full fine-tuning); otherwise the config points at it.

        `dtype` casts the stored floating-point weights (float16 halves a checkpoint meant for shipping);
        loading casts them back to the model's dtype.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config
        reference = config.language_model.pretrained
        # A base LLM that lives in a checkpoint of ours is copied along, so checkpoints stay self-contained.
        if reference is None or reference == LANGUAGE_MODEL_DIR or save_language_model:
            # LoRA wraps layers in place: save the plain base weights, without the adapter's.
            state = cast_floating(
                {
                    k.replace(".base_layer.", "."): v
                    for k, v in self.base_language_model.state_dict().items()
                    if ".lora_" not in k
                },
                dtype,
            )
            self.base_language_model.save_pretrained(directory / LANGUAGE_MODEL_DIR, state_dict=state)
            language_model = replace(
                config.language_model, pretrained=LANGUAGE_MODEL_DIR, random_init=None, gguf_file=None
            )
            config = replace(config, language_model=language_model)
        elif not reference.startswith(PACKAGE_PREFIX):
            # Keep the reference valid from the new location.
            absolute = resolve_model_path(reference, self.source_dir).resolve()
            config = replace(config, language_model=replace(config.language_model, pretrained=str(absolute)))
        config.save(directory)
        save_file(cast_floating(self.component_state_dict(), dtype), str(directory / WEIGHTS_NAME))
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        if isinstance(self.language_model, PeftModel):
            # LoRA never touches the embeddings (`<IMG>` positions get image features, not a new row), and
            # peft's "auto" check for a changed vocabulary would look the base model up on the Hub.
            self.language_model.save_pretrained(directory / ADAPTER_DIR, save_embedding_layers=False)
            # peft records where the base LLM sits on this machine; the config's reference is what loads it.
            adapter_config = directory / ADAPTER_DIR / ADAPTER_CONFIG_NAME
            settings = json.loads(adapter_config.read_text())
            settings["base_model_name_or_path"] = config.language_model.pretrained
            adapter_config.write_text(json.dumps(settings, indent=2, sort_keys=True))
            if dtype is not None:  # peft writes the adapter in the model's dtype
                adapter = str(directory / ADAPTER_DIR / ADAPTER_WEIGHTS_NAME)
                save_file(cast_floating(load_file(adapter), dtype), adapter, metadata={"format": "pt"})

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
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, num_image_tokens, llm_hidden): the image embeddings the LLM reads.

        (B, V, 3, S, S) holds V views of each study; their encoder tokens are averaged before the
        alignment, as R2GenGPT fuses the views of a study (`torch.stack(views).mean(0)`).
        """
        if pixel_values.ndim == 5:
            B, V = pixel_values.shape[:2]
            tokens = self.image_encoder.visual_tokens(pixel_values.flatten(0, 1))  # (B*V, N, D)
            return self.alignment(tokens.unflatten(0, (B, V)).mean(1))
        return self.alignment(self.image_encoder.visual_tokens(pixel_values))

    @torch.no_grad()
    def encode_image(self, xray: XRay) -> EncodedImage:
        image = xray.to_pil()
        pixels = preprocess(image, self.config.image_encoder.processor)[None].to(self.device, self.dtype)
        probabilities: dict[str, float] = {}
        positive: list[str] = []
        if self.classifier is not None:
            classifier_pixels = preprocess(image, self.config.classifier.image_encoder.processor)[None]
            probs = self.classifier.probabilities(classifier_pixels.to(self.device, self.dtype))[0].float().cpu()
            probabilities = dict(zip(CHEXPERT_LABELS, probs.tolist(), strict=True))
            positive = positive_findings(probabilities, self.config.classifier.threshold)
        return EncodedImage(
            image_embeds=self.get_image_features(pixels), probabilities=probabilities, positive=positive
        )

    # ------------------------------------------------------------------ text path
    def render_prompt(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        """The prompt text; `add_generation_prompt=False` for a closed conversation (training samples)."""
        prompt_format = self.config.language_model.prompt_format
        if prompt_format == "chat_template":
            return self.tokenizer.apply_chat_template(
                conversation.as_chat_messages(), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        if prompt_format == "r2gengpt":
            return conversation.render_r2gengpt(eos=self.tokenizer.eos_token)
        return conversation.render_vicuna(eos=self.tokenizer.eos_token)

    def tokenize(self, conversation: Conversation) -> torch.Tensor:
        """(1, T) input ids of the rendered conversation, ready for generation."""
        text = self.render_prompt(conversation)
        # Chat templates write their own BOS; Vicuna and R2GenGPT prompts start with the tokenizer's.
        add_special = self.config.language_model.prompt_format != "chat_template"
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

    @property
    def max_context(self) -> int:
        """Tokens the LLM attends to: its own `max_position_embeddings`, lowered by the config's `max_context`."""
        own = self.base_language_model.config.get_text_config().max_position_embeddings
        cap = self.config.language_model.max_context
        return min(own, cap) if cap is not None else own

    def prompt_ids(self, conversation: Conversation, max_new_tokens: int) -> torch.Tensor:
        """(1, T) ids of the rendered conversation; `ContextOverflow` when the answer's `max_new_tokens`
        would not fit after them."""
        input_ids = self.tokenize(conversation)
        budget = self.max_context - max_new_tokens
        if input_ids.shape[1] > budget:
            raise ContextOverflow(input_ids.shape[1], budget)
        return input_ids

    def decoding_kwargs(self, max_new_tokens: int, min_new_tokens: int = 0) -> dict:
        """`generate()` arguments for the configured decoding (greedy or beam search), one call or a batch."""
        settings = self.config.generation
        kwargs = {
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min(min_new_tokens, max_new_tokens),
            "do_sample": False,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size,
            "repetition_penalty": settings.repetition_penalty,
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if settings.num_beams > 1:  # length_penalty means something only to beam search
            kwargs.update(num_beams=settings.num_beams, length_penalty=settings.length_penalty)
        return kwargs

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
        """Deterministic answer (greedy, or beam search per the settings) to the open assistant turn."""
        kwargs = self._generation_kwargs(conversation, image_embeds, max_new_tokens, min_new_tokens)
        output = self.language_model.generate(**kwargs)
        # With inputs_embeds only, generate() returns just the new tokens.
        return self.tokenizer.decode(output[0], skip_special_tokens=True).strip()

    def stream_generate(
        self,
        conversation: Conversation,
        image_embeds: torch.Tensor | None,
        max_new_tokens: int,
        min_new_tokens: int = 0,
    ) -> Iterator[str]:
        """Like `generate`, yielding text pieces as they are decoded.

        Beam search cannot stream (transformers refuses a streamer with several beams: the best beam is
        only known at the end), so with `num_beams` > 1 the whole answer comes as one piece.
        """
        if self.config.generation.num_beams > 1:
            yield self.generate(conversation, image_embeds, max_new_tokens, min_new_tokens)
            return
        streamer = TextIteratorStreamer(self.tokenizer, skip_special_tokens=True, timeout=GENERATION_TIMEOUT_S)
        kwargs = self._generation_kwargs(conversation, image_embeds, max_new_tokens, min_new_tokens)
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
    def report_prompt(self, predicted_findings: str) -> str:
        """The first user message asking for the report, in the wording the model was trained on."""
        if self.config.language_model.prompt_format == "r2gengpt":
            return build_r2gengpt_report_prompt(self.num_image_tokens)
        return build_report_prompt(predicted_findings, self.num_image_tokens)

    def image_prefix(self, encoded: EncodedImage) -> str:
        """What opens a first user message that is not the report request, so the image is read the same way."""
        if self.config.language_model.prompt_format == "r2gengpt":
            return build_r2gengpt_image_prefix(self.num_image_tokens)
        return build_image_prefix(encoded.predicted_findings, self.num_image_tokens)

    def report_conversation(self, encoded: EncodedImage) -> Conversation:
        conversation = Conversation()
        conversation.add_user(self.report_prompt(encoded.predicted_findings))
        conversation.add_assistant(None)
        return conversation

    def generate_report(self, xray: XRay, max_new_tokens: int | None = None) -> ReportResult:
        encoded = self.encode_image(xray)
        settings = self.config.generation
        report = self.generate(
            self.report_conversation(encoded),
            encoded.image_embeds,
            max_new_tokens or settings.report_max_new_tokens,
            settings.report_min_new_tokens,
        )
        return ReportResult(probabilities=encoded.probabilities, report=report)


def cast_floating(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating-point tensors cast to `dtype` (None: unchanged); integer buffers such as BatchNorm counts kept."""
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


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

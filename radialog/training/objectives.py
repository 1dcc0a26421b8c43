"""The trainable objective of each stage, as an nn.Module whose `forward(batch)` returns the loss.

- stage 0 `classifier`: the CheXpert classifier, BCE on the 14 labels (uncertain labels left out).
- stage 1 `alignment`: the Q-Former on image–report pairs with the image encoder frozen: BLIP-2's
  image–text contrastive (ITC) and image–text matching (ITM) losses. BLIP-2's third loss, image-grounded
  text generation, needs a BERT decoder head on the Q-Former; here generation is learnt in stage 2
  through the LLM instead.
- stage 2 `language`: LoRA (or the whole LLM) and the image projection on conversations, loss on the
  assistant's answers only. By default the image encoder and Q-Former are frozen, so their outputs are
  computed once per image and cached, as RaDialog did with its precomputed embeddings; `vision` "lora" or
  "full" trains the image side too (R2GenGPT's delta and deep modes), computing it at every step.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from radialog.errors import InputError
from radialog.model.alignment import AlignmentHeads, AlignmentModule
from radialog.model.language_model import resolve_model_path
from radialog.model.modeling import RaDialogModel
from radialog.training.config import VISION_MODES, VisionLora
from radialog.training.datasets import ImageReportDataset, collate_images
from radialog.training.tokenization import IGNORE_INDEX

logger = logging.getLogger(__name__)


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def add_text_branch(model: RaDialogModel) -> None:
    """Stage 1 reads report text through the Q-Former: rebuild it with the text branch, keeping weights.

    The model's config is replaced, not edited, and `remove_text_branch` undoes both once stage 1 is over.
    """
    if model.config.alignment.text_input:
        return
    config = replace(model.config.alignment, text_input=True)
    old = model.alignment
    new = AlignmentModule(config, old.qformer.config.encoder_hidden_size, old.language_projection.out_features)
    if config.bert_init is not None:
        new.load_bert(resolve_model_path(config.bert_init, model.source_dir))
    result = new.load_state_dict(old.state_dict(), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    with torch.no_grad():  # the text feed-forward starts as a copy of the query one, as in BLIP-2
        for layer in new.qformer.encoder.layer:
            layer.intermediate.load_state_dict(layer.intermediate_query.state_dict())
            layer.output.load_state_dict(layer.output_query.state_dict())
    _swap_alignment(model, new)


def remove_text_branch(model: RaDialogModel) -> dict[str, torch.Tensor]:
    """The inference model again: the Q-Former without its text embeddings and text feed-forward.

    Nothing after stage 1 reads text through the Q-Former, and BERT's word-embedding table alone would
    otherwise ride along in every checkpoint. Returns the removed weights (`alignment.*` keys; none if the
    model had no branch).
    """
    if not model.config.alignment.text_input:
        return {}
    config = replace(model.config.alignment, text_input=False)
    old = model.alignment
    new = AlignmentModule(config, old.qformer.config.encoder_hidden_size, old.language_projection.out_features)
    result = new.load_state_dict(old.state_dict(), strict=False)
    assert not result.missing_keys, result.missing_keys  # the text branch only adds weights
    branch = {f"alignment.{k}": old.state_dict()[k] for k in result.unexpected_keys}
    _swap_alignment(model, new)
    return branch


def _swap_alignment(model: RaDialogModel, alignment: AlignmentModule) -> None:
    reference = model.alignment.query_tokens
    model.alignment = alignment.to(device=reference.device, dtype=reference.dtype)
    model.config = replace(model.config, alignment=alignment.config)


def add_vision_lora(encoder: nn.Module, settings: VisionLora) -> None:
    """Wrap the encoder's attention projections with trainable LoRA layers, in place.

    `RaDialogModel.save_pretrained` merges them into the encoder's weights, so the saved checkpoint is a
    plain one (no adapter to ship or load).
    """
    targets = getattr(encoder, "lora_target_modules", None)
    if targets is None:
        raise InputError(f"{type(encoder).__name__} has no LoRA targets: use vision 'frozen' or 'full'")
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=list(targets)
    )
    inject_adapter_in_model(config, encoder)


def set_language_stage_trainable(
    model: RaDialogModel, llm_mode: str, vision: str = "frozen", vision_lora: VisionLora | None = None
) -> None:
    """Stage 2's trainable parameters: the projection always; LoRA or the whole LLM per `llm_mode`; the
    image side per `vision` (LoRA on the encoder, or encoder and alignment module in full)."""
    if vision not in VISION_MODES:
        raise InputError(f"vision must be one of {VISION_MODES}, got {vision!r}")
    if vision == "lora":
        add_vision_lora(model.image_encoder, vision_lora or VisionLora())
    freeze(model)
    unfreeze(model.alignment.language_projection)
    if vision == "full":
        unfreeze(model.image_encoder)
        unfreeze(model.alignment)
    elif vision == "lora":
        for name, p in model.image_encoder.named_parameters():
            p.requires_grad_("lora_" in name)
    if llm_mode == "full":
        unfreeze(model.language_model)
    elif llm_mode == "lora":
        for name, p in model.language_model.named_parameters():
            p.requires_grad_("lora_" in name)


class ClassifierObjective(nn.Module):
    def __init__(self, model: RaDialogModel) -> None:
        super().__init__()
        self.classifier = model.classifier
        unfreeze(self.classifier)

    def forward(self, batch: dict) -> torch.Tensor:
        logits = self.classifier(batch["classifier_pixel_values"])
        # A label the backend has no output for (NaN logit, torchxrayvision's No Finding) is left out.
        predicted = ~logits.isnan()
        weight = batch["target_mask"] * predicted
        return F.binary_cross_entropy_with_logits(logits.where(predicted, 0.0), batch["targets"], weight=weight)


class AlignmentObjective(nn.Module):
    """ITC + ITM on (image, report) pairs; the pretraining heads live here, not in the inference model.

    Building it gives the model's Q-Former its text branch (`add_text_branch`); `end_alignment_stage` takes
    the branch out again, with the heads, for the stage-1 heads file.
    """

    def __init__(self, model: RaDialogModel, embed_dim: int, max_text_tokens: int) -> None:
        super().__init__()
        add_text_branch(model)
        self.image_encoder = model.image_encoder.eval()
        freeze(self.image_encoder)
        self.alignment: AlignmentModule = model.alignment
        unfreeze(self.alignment)
        freeze(self.alignment.language_projection)  # belongs to stage 2
        reference = self.alignment.query_tokens
        heads = AlignmentHeads(self.alignment.config.hidden_size, embed_dim)
        self.heads = heads.to(device=reference.device, dtype=reference.dtype)
        path = resolve_model_path(self.alignment.config.text_tokenizer, model.source_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.max_text_tokens = max_text_tokens

    def train(self, mode: bool = True) -> AlignmentObjective:
        super().train(mode)
        self.image_encoder.eval()  # frozen: BatchNorm statistics must not drift
        return self

    def _text(self, reports: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(
            reports, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        ).to(device)
        return tokens["input_ids"], tokens["attention_mask"]

    def forward(self, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            image_tokens = self.image_encoder.visual_tokens(batch["pixel_values"])
        queries = self.alignment.query_features(image_tokens)  # (B, Q, H)
        input_ids, text_mask = self._text(batch["report"], image_tokens.device)

        # ITC: best-matching query per pair; identical reports (common for normal studies) count as positives.
        sim = self.heads.similarity(queries, self.alignment.text_features(input_ids, text_mask))  # (B, B)
        reports = batch["report"]
        same = torch.tensor([[a == b for b in reports] for a in reports], dtype=sim.dtype, device=sim.device)
        targets = same / same.sum(1, keepdim=True)
        itc = (
            -(F.log_softmax(sim, 1) * targets).sum(1).mean() - (F.log_softmax(sim.t(), 1) * targets).sum(1).mean()
        ) / 2

        # ITM: each image with its own report (match) and with a hard negative report (no match).
        with torch.no_grad():
            weights = F.softmax(sim, dim=1).masked_fill(same.bool(), 0) + 1e-6
        negative = torch.multinomial(weights, 1).squeeze(1)
        pair_ids = torch.cat([input_ids, input_ids[negative]])
        pair_mask = torch.cat([text_mask, text_mask[negative]])
        pair_images = torch.cat([image_tokens, image_tokens])
        pair_queries = self.alignment.query_tokens.expand(pair_ids.shape[0], -1, -1)
        query_mask = torch.ones(pair_queries.shape[:2], dtype=pair_mask.dtype, device=pair_mask.device)
        qformer, embed = self.alignment.qformer, self.alignment.text_embeddings
        fused = qformer(
            query_embeds=embed(input_ids=pair_ids, query_embeds=pair_queries),
            attention_mask=torch.cat([query_mask, pair_mask], dim=1),
            query_length=pair_queries.shape[1],
            encoder_hidden_states=pair_images,
            encoder_attention_mask=torch.ones(pair_images.shape[:2], dtype=torch.long, device=pair_images.device),
        ).last_hidden_state[:, : pair_queries.shape[1]]
        logits = self.heads.itm_head(fused).mean(1)
        labels = torch.cat([torch.ones_like(negative), torch.zeros_like(negative)])
        labels[len(negative) :] = same[torch.arange(len(negative)), negative].long()  # a duplicate text is a match
        itm = F.cross_entropy(logits, labels)
        return itc + itm


def end_alignment_stage(model: RaDialogModel, heads: AlignmentHeads) -> dict[str, torch.Tensor]:
    """Take the text branch out of the model and return what only stage 1 uses: the branch (`alignment.*`)
    and the heads, the contents of `ALIGNMENT_HEADS_NAME` as `radialog convert` writes a release's, so
    `radialog check-release` can run image–report retrieval on the stage-1 checkpoint."""
    branch = remove_text_branch(model)
    return {k: v.detach().contiguous().cpu() for k, v in {**branch, **heads.state_dict()}.items()}


class LanguageObjective(nn.Module):
    """Next-token loss on the answers, with cached Q-Former outputs feeding the trainable projection."""

    def __init__(
        self,
        model: RaDialogModel,
        llm_mode: str,
        images: ImageReportDataset,
        query_cache: torch.Tensor | None,
        vision: str = "frozen",
        vision_lora: VisionLora | None = None,
        answer_weighting: str = "token",
    ) -> None:
        super().__init__()
        if vision != "frozen" and query_cache is not None:
            raise ValueError(f"vision {vision!r} trains the image side: its features cannot come from a cache")
        self.model = model
        self.images = images
        set_language_stage_trainable(model, llm_mode, vision, vision_lora)
        self.register_buffer("query_cache", query_cache, persistent=False)
        self.vision = vision
        self.answer_weighting = answer_weighting

    def train(self, mode: bool = True) -> LanguageObjective:
        super().train(mode)
        if self.vision == "frozen":
            self.model.image_encoder.eval()
        if self.model.classifier is not None:
            self.model.classifier.eval()
        return self

    def forward(self, batch: dict) -> torch.Tensor:
        projection = self.model.alignment.language_projection
        if self.query_cache is not None:
            image_embeds = projection(self.query_cache[batch["image_index"]].to(projection.weight.dtype))
        else:
            indices = batch["image_index"].tolist()
            pixels = collate_images([self.images[i] for i in indices])["pixel_values"]
            image_embeds = self.model.get_image_features(pixels.to(projection.weight.device, projection.weight.dtype))
        image_embeds = image_embeds[batch["has_image"]]
        embeds = self.model.embed_inputs(batch["input_ids"], image_embeds if len(image_embeds) else None)
        llm = self.model.base_language_model  # LoRA layers sit inside it, so they take part
        hidden = llm.get_decoder()(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).last_hidden_state
        # Vocabulary logits only where there is an answer token to predict: most of each sequence is
        # prompt, and full logits (batch × length × vocabulary) dominate the memory of a 7B model.
        targets = batch["labels"][:, 1:]
        answer = targets != IGNORE_INDEX
        logits = llm.get_output_embeddings()(hidden[:, :-1][answer])
        if self.answer_weighting == "token":
            return F.cross_entropy(logits.float(), targets[answer])
        token_losses = F.cross_entropy(logits.float(), targets[answer], reduction="none")
        turn = answer_turns(answer)
        turn_lengths = torch.bincount(turn)
        return (token_losses / turn_lengths[turn]).sum() / len(turn_lengths)


def answer_turns(answer: torch.Tensor) -> torch.Tensor:
    """The answer turn of each True of a (batch, length) mask, numbered from 0 in row-major order: a turn
    is a run of consecutive answer tokens within a row."""
    starts = answer.clone()
    starts[:, 1:] &= ~answer[:, :-1]
    return (torch.cumsum(starts.flatten(), 0) - 1)[answer.flatten()]


@torch.no_grad()
def cache_query_features(model: RaDialogModel, images: ImageReportDataset, batch_size: int = 32) -> torch.Tensor:
    """(N, Q, H) Q-Former outputs of every image, in dataset order, computed once with frozen weights."""
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="caching image embeddings"):
        batch = collate_images([images[i] for i in range(start, min(start + batch_size, len(images)))])
        pixels = batch["pixel_values"].to(model.device, model.dtype)
        chunks.append(model.alignment.query_features(model.image_encoder.visual_tokens(pixels)).cpu())
    return torch.cat(chunks)

"""`radialog train`: runs the configured stages in order, resumable at any step.

Output directory:

    trainer_state.json     completed stages, their losses and number of training samples
    stage-<name>/          the model after each completed stage (a `from_pretrained` checkpoint);
                           stage-alignment/ also keeps what only stage 1 uses, the ITC/ITM heads and
                           the Q-Former's text branch, in alignment_heads.safetensors
    in-progress/<name>/    the interrupted stage's trainable weights, optimizer and step
    final/                 the trained model
    loss.png, metrics.json
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file

from radialog.data import ManifestRecord, read_manifest
from radialog.errors import InputError
from radialog.jsonl import iter_jsonl
from radialog.model.alignment import ALIGNMENT_HEADS_NAME
from radialog.model.modeling import RaDialogModel
from radialog.model.presets import get_preset
from radialog.training.config import TrainConfig
from radialog.training.conversations import ConversationSample
from radialog.training.datasets import (
    ConversationDataset,
    ImageReportDataset,
    collate_images,
    make_conversation_collate,
    report_sample,
)
from radialog.training.evaluation import evaluate_model
from radialog.training.loop import plot_losses, run_stage
from radialog.training.objectives import (
    AlignmentObjective,
    ClassifierObjective,
    LanguageObjective,
    cache_query_features,
    end_alignment_stage,
    remove_text_branch,
)

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"


@dataclass
class TrainResult:
    output_dir: Path
    losses: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)  # training samples per stage
    metrics: dict | None = None


def _read_state(output_dir: Path) -> dict:
    path = output_dir / STATE_NAME
    state = json.loads(path.read_text()) if path.is_file() else {"completed": [], "losses": {}}
    state.setdefault("samples", {})  # absent from the state files of older runs
    return state


def _initial_model(config: TrainConfig, device: torch.device, state: dict, output_dir: Path) -> RaDialogModel:
    dtype = config.torch_dtype
    if state["completed"]:
        last = output_dir / f"stage-{state['completed'][-1]}"
        logger.info("resuming after stage %s from %s", state["completed"][-1], last)
        return RaDialogModel.from_pretrained(last, device=device, dtype=dtype)
    if config.checkpoint is not None:
        return RaDialogModel.from_pretrained(config.checkpoint, device=device, dtype=dtype)
    torch.manual_seed(config.seed)
    return RaDialogModel.from_config(get_preset(config.preset), device=device, dtype=dtype)


def train(config: TrainConfig) -> TrainResult:
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    set_seed(config.seed)
    state = _read_state(output_dir)
    model = _initial_model(config, accelerator.device, state, output_dir)

    manifest = Path(config.data.manifest)
    records = read_manifest(manifest)
    train_records = [r for r in records if r.split in ("train", None)]
    test_records = [r for r in records if r.split == "test"]
    if not train_records:
        raise InputError(f"{manifest} has no training records (split 'train')")
    image_root = Path(config.data.image_root) if config.data.image_root else manifest.parent
    images = ImageReportDataset(
        train_records,
        image_root,
        model.config.image_encoder.processor,
        model.config.classifier.image_encoder.processor if model.config.classifier is not None else None,
        blind=config.data.blind,
    )

    if "classifier" in config.stages and model.classifier is None:
        raise InputError(f"the {model.config.name} model has no findings classifier: leave out the classifier stage")
    if "alignment" in config.stages and model.config.alignment.kind != "qformer":
        raise InputError(f"the {model.config.name} model has no Q-Former to align: leave out the alignment stage")
    for stage in config.stages:
        if stage in state["completed"]:
            continue
        stage_config = config.stage(stage)
        if stage != "alignment":
            remove_text_branch(model)  # a checkpoint written before stage 1 took it out may still have it
        if stage == "classifier":
            objective, dataset, collate = ClassifierObjective(model), images, collate_images
        elif stage == "alignment":
            objective = AlignmentObjective(model, stage_config.embed_dim, stage_config.max_text_tokens)
            dataset, collate = images, collate_images
        else:
            if stage_config.lora_target_modules:
                model.widen_lora(stage_config.lora_target_modules)
            cache = None if stage_config.train_vision else cache_query_features(model, images)
            dataset = ConversationDataset(model, _conversations(config, train_records), stage_config.max_length)
            collate = make_conversation_collate(model.tokenizer.pad_token_id)
            objective = LanguageObjective(
                model,
                stage_config.llm,
                images,
                cache,
                stage_config.vision,
                stage_config.vision_lora,
                stage_config.answer_weighting,
            )
        logger.info("stage %s: %d training samples", stage, len(dataset))
        result = run_stage(
            stage,
            objective,
            dataset,
            collate,
            stage_config,
            accelerator,
            output_dir / "in-progress" / stage,
            config.seed,
            config.checkpoint_every,
            config.num_workers,
        )
        # Later stages and checkpoints get the inference model; stage 1's own parts go to the heads file.
        stage_one = end_alignment_stage(model, objective.heads) if stage == "alignment" else None
        if accelerator.is_main_process:
            stage_dir = output_dir / f"stage-{stage}"
            model.save_pretrained(stage_dir, save_language_model=stage_config.llm == "full")
            if stage_one is not None:  # for image-report retrieval: `radialog check-release stage-alignment/`
                save_file(stage_one, str(stage_dir / ALIGNMENT_HEADS_NAME))
            state["completed"].append(stage)
            state["losses"][stage] = result.losses
            state["samples"][stage] = len(dataset)
            (output_dir / STATE_NAME).write_text(json.dumps(state))
            shutil.rmtree(output_dir / "in-progress" / stage, ignore_errors=True)
        accelerator.wait_for_everyone()

    remove_text_branch(model)  # final/ is the inference model, whatever checkpoint the run started from
    result = TrainResult(output_dir=output_dir, losses=state["losses"], samples=state["samples"])
    if accelerator.is_main_process:
        model.save_pretrained(output_dir / "final", save_language_model=config.language.llm == "full")
        plot_losses(state["losses"], output_dir / "loss.png")
        if test_records:
            result.metrics = evaluate_model(
                model, test_records[: config.eval_max_samples], image_root, blind=config.data.blind
            )
            (output_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2))
    return result


def _conversations(config: TrainConfig, train_records: Sequence[ManifestRecord]) -> list[ConversationSample]:
    """Stage-2 samples: the instruct file's conversations, or report generation from the manifest."""
    if config.data.instruct is None:
        return [report_sample(r, i) for i, r in enumerate(train_records)]
    by_image = {r.image: i for i, r in enumerate(train_records)}
    samples, skipped = [], 0
    for where, sample in iter_jsonl(config.data.instruct):
        if "image" not in sample or "messages" not in sample:
            raise InputError(f"{where}: not an instruct record (needs 'image' and 'messages')")
        if sample["image"] not in by_image:
            skipped += 1  # an image of another split
            continue
        name = f"{where} ({sample['id']})" if "id" in sample else where
        samples.append(ConversationSample(name, sample["messages"], by_image[sample["image"]]))
    if skipped:
        logger.info("instruct data: %d samples of images outside the training split left out", skipped)
    return samples

"""`radialog train`: runs the configured stages in order, resumable at any step.

Output directory:

    trainer_state.json     completed stages and their losses
    stage-<name>/          the model after each completed stage (a `from_pretrained` checkpoint)
    in-progress/<name>/    the interrupted stage's trainable weights, optimizer and step
    final/                 the trained model
    loss.png, metrics.json
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from radialog.data import read_manifest
from radialog.errors import InputError
from radialog.jsonl import iter_jsonl
from radialog.model.modeling import RaDialogModel
from radialog.model.presets import get_preset
from radialog.training.config import TrainConfig
from radialog.training.datasets import (
    ConversationDataset,
    ImageReportDataset,
    collate_images,
    make_conversation_collate,
    report_messages,
)
from radialog.training.evaluation import evaluate_model
from radialog.training.loop import plot_losses, run_stage
from radialog.training.objectives import (
    AlignmentObjective,
    ClassifierObjective,
    LanguageObjective,
    cache_query_features,
)

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"


@dataclass
class TrainResult:
    output_dir: Path
    losses: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict | None = None


def _read_state(output_dir: Path) -> dict:
    path = output_dir / STATE_NAME
    return json.loads(path.read_text()) if path.is_file() else {"completed": [], "losses": {}}


def _initial_model(config: TrainConfig, device: torch.device, state: dict, output_dir: Path) -> RaDialogModel:
    if state["completed"]:
        last = output_dir / f"stage-{state['completed'][-1]}"
        logger.info("resuming after stage %s from %s", state["completed"][-1], last)
        return RaDialogModel.from_pretrained(last, device=device, dtype=torch.float32)
    if config.checkpoint is not None:
        return RaDialogModel.from_pretrained(config.checkpoint, device=device, dtype=torch.float32)
    torch.manual_seed(config.seed)
    return RaDialogModel.from_config(get_preset(config.preset), device=device, dtype=torch.float32)


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
        if stage == "classifier":
            objective, dataset, collate = ClassifierObjective(model), images, collate_images
        elif stage == "alignment":
            objective, dataset, collate = AlignmentObjective(model), images, collate_images
        else:
            cache = None if stage_config.train_vision else cache_query_features(model, images)
            conversations, image_index = _conversations(config, model, train_records)
            dataset = ConversationDataset(model, conversations, image_index, stage_config.max_length)
            collate = make_conversation_collate(model.tokenizer.pad_token_id)
            objective = LanguageObjective(
                model, stage_config.llm, images, cache, stage_config.vision, stage_config.vision_lora
            )
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
        if accelerator.is_main_process:
            model.save_pretrained(output_dir / f"stage-{stage}", save_language_model=stage_config.llm == "full")
            state["completed"].append(stage)
            state["losses"][stage] = result.losses
            (output_dir / STATE_NAME).write_text(json.dumps(state))
            shutil.rmtree(output_dir / "in-progress" / stage, ignore_errors=True)
        accelerator.wait_for_everyone()

    result = TrainResult(output_dir=output_dir, losses=state["losses"])
    if accelerator.is_main_process:
        model.save_pretrained(output_dir / "final", save_language_model=config.language.llm == "full")
        plot_losses(state["losses"], output_dir / "loss.png")
        if test_records:
            result.metrics = evaluate_model(
                model, test_records[: config.eval_max_samples], image_root, blind=config.data.blind
            )
            (output_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2))
    return result


def _conversations(config: TrainConfig, model: RaDialogModel, train_records) -> tuple[list, list[int]]:
    """Stage-2 samples: the instruct file's conversations, or report generation from the manifest."""
    if config.data.instruct is None:
        return [report_messages(model, r) for r in train_records], list(range(len(train_records)))
    by_image = {r.image: i for i, r in enumerate(train_records)}
    conversations, index, skipped = [], [], 0
    for where, sample in iter_jsonl(config.data.instruct):
        if "image" not in sample or "messages" not in sample:
            raise InputError(f"{where}: not an instruct record (needs 'image' and 'messages')")
        if sample["image"] not in by_image:
            skipped += 1  # an image of another split
            continue
        conversations.append(sample["messages"])
        index.append(by_image[sample["image"]])
    if skipped:
        logger.info("instruct data: %d samples of images outside the training split left out", skipped)
    return conversations, index

"""Datasets for the three stages: images with labels and report text, and tokenised conversations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from radialog.imaging import ImageProcessorConfig, XRay, load_xray, preprocess
from radialog.labels import CHEXPERT_LABELS
from radialog.prompts import format_findings
from radialog.training.tokenization import IGNORE_INDEX, encode_conversation


def label_targets(labels: dict[str, int | None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, mask) over the 14 labels: 1 → 1, 0 or blank → 0, uncertain (-1) → left out of the loss."""
    labels = labels or {}
    targets = torch.zeros(len(CHEXPERT_LABELS))
    mask = torch.ones(len(CHEXPERT_LABELS))
    for i, name in enumerate(CHEXPERT_LABELS):
        value = labels.get(name)
        if value == 1:
            targets[i] = 1.0
        elif value == -1:
            mask[i] = 0.0
    return targets, mask


def blank_xray(size: int = 64) -> XRay:
    """A flat gray image: min-max scaling would refuse it, so it is built directly."""
    return XRay(pixels=np.full((size, size), 128, dtype=np.uint8), source_format="blank", original_dtype="uint8")


class ImageReportDataset(Dataset):
    """Manifest records → preprocessed images for the LLM side and the classifier, labels and report."""

    def __init__(
        self,
        records: Sequence[Any],
        image_root: Path,
        image_config: ImageProcessorConfig,
        classifier_config: ImageProcessorConfig | None,
        blind: bool = False,
    ) -> None:
        self.records, self.image_root = list(records), image_root
        self.image_config, self.classifier_config = image_config, classifier_config
        self.blind = blind

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> XRay:
        if self.blind:
            return blank_xray()
        return load_xray(self.image_root / self.records[index].image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self.load(index).to_pil()
        targets, mask = label_targets(record.labels)
        item = {
            "index": index,
            "pixel_values": preprocess(image, self.image_config),
            "targets": targets,
            "target_mask": mask,
            "report": record.findings,
        }
        if self.classifier_config is not None:  # models without a findings classifier (R2GenGPT) skip it
            item["classifier_pixel_values"] = preprocess(image, self.classifier_config)
        return item


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {"report": [item["report"] for item in items]}
    for key in ("index", "pixel_values", "classifier_pixel_values", "targets", "target_mask"):
        if key in items[0]:
            batch[key] = torch.stack([torch.as_tensor(item[key]) for item in items])
    return batch


def report_messages(model, record: Any) -> list[dict[str, str]]:
    """The report-generation sample: the model's report prompt with the record's findings → its findings section."""
    return [
        {"role": "user", "content": model.report_prompt(format_findings(record.positive_labels()))},
        {"role": "assistant", "content": record.findings},
    ]


class ConversationDataset(Dataset):
    """Tokenised conversations, each tied to one image (by `image_index` into an image table)."""

    def __init__(
        self, model, conversations: Sequence[list[dict[str, str]]], image_index: Sequence[int], max_length: int
    ):
        self.items = []
        for messages, index in zip(conversations, image_index, strict=True):
            input_ids, labels = encode_conversation(model, messages, max_length)
            n_image = int((input_ids == model.image_token_id).sum())
            if n_image not in (0, model.num_image_tokens):
                continue  # cut inside the placeholders by max_length: unusable
            self.items.append((input_ids, labels, index, n_image > 0))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        return self.items[index]


def make_conversation_collate(pad_id: int):
    def collate(items: list[tuple[torch.Tensor, torch.Tensor, int, bool]]) -> dict[str, torch.Tensor]:
        input_ids = pad_sequence([item[0] for item in items], batch_first=True, padding_value=pad_id)
        labels = pad_sequence([item[1] for item in items], batch_first=True, padding_value=IGNORE_INDEX)
        lengths = torch.tensor([len(item[0]) for item in items])
        attention_mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "image_index": torch.tensor([item[2] for item in items]),
            "has_image": torch.tensor([item[3] for item in items]),
        }

    return collate

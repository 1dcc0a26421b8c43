"""Datasets for the three stages: images with labels and report text, and tokenised conversations."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from radialog.errors import InputError
from radialog.imaging import ImageProcessorConfig, XRay, load_xray, preprocess
from radialog.labels import CHEXPERT_LABELS
from radialog.prompts import format_predicted_findings
from radialog.training.conversations import REPORT_REQUEST, ConversationSample, report_request
from radialog.training.tokenization import IGNORE_INDEX, encode_conversation

if TYPE_CHECKING:
    from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)


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


def report_sample(record: Any, image_index: int) -> ConversationSample:
    """The report-generation sample: the report request with the record's findings → its findings section."""
    messages = [
        report_request(format_predicted_findings(record.positive_labels())),
        {"role": "assistant", "content": record.findings},
    ]
    return ConversationSample(record.id, messages, image_index)


class ConversationDataset(Dataset):
    """Tokenised conversations, each tied to one image (by `image_index` into an image table).

    A prompt's image positions must be as many as the model reads (or none, for a text-only sample):
    anything else is a sample written for another model, and an `InputError` names it. Samples are cut
    at `max_length` tokens; one that the cut leaves without an answer token to learn, or with part of
    its image, is left out and counted in a warning: real data sets have a few overlong reports, and a
    run should not fail on them, nor lose them unnoticed.
    """

    def __init__(self, model: RaDialogModel, samples: Sequence[ConversationSample], max_length: int) -> None:
        self.items = []
        cut: list[str] = []
        shortened = 0
        for sample in samples:
            try:
                input_ids, labels = encode_conversation(model, sample.messages)
            except InputError as err:
                raise InputError(f"{sample.name}: {err}") from err
            n_image = int((input_ids == model.image_token_id).sum())
            if n_image not in (0, model.num_image_tokens):
                raise InputError(
                    f"{sample.name}: the prompt has {n_image} image positions, the {model.config.name} model reads "
                    f"{model.num_image_tokens}; store the image turn as a report request "
                    f'({{"request": "{REPORT_REQUEST}", ...}}, as `radialog make-instruct` does), not as prompt text'
                )
            if not (labels != IGNORE_INDEX).any():
                raise InputError(f"{sample.name}: no assistant answer to train on")
            shortened += len(input_ids) > max_length
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            n_kept = int((input_ids == model.image_token_id).sum())
            if n_kept not in (0, n_image) or not (labels != IGNORE_INDEX).any():
                cut.append(sample.name)
                continue
            self.items.append((input_ids, labels, sample.image_index, n_kept > 0))
        if cut:
            logger.warning(
                "%d of %d conversations left out: max_length %d cuts them before their first answer token "
                "or inside the image positions (first: %s)",
                len(cut), len(samples), max_length, ", ".join(cut[:3]),
            )  # fmt: skip
        if shortened > len(cut):
            logger.info(
                "%d conversations cut to max_length %d, their last answer shortened", shortened - len(cut), max_length
            )
        if not self.items:
            raise InputError(f"no conversation to train on (of {len(samples)}, {len(cut)} cut by max_length)")

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

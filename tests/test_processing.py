"""The processor: one prompt format object per configured format, and the model's inputs built from it alone."""

from __future__ import annotations

import numpy as np
import torch

from radialog.imaging import XRay
from radialog.model.configuration import PROMPT_FORMATS as CONFIGURED_FORMATS
from radialog.model.processing import (
    PROMPT_FORMATS,
    ChatTemplateFormat,
    R2GenGPTFormat,
    RaDialogProcessor,
    VicunaFormat,
)
from radialog.prompts import IMAGE_PLACEHOLDER


def test_every_configurable_prompt_format_has_its_object():
    assert set(PROMPT_FORMATS) == set(CONFIGURED_FORMATS)
    assert isinstance(PROMPT_FORMATS["vicuna_v1.1"], VicunaFormat)
    assert isinstance(PROMPT_FORMATS["chat_template"], ChatTemplateFormat)
    assert isinstance(PROMPT_FORMATS["r2gengpt"], R2GenGPTFormat)


def test_report_requests_carry_the_findings_only_where_the_model_was_trained_with_them():
    findings = "cardiomegaly, edema"
    assert findings in VicunaFormat().report_prompt(findings, 32)
    assert VicunaFormat().report_prompt(findings, 32).count(IMAGE_PLACEHOLDER) == 32
    r2gengpt = R2GenGPTFormat().report_prompt(findings, 49)
    assert findings not in r2gengpt and r2gengpt.count(IMAGE_PLACEHOLDER) == 49


def test_the_models_processor_tokenizes_what_the_model_embeds(tiny_model):
    processor = tiny_model.processor
    assert isinstance(processor, RaDialogProcessor) and processor.tokenizer is tiny_model.tokenizer
    conversation = processor.report_conversation("no finding")
    ids = processor.tokenize(conversation)
    assert int((ids == tiny_model.image_token_id).sum()) == tiny_model.num_image_tokens
    assert ids[0, 0].item() == tiny_model.tokenizer.bos_token_id  # a Vicuna-style prompt opens with BOS once
    assert torch.equal(tiny_model.prompt_ids(conversation, max_new_tokens=8).cpu(), ids)


def test_images_are_preprocessed_for_the_encoder_and_the_classifier_separately(tiny_model):
    xray = XRay(pixels=np.full((300, 200), 128, dtype=np.uint8), source_format="png", original_dtype="uint8")
    processor = tiny_model.processor
    side = processor.image_processor.crop
    assert processor.pixel_values(xray).shape == (1, 3, side, side)
    classifier_side = processor.classifier_image_processor.crop
    assert processor.classifier_pixel_values(xray).shape == (1, 3, classifier_side, classifier_side)

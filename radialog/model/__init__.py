"""The RaDialog model: image encoder, alignment module, findings classifier and LLM."""

from radialog.model.alignment import AlignmentModule
from radialog.model.classifier import FindingsClassifier, XRVFindingsClassifier
from radialog.model.configuration import (
    AlignmentConfig,
    FindingsClassifierConfig,
    GenerationSettings,
    ImageEncoderConfig,
    LanguageModelConfig,
    LoraSettings,
    RaDialogConfig,
)
from radialog.model.image_encoder import ImageEncoder
from radialog.model.modeling import EncodedImage, RaDialogModel, ReportResult
from radialog.model.presets import PRESETS, get_preset

__all__ = [
    "PRESETS",
    "AlignmentConfig",
    "AlignmentModule",
    "EncodedImage",
    "FindingsClassifier",
    "FindingsClassifierConfig",
    "GenerationSettings",
    "ImageEncoder",
    "ImageEncoderConfig",
    "LanguageModelConfig",
    "LoraSettings",
    "RaDialogConfig",
    "RaDialogModel",
    "ReportResult",
    "XRVFindingsClassifier",
    "get_preset",
]

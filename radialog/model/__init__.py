"""The RaDialog model: image encoder, alignment module, findings classifier and LLM (also R2GenGPT's)."""

from radialog.model.alignment import AlignmentModule, LinearAlignment
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
from radialog.model.swin_encoder import SwinImageEncoder

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
    "LinearAlignment",
    "LoraSettings",
    "RaDialogConfig",
    "RaDialogModel",
    "ReportResult",
    "SwinImageEncoder",
    "XRVFindingsClassifier",
    "get_preset",
]

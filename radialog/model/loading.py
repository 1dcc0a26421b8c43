"""Choosing and loading a model the same way in every entry point (CLI, app, benchmarks)."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from radialog.model.modeling import RaDialogModel
from radialog.model.presets import PRESETS, get_preset

logger = logging.getLogger(__name__)

CHECKPOINT_ENV = "RADIALOG_CHECKPOINT"
DEFAULT_CHECKPOINT_DIR = Path("checkpoints/default")
# The `demo` preset trained on synthetic radiographs, shipped inside the package (see its MODEL_CARD.md).
EMBEDDED_CHECKPOINT = Path(__file__).resolve().parent.parent / "demo_checkpoint"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a checkpoint directory or a named preset (random where not pretrained)."""

    checkpoint: Path | None = None
    preset: str | None = None

    @property
    def label(self) -> str:
        if self.is_embedded:
            return "embedded:demo_checkpoint"  # not the install path, which says nothing to a user
        return str(self.checkpoint) if self.checkpoint is not None else f"preset:{self.preset}"

    @property
    def is_embedded(self) -> bool:
        return self.checkpoint is not None and self.checkpoint.resolve() == EMBEDDED_CHECKPOINT

    @property
    def is_demo(self) -> bool:
        """Presets (random or partly pretrained) and the embedded checkpoint never saw a real radiograph."""
        return self.checkpoint is None or self.is_embedded


def resolve_source(checkpoint: str | Path | None = None, preset: str | None = None) -> ModelSource:
    """Explicit choice first, then $RADIALOG_CHECKPOINT, then checkpoints/default, then the embedded demo."""
    if checkpoint is not None and preset is not None:
        raise ValueError("give either a checkpoint or a preset, not both")
    if preset is not None:
        return ModelSource(preset=preset)
    if checkpoint is not None:
        return ModelSource(checkpoint=Path(checkpoint))
    if os.environ.get(CHECKPOINT_ENV):
        return ModelSource(checkpoint=Path(os.environ[CHECKPOINT_ENV]))
    if (DEFAULT_CHECKPOINT_DIR / "config.json").is_file():
        return ModelSource(checkpoint=DEFAULT_CHECKPOINT_DIR)
    logger.warning(
        "no checkpoint found (%s unset, %s empty): using the embedded demo checkpoint, "
        "trained on synthetic images only and not for clinical use",
        CHECKPOINT_ENV,
        DEFAULT_CHECKPOINT_DIR,
    )
    return ModelSource(checkpoint=EMBEDDED_CHECKPOINT)


def load_model(
    source: ModelSource,
    device: str | None = None,
    dtype: str | None = None,
    quantization: str | None = None,
    seed: int = 0,
) -> RaDialogModel:
    torch_dtype = DTYPES[dtype] if dtype is not None else None
    if source.checkpoint is not None:
        return RaDialogModel.from_pretrained(
            source.checkpoint, device=device, dtype=torch_dtype, quantization=quantization
        )
    # Randomly initialised parts are seeded so the same preset always gives the same model.
    torch.manual_seed(seed)
    return RaDialogModel.from_config(
        get_preset(source.preset), device=device, dtype=torch_dtype, quantization=quantization
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--checkpoint",
        help="checkpoint directory (default: $RADIALOG_CHECKPOINT, checkpoints/default, or the embedded demo)",
    )
    group.add_argument("--preset", choices=sorted(PRESETS), help="build a named configuration instead")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default=None,
        help="one dtype for every part (default: float32 on CPU; on a GPU the model's own precision settings: "
        "radialog-v1 float32 vision and float16 LLM, as RaDialog ran, others bfloat16)",
    )
    parser.add_argument("--quantization", choices=["8bit", "4bit"], default=None, help="load the LLM quantised (GPU)")


def load_model_from_args(args: argparse.Namespace) -> RaDialogModel:
    return load_model(resolve_source(args.checkpoint, args.preset), args.device, args.dtype, args.quantization)

"""R2GenGPT's image encoder: a Swin transformer whose last hidden state is the image's token sequence.

R2GenGPT reads `SwinModel(...).last_hidden_state` of microsoft/swin-base-patch4-window7-224: 7 × 7 = 49
tokens of width 1024 for a 224-px image, after Swin's final LayerNorm. The model is built here from a
`SwinConfig` (so the tiny test sizes need no download) and, when `pretrained` names a local Hugging Face
directory, takes that checkpoint's weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import SwinConfig, SwinModel

from radialog.errors import CheckpointError
from radialog.model.configuration import ImageEncoderConfig

logger = logging.getLogger(__name__)


class SwinImageEncoder(nn.Module):
    """(B, 3, S, S) normalised pixels → (B, num_patches, token_dim) tokens, as `ImageEncoder.visual_tokens`."""

    # The attention projections R2GenGPT's "delta" mode wraps with LoRA (`query`/`value` before transformers 5).
    lora_target_modules = ("q_proj", "v_proj")

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        # No pooler: R2GenGPT's default reads the token sequence, and the pooler has no weights anyway.
        self.swin = SwinModel(SwinConfig(**config.swin), add_pooling_layer=False)

    def load_pretrained(self, directory: str | Path) -> None:
        """Weights of a local Hugging Face Swin checkpoint; transformers renames its pre-v5 keys on load."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise CheckpointError(f"no Swin checkpoint at {directory} (missing config.json)")
        pretrained = SwinModel.from_pretrained(directory, local_files_only=True, add_pooling_layer=False)
        self.swin.load_state_dict(pretrained.state_dict(), strict=True)
        logger.info("Swin image encoder initialised from %s", directory)

    def visual_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.swin(pixel_values=pixel_values).last_hidden_state

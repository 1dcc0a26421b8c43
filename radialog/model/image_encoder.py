"""BioViL-T image encoder: a ResNet trunk with a multi-image (temporal) head, plus a patch projector.

The module tree mirrors Microsoft's hi-ml-multimodal `ImageModel` (RESNET50_MULTI_IMAGE), so that the
released `biovil_t_image_model_proj_size_128.pt` loads with `load_state_dict(strict=True)`:

    encoder.encoder.*          ResNet (torchvision layout, `fc` kept for key compatibility)
    encoder.backbone_to_vit    1×1 conv 2048 → 256
    encoder.vit_pooler.*       3 transformer blocks comparing current and previous image
    encoder.missing_previous_emb  learned stand-in when there is no previous image
    projector.model.{0,1,3}    1×1 conv → BatchNorm → ReLU → 1×1 conv

RaDialog replaces the 128-d projector by a 512 → 1408 one (`projection_dim=1408`) and adds a LayerNorm
over the flattened patch tokens (`ln_vision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18, resnet50

from radialog.model.configuration import ImageEncoderConfig
from radialog.model.swin_encoder import SwinImageEncoder

RESNETS = {"resnet50": resnet50, "resnet18": resnet18}


class _PoolerAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (BioViL-T's parameter layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.proj_q = nn.Linear(dim, dim, bias=False)
        self.proj_k = nn.Linear(dim, dim, bias=False)
        self.proj_v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, nh, N, hs)

        out = nn.functional.scaled_dot_product_attention(
            heads(self.proj_q(x)), heads(self.proj_k(x)), heads(self.proj_v(x))
        )
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class _PoolerMlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _PoolerBlock(nn.Module):
    """Pre-norm transformer block; position/type embeddings are added to the normed input of attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _PoolerAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _PoolerMlp(dim)

    def forward(self, x: torch.Tensor, pos_and_type: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x) + pos_and_type)
        return x + self.mlp(self.norm2(x))


def sine_position_embedding(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR-style normalised 2-D sine embedding, (H*W, dim): first half encodes y, second half x."""
    half = dim // 2
    y = torch.arange(1, height + 1, dtype=torch.float32)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32)[None, :].expand(height, width)
    y = y / (height + 1e-6) * 2 * math.pi
    x = x / (width + 1e-6) * 2 * math.pi
    freqs = temperature ** (2 * torch.div(torch.arange(half), 2, rounding_mode="floor") / half)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord[..., None] / freqs  # (H, W, half)
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(2)

    return torch.cat((encode(y), encode(x)), dim=-1).view(height * width, dim)


class TemporalPooler(nn.Module):
    """Attends over current and previous patch grids; returns the current image's updated grid."""

    def __init__(self, dim: int, grid_size: int, num_heads: int = 8, num_blocks: int = 3) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.blocks = nn.ModuleList([_PoolerBlock(dim, num_heads) for _ in range(num_blocks)])
        self.norm_post = nn.LayerNorm(dim, eps=1e-6)
        self.type_embed = nn.Parameter(torch.zeros(2, 1, dim))  # current, previous
        self.register_buffer("pos_embed", sine_position_embedding(grid_size, grid_size, dim), persistent=False)

    def forward(self, current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        B, C, H, W = current.shape
        if (self.grid_size, self.grid_size) != (H, W):
            raise ValueError(f"the temporal pooler expects a {self.grid_size}×{self.grid_size} grid, got {H}×{W}")
        tokens = torch.cat([current.flatten(2).transpose(1, 2), previous.flatten(2).transpose(1, 2)], dim=1)
        pos = self.pos_embed.to(tokens.dtype).repeat(2, 1)
        types = self.type_embed.to(tokens.dtype).repeat_interleave(H * W, dim=0).squeeze(1)
        pos_and_type = (pos + types)[None]
        for block in self.blocks:
            tokens = block(tokens, pos_and_type)
        tokens = self.norm_post(tokens)
        return tokens[:, : H * W].transpose(1, 2).reshape(B, C, H, W)


class _CnnTrunk(nn.Module):
    """Holds a torchvision CNN (as `encoder`) and returns its last feature map, not the pooled logits.

    ResNets keep torchvision's whole module (with the unused `fc`) so hi-ml's keys match; MobileNetV3-small
    (the demo preset's ~1M-parameter trunk) keeps only its `features`, since nothing needs its head.
    """

    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone == "mobilenet_v3_small":
            # torchvision's MobileNetV3 tracks BatchNorm statistics with momentum 0.01: trained from scratch
            # for a few hundred steps, they lag so far behind the weights that eval-mode outputs are
            # wrong. PyTorch's default 0.1 (as in the ResNets) keeps up.
            norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)
            self.encoder = mobilenet_v3_small(weights=None, norm_layer=norm).features
        elif backbone in RESNETS:
            self.encoder = RESNETS[backbone](weights=None)
        else:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {[*RESNETS, 'mobilenet_v3_small']}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.encoder
        if isinstance(r, nn.Sequential):
            return r(x)
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        return r.layer4(r.layer3(r.layer2(r.layer1(x))))


class MultiImageTrunk(_CnnTrunk):
    """BioViL-T's trunk: CNN → 1×1 conv to 256, fused with a previous-image (or "missing") map → 512."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__(config.backbone)
        self.backbone_to_vit = nn.Conv2d(config.backbone_dim, config.temporal_dim, kernel_size=1, bias=False)
        self.vit_pooler = TemporalPooler(config.temporal_dim, config.temporal_grid_size)
        self.missing_previous_emb = nn.Parameter(torch.zeros(1, config.temporal_dim, 1, 1))

    def forward(self, image: torch.Tensor, previous_image: torch.Tensor | None = None) -> torch.Tensor:
        if previous_image is None:
            current = self.backbone_to_vit(super().forward(image))
            B, _, H, W = current.shape
            difference = self.missing_previous_emb.expand(B, -1, H, W)
        else:
            both = self.backbone_to_vit(super().forward(torch.cat([image, previous_image], dim=0)))
            current, previous = both.split(image.shape[0])
            difference = self.vit_pooler(current, previous)
        return torch.cat([current, difference], dim=1)  # (B, 2 * temporal_dim, H, W)


class PatchProjector(nn.Module):
    """1×1 conv → BatchNorm → ReLU → 1×1 conv, kept as `model.{0,1,2,3}` like hi-ml's MLP."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, kernel_size=1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass
class ImageEncoderOutput:
    patch_embeddings: torch.Tensor  # (B, 512, h, w) fused current/previous features
    projected_patch_embeddings: torch.Tensor  # (B, projection_dim, h, w)


class ImageEncoder(nn.Module):
    """BioViL-T image model. `visual_tokens()` gives RaDialog's (B, h*w, projection_dim) token sequence."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MultiImageTrunk(config)
        self.projector = PatchProjector(2 * config.temporal_dim, config.projection_dim)
        self.ln_vision = nn.LayerNorm(config.projection_dim) if config.token_layer_norm else None
        self._init_weights()

    def _init_weights(self) -> None:
        # Same scheme as BioViL-T's: truncated normal (std 0.02) for the transformer parts.
        nn.init.trunc_normal_(self.encoder.missing_previous_emb, std=0.02)
        nn.init.trunc_normal_(self.encoder.vit_pooler.type_embed, std=0.02)
        for module in self.encoder.vit_pooler.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor, previous_image: torch.Tensor | None = None) -> ImageEncoderOutput:
        patches = self.encoder(image, previous_image)
        return ImageEncoderOutput(patch_embeddings=patches, projected_patch_embeddings=self.projector(patches))

    def visual_tokens(self, image: torch.Tensor, previous_image: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, S, S) → (B, h*w, projection_dim) tokens for the alignment module.

        RaDialog v1 flattens the channels-first grid with a plain `reshape(B, -1, D)`, without moving
        the channel axis last, so each "token" is a run of D consecutive values of the (D, h, w) tensor
        rather than one patch's feature vector. Its released Q-Former was trained on exactly these
        tokens, so we keep the same (odd) flattening: a permute here would break the released weights.
        """
        projected = self.forward(image, previous_image).projected_patch_embeddings
        tokens = projected.reshape(projected.shape[0], -1, self.config.projection_dim)
        return self.ln_vision(tokens) if self.ln_vision is not None else tokens


def build_image_encoder(config: ImageEncoderConfig) -> ImageEncoder | SwinImageEncoder:
    return SwinImageEncoder(config) if config.kind == "swin" else ImageEncoder(config)

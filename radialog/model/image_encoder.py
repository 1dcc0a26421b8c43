"""BioViL-T image encoder: a ResNet trunk with a multi-image (temporal) head, plus a patch projector.

The module tree mirrors Microsoft's hi-ml-multimodal `ImageModel` (RESNET50_MULTI_IMAGE), so that the
released `biovil_t_image_model_proj_size_128.pt` loads with `load_state_dict(strict=True)`:

    encoder.encoder.*          ResNet (torchvision layout, `fc` kept for key compatibility)
    encoder.backbone_to_vit    1×1 conv 2048 → 256
    encoder.vit_pooler.*       3 transformer blocks comparing current and previous image
    encoder.missing_previous_emb  learned stand-in when there is no previous image
    projector.model.{0,1,3}    1×1 conv → BatchNorm → ReLU → 1×1 conv

RaDialog replaces the 128-d projector by a 512 → 1408 one (`projection_dim=1408`) and adds a LayerNorm
over the flattened patch tokens (`ln_vision`); `ImageEncoder.load_pretrained` therefore takes only the
trunk (`encoder.*`) from the released file.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18, resnet50

from radialog.errors import CheckpointError
from radialog.model.configuration import ImageEncoderConfig
from radialog.model.serialization import load_torch_file
from radialog.model.swin_encoder import SwinImageEncoder
from radialog.release import BIOVIL_FILE

logger = logging.getLogger(__name__)

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
    """Attends over current and previous patch grids; returns the current image's updated grid.

    Built in hi-ml's order, drawing the same random numbers (blocks, then the truncated-normal type
    embedding, then every linear weight), so that a seeded build equals hi-ml's (see `rebuild_projector`).
    """

    def __init__(self, dim: int, grid_size: int, num_heads: int = 8, num_blocks: int = 3) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.blocks = nn.ModuleList([_PoolerBlock(dim, num_heads) for _ in range(num_blocks)])
        self.norm_post = nn.LayerNorm(dim, eps=1e-6)
        self.type_embed = nn.Parameter(torch.zeros(2, 1, dim))  # current, previous
        nn.init.trunc_normal_(self.type_embed, std=0.02)
        self.register_buffer("pos_embed", sine_position_embedding(grid_size, grid_size, dim), persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

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
        nn.init.trunc_normal_(self.missing_previous_emb, std=0.02)

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

    def load_pretrained(self, path: str | Path) -> None:
        """BioViL-T's released image weights, as hi-ml-multimodal publishes them: a state dict file
        (`biovil_t_image_model_proj_size_128.pt`) or a directory holding it.

        Only the trunk (`encoder.*`: ResNet, `backbone_to_vit`, temporal pooler, missing-previous embedding)
        is taken, and all of it: a missing, unexpected or mis-shaped key is a CheckpointError. The file's
        `projector.*` is BioViL-T's own 128-d joint-space head; RaDialog's 512 → `projection_dim` projector
        and `ln_vision` are not part of BioViL-T's release and stay as initialised.
        """
        path = Path(path)
        if path.is_dir():
            path = path / BIOVIL_FILE
        if not path.is_file():
            raise CheckpointError(f"BioViL-T image weights not found: {path}")
        saved = load_torch_file(path)
        if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
            raise CheckpointError(f"{path} is not a state dict of tensors (hi-ml-multimodal's ImageModel layout)")
        trunk = {k: v for k, v in saved.items() if not k.startswith("projector.")}
        expected = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        missing, unexpected = sorted(expected.keys() - trunk.keys()), sorted(trunk.keys() - expected.keys())
        wrong_shape = [
            f"{k} {tuple(trunk[k].shape)} ≠ {tuple(expected[k].shape)}"
            for k in sorted(expected.keys() & trunk.keys())
            if trunk[k].shape != expected[k].shape
        ]
        if missing or unexpected or wrong_shape:
            problems = [
                f"{len(keys)} {what} {keys[:5]}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong_shape))
                if keys
            ]
            raise CheckpointError(f"{path} does not fit the BioViL-T image encoder: " + "; ".join(problems))
        self.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in trunk.items()}, strict=True)
        logger.info("BioViL-T image encoder initialised from %s", path)

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


# hi-ml measures its trunk's output width with one forward pass on a random image of this size.
_HIML_PROBE_IMAGE = (1, 3, 448, 448)


def rebuild_projector(config: ImageEncoderConfig, seed: int) -> dict[str, torch.Tensor]:
    """The projector RaDialog v1 ran with: the weights its construction drew from `seed`.

    RaDialog froze the BioViL-T image model together with its new projector, and LAVIS saves only
    parameters that require grad, so the projector's weights are in no released file: they are what
    `torch.manual_seed(seed)` followed by hi-ml-multimodal's `ImageModel(RESNET50_MULTI_IMAGE,
    joint_feature_size=1408)` produced. This replays every random draw of that construction, in order:
    the ResNet (torchvision's init), the probe image of `get_encoder_output_dim` in `MultiImageEncoder`,
    `backbone_to_vit`, the temporal pooler, the missing-previous embedding, the probe image again (in
    `ImageModel`), then the projector. Nothing in RaDialog's code draws from torch's generator between
    its `setup_seeds` and this construction (the BERT tokenizer and the datasets draw nothing). The global
    random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _CnnTrunk(config.backbone)
        torch.rand(_HIML_PROBE_IMAGE)
        nn.Conv2d(config.backbone_dim, config.temporal_dim, kernel_size=1, bias=False)
        TemporalPooler(config.temporal_dim, config.temporal_grid_size)
        nn.init.trunc_normal_(torch.empty(1, config.temporal_dim, 1, 1), std=0.02)
        torch.rand(_HIML_PROBE_IMAGE)
        return PatchProjector(2 * config.temporal_dim, config.projection_dim).state_dict()


def build_image_encoder(config: ImageEncoderConfig) -> ImageEncoder | SwinImageEncoder:
    return SwinImageEncoder(config) if config.kind == "swin" else ImageEncoder(config)

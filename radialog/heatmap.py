"""Per-finding heatmaps: where in the image the CheXpert classifier's evidence for one finding lies.

The map is layer integrated gradients (Sundararajan et al., 2017) over a feature map of the classifier's
image trunk: the feature map is scaled from 0 to its value along `IG_STEPS` points, the finding's logit is
differentiated at each, and the mean gradient times the activation, summed over channels and clipped at 0,
is each position's share of the logit's rise from an all-zero feature map (the shares add up to that rise).

Why not the gradient at the image alone (Grad-CAM, or HiResCAM, its variant without the channel average):
the demo classifier is sure of what it finds (logits far past the threshold), and there the local gradient
no longer follows the evidence that made it sure; it peaked at the same places of the lung bases whether a
tube was drawn or not. Integrating along the path from zero keeps the credit with the features that raised
the logit. On unseen synthetic films the HiResCAM peak lay on a drawn endotracheal tube in 0 of 8 with
the first demo checkpoint and on 74 % of devices with the retrained one; the integrated-gradients peak
on all of them, with both, on every tested stage of the trunk (docs/evaluation.md, "Heatmaps";
`benchmarks/heatmap_pointing.py --method hirescam` repeats the comparison).

The feature map is the trunk's stride-16 stage (`HEATMAP_LAYERS`): a 14 × 14 grid at 224 pixels, fine
enough for a tube, and the stage every backbone has. The map is enlarged onto the square that the
classifier's preprocessing cut out of the image (shorter side resized, centre crop), in the decoded
image's pixels; outside it the map is 0.

Our own forward hooks rather than captum or the `grad-cam` package: the classifier heads are ours, so the
layer is known, and one batched forward plus `torch.autograd.grad` is the whole method; no extra
dependency, no `.grad` left on the weights, and the same code runs in any dtype on any device.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from radialog.errors import InputError
from radialog.imaging import ImageProcessorConfig, XRay, preprocess
from radialog.labels import CHEXPERT_LABELS
from radialog.model.classifier import FindingsClassifier, XRVFindingsClassifier
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)

OVERLAY_ALPHA = 0.45  # how much of the colour map covers the film at the map's peak


@dataclass(frozen=True)
class Heatmap:
    """A finding's class-activation map in the decoded image's pixel grid.

    `values` is (H, W) float32 in [0, 1] (1 at the peak; all 0 when nothing in the image raised the
    logit), 0 outside `box`, the (left, top, right, bottom) region the classifier saw.
    """

    finding: str
    probability: float
    values: np.ndarray
    box: tuple[float, float, float, float]

    @property
    def peak(self) -> tuple[int, int]:
        """(x, y) pixel of the map's maximum."""
        row, col = np.unravel_index(int(np.argmax(self.values)), self.values.shape)
        return int(col), int(row)

    def points_at(self, region: np.ndarray, tolerance: float) -> bool:
        """The pointing game's hit: the peak lies within `tolerance` pixels of the (H, W) bool `region`."""
        rows, cols = np.nonzero(region)
        if rows.size == 0:
            return False
        x, y = self.peak
        return bool(((cols - x) ** 2 + (rows - y) ** 2).min() <= tolerance * tolerance)

    def mass_near(self, region: np.ndarray, tolerance: float) -> float:
        """The energy-based pointing game (Wang et al., 2020): the share of the map's mass that lies within
        `tolerance` pixels of the (H, W) bool `region` (0 for an empty map)."""
        total = float(self.values.sum())
        return float(self.values[within(region, tolerance)].sum()) / total if total > 0 else 0.0


def within(region: np.ndarray, tolerance: float) -> np.ndarray:
    """(H, W) bool: the pixels at most `tolerance` pixels from the (H, W) bool `region`."""
    radius = math.floor(tolerance)
    offsets = np.arange(-radius, radius + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= tolerance * tolerance).astype(np.float32)
    mask = torch.from_numpy(region.astype(np.float32))[None, None]
    return (nn.functional.conv2d(mask, torch.from_numpy(disk)[None, None], padding=radius)[0, 0] > 0.5).numpy()


def model_view_box(width: int, height: int, processor: ImageProcessorConfig) -> tuple[float, float, float, float]:
    """The part of a `width` × `height` image that `preprocess` keeps, in that image's pixels."""
    if processor.square:
        return 0.0, 0.0, float(width), float(height)
    # torchvision's resize: the shorter side becomes `resize`, the longer one is truncated to an int.
    short, long = min(width, height), max(width, height)
    resized_long = int(processor.resize * long / short)
    resized_w, resized_h = (resized_long, processor.resize) if width >= height else (processor.resize, resized_long)
    # torchvision's center_crop rounds the offset.
    left = round((resized_w - processor.crop) / 2.0)
    top = round((resized_h - processor.crop) / 2.0)
    scale_x, scale_y = width / resized_w, height / resized_h
    return left * scale_x, top * scale_y, (left + processor.crop) * scale_x, (top + processor.crop) * scale_y


# The module (in the classifier's trunk) whose output ends the stride-16 stage, per backbone: ResNet's layer3;
# MobileNetV3-small's block 6, the last of its 40-channel stage.
HEATMAP_LAYERS = {"resnet50": "layer3", "resnet18": "layer3", "mobilenet_v3_small": "6"}
XRV_HEATMAP_LAYER = "denseblock3"  # torchxrayvision's DenseNet-121: its stride-16 dense block
# Points on the path from a zero feature map to the image's; the map hardly changes beyond 8 (demo checkpoint).
IG_STEPS = 16
HeatmapMethod = Literal["integrated-gradients", "hirescam"]


def heatmap_layer(classifier: nn.Module, name: str | None = None) -> nn.Module:
    """The feature map the heatmap is read from: `name` inside the classifier's CNN, or `HEATMAP_LAYERS`'s."""
    if isinstance(classifier, FindingsClassifier):
        trunk = classifier.image_encoder.encoder.encoder  # the torchvision CNN inside BioViL-T's trunk
        return trunk.get_submodule(name or HEATMAP_LAYERS[classifier.config.image_encoder.backbone])
    if isinstance(classifier, XRVFindingsClassifier):
        return classifier.model.features.get_submodule(name or XRV_HEATMAP_LAYER)
    raise TypeError(f"no heatmap layer known for {type(classifier).__name__}")


def _checked_logit(logits: torch.Tensor, label_index: int) -> torch.Tensor:
    logit = logits[0, label_index]
    if not torch.isfinite(logit):
        raise InputError(f"the classifier has no output for {CHEXPERT_LABELS[label_index]}")
    return logit


def integrated_gradients(
    classifier: nn.Module, pixels: torch.Tensor, label_index: int, layer: str | None = None, steps: int = IG_STEPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer integrated gradients of one label for a (1, 3, S, S) classifier input, not clipped.

    Returns the (h, w) float32 attribution, whose sum approaches logit(image) - logit(zero feature map) as
    `steps` grows (midpoint rule), and the image's logit.
    """
    module = heatmap_layer(classifier, layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: captured.append(output.detach()))
    try:
        with torch.no_grad():
            logit = _checked_logit(classifier(pixels), label_index)
    finally:
        handle.remove()
    activation = captured[0]  # (1, C, h, w)
    fractions = (torch.arange(steps, device=activation.device, dtype=torch.float32) + 0.5) / steps
    # (steps, C, h, w): a fresh leaf, so only the layers above it are differentiated, weights untouched.
    path = (fractions.to(activation.dtype).view(-1, 1, 1, 1) * activation).requires_grad_(True)
    handle = module.register_forward_hook(lambda _module, _inputs, _output: path)
    try:
        with torch.enable_grad():
            logits = classifier(pixels.expand(steps, -1, -1, -1))[:, label_index]
            (gradient,) = torch.autograd.grad(logits.sum(), path)
    finally:
        handle.remove()
    attribution = (gradient.float().mean(dim=0) * activation[0].float()).sum(dim=0)
    return attribution, logit


def hirescam(
    classifier: nn.Module, pixels: torch.Tensor, label_index: int, layer: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """HiResCAM (Draelos and Carin, 2020) of one label, not clipped: the gradient at the image times the
    activation, summed over channels; kept to compare against (`benchmarks/heatmap_pointing.py`)."""
    captured: list[torch.Tensor] = []

    def capture(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        activation = output.detach().requires_grad_(True)  # a fresh leaf, as in `integrated_gradients`
        captured.append(activation)
        return activation

    handle = heatmap_layer(classifier, layer).register_forward_hook(capture)
    try:
        with torch.enable_grad():
            logit = _checked_logit(classifier(pixels), label_index)
            (gradient,) = torch.autograd.grad(logit, captured[0])
    finally:
        handle.remove()
    return (gradient[0].float() * captured[0][0].detach().float()).sum(dim=0), logit.detach()


def finding_heatmap(
    model: RaDialogModel,
    xray: XRay,
    finding: str,
    layer: str | None = None,
    method: HeatmapMethod = "integrated-gradients",
) -> Heatmap:
    """The heatmap of `finding` for `xray`, read as `model.encode_image` feeds it to the classifier.

    `layer` names another feature map of the classifier's CNN than `HEATMAP_LAYERS`'s, `method` another
    attribution (both for comparisons).
    Raises `InputError` for a label outside the 14 CheXpert labels, a model without a classifier, or a
    label the classifier has no output for.
    """
    if finding not in CHEXPERT_LABELS:
        raise InputError(f"unknown finding {finding!r}; choose one of: {', '.join(CHEXPERT_LABELS)}")
    if model.classifier is None or model.config.classifier is None:
        raise InputError(f"the model {model.config.name} has no findings classifier to explain")
    processor = model.config.classifier.image_encoder.processor
    pixels = preprocess(xray.to_pil(), processor)[None].to(model.device, model.dtype)
    attribute = integrated_gradients if method == "integrated-gradients" else hirescam
    attribution, logit = attribute(model.classifier, pixels, CHEXPERT_LABELS.index(finding), layer)
    evidence = torch.relu(attribution)  # only what raised the logit
    probability = float(torch.sigmoid(logit.float()))
    height, width = xray.pixels.shape
    box = model_view_box(width, height, processor)
    values = np.zeros((height, width), dtype=np.float32)
    left, top, right, bottom = (round(edge) for edge in box)
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if right > left and bottom > top:
        enlarged = nn.functional.interpolate(
            evidence[None, None], size=(bottom - top, right - left), mode="bilinear", align_corners=False
        )[0, 0]
        values[top:bottom, left:right] = enlarged.clamp_min(0).cpu().numpy()
    peak = float(values.max())
    if peak > 0 and math.isfinite(peak):
        values /= peak
    heatmap = Heatmap(finding=finding, probability=probability, values=values, box=box)
    logger.debug("heatmap of %s: probability %.3f, peak at %s", finding, probability, heatmap.peak)
    return heatmap


def _colour_map(values: np.ndarray) -> np.ndarray:
    """[0, 1] → RGB uint8 on a blue → green → yellow → red ramp (no plotting library needed)."""
    stops = np.array([[0, 0, 128], [0, 128, 255], [0, 220, 120], [255, 230, 0], [230, 20, 0]], dtype=np.float32)
    position = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    fraction = (position - low)[..., None]
    return (stops[low] * (1 - fraction) + stops[low + 1] * fraction).astype(np.uint8)


def render_overlay(xray: XRay, heatmap: Heatmap) -> Image.Image:
    """The film in grey with the map blended over it, stronger where the map is higher (RGB)."""
    film = np.repeat(xray.pixels[..., None], 3, axis=2).astype(np.float32)
    alpha = (OVERLAY_ALPHA * heatmap.values)[..., None]
    blended = film * (1 - alpha) + _colour_map(heatmap.values).astype(np.float32) * alpha
    return Image.fromarray(blended.round().astype(np.uint8), mode="RGB")


def overlay_png(xray: XRay, heatmap: Heatmap) -> bytes:
    """`render_overlay` as PNG bytes (what the API returns)."""
    buffer = io.BytesIO()
    render_overlay(xray, heatmap).save(buffer, format="PNG")
    return buffer.getvalue()

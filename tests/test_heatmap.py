"""Per-finding heatmaps (`radialog.heatmap`) of the embedded demo checkpoint on synthetic radiographs.

The films are drawn here with findings placed by hand (anatomy from a seed the checkpoint never saw), so
where each finding lies is known: the map's peak must follow it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from radialog.errors import InputError
from radialog.heatmap import finding_heatmap, heatmap_layer, integrated_gradients, model_view_box, overlay_png, within
from radialog.imaging import ImageProcessorConfig, XRay, load_xray, preprocess
from radialog.labels import CHEXPERT_LABELS
from radialog.model import RaDialogModel
from radialog.model.loading import EMBEDDED_CHECKPOINT
from radialog.synthetic import DrawnFinding, SyntheticCase, finding_region, render_case, sample_anatomy

SIZE = 256
TOLERANCE = 15 * SIZE / 224  # the pointing game's 15 pixels of the classifier's 224 input
ANATOMY_SEED = 20261202  # not a data set seed the checkpoint was trained on (0)


@pytest.fixture(scope="module")
def demo_model() -> RaDialogModel:
    return RaDialogModel.from_pretrained(EMBEDDED_CHECKPOINT, device="cpu")


@pytest.fixture(scope="module")
def anatomies() -> list:
    rng = np.random.default_rng(ANATOMY_SEED)
    return [sample_anatomy(rng) for _ in range(4)]


def uploaded(case: SyntheticCase) -> XRay:
    """The film as the app reads an upload of it: PNG bytes through `load_xray`."""
    buffer = io.BytesIO()
    Image.fromarray(render_case(case, SIZE), mode="L").save(buffer, format="PNG")
    return load_xray(buffer.getvalue())


@pytest.mark.parametrize("side", [-1, 1], ids=["image-left", "image-right"])
def test_effusion_map_peaks_at_the_lung_base_on_the_side_it_is_drawn_on(demo_model, anatomies, side):
    for anatomy in anatomies:
        case = SyntheticCase(anatomy, (DrawnFinding("Pleural Effusion", side=side, size=0.5, severity=0.5),))
        heatmap = finding_heatmap(demo_model, uploaded(case), "Pleural Effusion")
        x, y = heatmap.peak
        assert heatmap.probability > 0.5
        assert (x - SIZE / 2) * side > 0, f"peak {heatmap.peak} is not on the drawn side {side}"
        assert y > 0.55 * SIZE, f"peak {heatmap.peak} is not at the lung base"
        assert heatmap.points_at(finding_region(case, "Pleural Effusion", SIZE), TOLERANCE)


DEVICES = {
    "endotracheal-tube": (0, 1),
    "nasogastric-tube": (1, 1),
    "central-line-right": (2, 1),
    "central-line-left": (2, -1),
}


def drawn_device(anatomy, kind: int, side: int) -> SyntheticCase:
    device = DrawnFinding("Support Devices", side=side, position=(0.5, 0.5), size=0.5, severity=0.5, kind=kind)
    return SyntheticCase(anatomy, (device,))


def lift_near(heatmap, region: np.ndarray) -> float:
    """The map's mass near `region` over that neighbourhood's share of the classifier's view: 1 for a map
    spread evenly, below 1 for one that lies elsewhere."""
    left, top, right, bottom = (round(edge) for edge in heatmap.box)
    view = np.zeros_like(region)
    view[top:bottom, left:right] = True
    return heatmap.mass_near(region, TOLERANCE) / ((within(region, TOLERANCE) & view).sum() / view.sum())


@pytest.mark.parametrize(("kind", "side"), DEVICES.values(), ids=DEVICES.keys())
def test_device_map_points_at_the_drawn_device_and_gathers_its_mass_there(demo_model, anatomies, kind, side):
    hits, lifts = 0, []
    for anatomy in anatomies:
        case = drawn_device(anatomy, kind, side)
        heatmap = finding_heatmap(demo_model, uploaded(case), "Support Devices")
        region = finding_region(case, "Support Devices", SIZE)
        hits += heatmap.points_at(region, TOLERANCE)
        lifts.append(lift_near(heatmap, region))
    assert hits >= len(anatomies) - 1, f"the map's peak lay on the device in {hits} of {len(anatomies)} films"
    assert np.median(lifts) >= 2, f"the map is not gathered near the device: lifts {np.round(lifts, 2)}"


def test_the_device_map_marks_the_device_not_a_fixed_place(demo_model, anatomies):
    # All drawn devices pass the upper mediastinum; a map that always marked it would pass the test above.
    # Without the device, the same film's map must not be gathered where the device would be.
    for anatomy in anatomies:
        case = drawn_device(anatomy, 0, 1)
        region = finding_region(case, "Support Devices", SIZE)
        with_device = lift_near(finding_heatmap(demo_model, uploaded(case), "Support Devices"), region)
        without = lift_near(finding_heatmap(demo_model, uploaded(SyntheticCase(anatomy)), "Support Devices"), region)
        assert with_device > 2 * without, f"lift near the tube: {with_device:.2f} with it, {without:.2f} without"


def test_the_map_moves_with_an_opacity_drawn_in_the_other_lung(demo_model, anatomies):
    peaks = {}
    for side in (-1, 1):
        opacity = DrawnFinding("Consolidation", side=side, position=(0.5, 0.5), size=0.5, severity=0.5)
        peaks[side] = finding_heatmap(demo_model, uploaded(SyntheticCase(anatomies[0], (opacity,))), "Consolidation")
    assert peaks[-1].peak[0] < SIZE / 2 < peaks[1].peak[0]


def test_heatmap_is_in_image_coordinates_over_the_region_the_classifier_sees(demo_model, anatomies):
    xray = uploaded(SyntheticCase(anatomies[0], (DrawnFinding("Pleural Effusion", side=1, size=0.5),)))
    heatmap = finding_heatmap(demo_model, xray, "Pleural Effusion")
    assert heatmap.values.shape == xray.pixels.shape and heatmap.values.dtype == np.float32
    assert heatmap.values.max() == pytest.approx(1.0) and heatmap.values.min() >= 0
    left, top, right, bottom = (round(edge) for edge in heatmap.box)
    outside = heatmap.values.copy()
    outside[top:bottom, left:right] = 0
    assert not outside.any(), "the map reaches outside the classifier's centre crop"
    png = Image.open(io.BytesIO(overlay_png(xray, heatmap)))
    assert png.format == "PNG" and png.mode == "RGB" and png.size == (SIZE, SIZE)


def test_integrated_gradients_add_up_to_the_logits_rise_from_a_zero_feature_map(demo_model, anatomies):
    classifier = demo_model.classifier
    xray = uploaded(SyntheticCase(anatomies[0], (DrawnFinding("Pleural Effusion", side=1, size=0.5),)))
    pixels = preprocess(xray.to_pil(), demo_model.config.classifier.image_encoder.processor)[None]
    label = CHEXPERT_LABELS.index("Pleural Effusion")
    attribution, logit = integrated_gradients(classifier, pixels, label, steps=64)
    handle = heatmap_layer(classifier).register_forward_hook(lambda _module, _inputs, output: torch.zeros_like(output))
    try:
        with torch.no_grad():
            at_zero = classifier(pixels)[0, label]
    finally:
        handle.remove()
    assert float(attribution.sum()) == pytest.approx(float(logit - at_zero), rel=0.02)


def test_model_view_box_is_the_centre_crop_of_the_shorter_side():
    processor = ImageProcessorConfig(resize=256, crop=224)
    assert model_view_box(256, 256, processor) == (16.0, 16.0, 240.0, 240.0)
    # 512 × 256 → 512 × 256 resized, crop 224 at (144, 16).
    assert model_view_box(512, 256, processor) == (144.0, 16.0, 368.0, 240.0)
    # Half the resolution: the same box in the image's own pixels.
    assert model_view_box(128, 256, processor) == (8.0, 144.0 / 2, 120.0, 368.0 / 2)
    assert model_view_box(300, 200, ImageProcessorConfig(resize=224, crop=224, square=True)) == (0, 0, 300, 200)


def test_unknown_finding_is_an_input_error(demo_model, anatomies):
    xray = uploaded(SyntheticCase(anatomies[0]))
    with pytest.raises(InputError, match="unknown finding"):
        finding_heatmap(demo_model, xray, "Pleural effusion")  # the label's spelling is exact

"""Reading PNG/JPEG/DICOM into 8-bit radiographs, clear errors for bad files, RaDialog's transform."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from torchvision import transforms

from radialog.errors import ImageLoadError
from radialog.imaging import ImageProcessorConfig, load_xray, preprocess


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def gradient(height: int = 60, width: int = 80) -> np.ndarray:
    return np.tile(np.linspace(0, 1, width), (height, 1))


def test_8bit_gray_png_is_min_max_scaled_to_full_range():
    array = (gradient() * 100 + 50).astype(np.uint8)  # values 50..150
    xray = load_xray(encode(array))
    assert xray.pixels.dtype == np.uint8 and xray.pixels.shape == (60, 80)
    assert xray.pixels.min() == 0 and xray.pixels.max() == 255
    assert xray.source_format == "png"


def test_16bit_png_keeps_its_precision_before_scaling():
    array = (gradient() * 4000 + 1000).astype(np.uint16)
    xray = load_xray(encode(array))
    assert xray.original_dtype == "uint16"
    expected = ((array - 1000) / 4000 * 255).astype(np.uint8)
    assert np.abs(xray.pixels.astype(int) - expected.astype(int)).max() <= 1


def test_rgb_and_rgba_jpeg_png_become_grayscale():
    gray = (gradient() * 255).astype(np.uint8)
    rgb = np.stack([gray] * 3, axis=-1)
    rgba = np.concatenate([rgb, np.full_like(gray, 255)[..., None]], axis=-1)
    for data in (encode(rgb, "JPEG"), encode(rgba, "PNG")):
        xray = load_xray(data)
        assert xray.pixels.ndim == 2
        assert np.abs(xray.pixels.astype(int) - gray.astype(int)).mean() < 3


def test_monochrome1_dicom_is_inverted_so_bone_is_bright(chest_dicom):
    xray = load_xray(chest_dicom)
    assert xray.source_format == "dicom" and xray.original_dtype == "uint16"
    assert xray.pixels.shape == (1955, 1841)
    # Same file declared MONOCHROME2: the display must be the exact negative.
    dataset = pydicom.dcmread(chest_dicom)
    dataset.PhotometricInterpretation = "MONOCHROME2"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    as_mono2 = load_xray(buffer.getvalue())
    assert np.abs(xray.pixels.astype(int) + as_mono2.pixels.astype(int) - 255).max() <= 1
    # In a chest film the mediastinum (centre) is brighter than the lung fields once displayed correctly.
    h, w = xray.pixels.shape
    centre = xray.pixels[h // 3 : h // 2, w // 2 - 50 : w // 2 + 50].mean()
    lung = xray.pixels[h // 3 : h // 2, w // 5 : w // 5 + 100].mean()
    assert centre > lung


def test_dicom_modality_rescale_is_applied_before_windowing(chest_dicom):
    dataset = pydicom.dcmread(chest_dicom)
    for tag in ("WindowCenter", "WindowWidth", "VOILUTSequence"):
        if tag in dataset:
            delattr(dataset, tag)
    dataset.RescaleSlope, dataset.RescaleIntercept = -1, 0  # a negative slope flips the image
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    flipped = load_xray(buffer.getvalue()).pixels.astype(int)
    dataset.RescaleSlope = 1
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    plain = load_xray(buffer.getvalue()).pixels.astype(int)
    assert np.abs(flipped + plain - 255).max() <= 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is a radiology report, not an image\n", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable image"),
    ],
)
def test_unusable_bytes_raise_image_load_error(data, message):
    with pytest.raises(ImageLoadError, match=message):
        load_xray(data)


def test_truncated_png_raises_image_load_error():
    data = encode((gradient(200, 200) * 255).astype(np.uint8))
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_xray(data[: len(data) // 2])


def test_dicom_without_pixel_data_is_refused(chest_dicom):
    dataset = pydicom.dcmread(chest_dicom)
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(ImageLoadError, match="no pixel data"):
        load_xray(buffer.getvalue())


def test_truncated_dicom_is_refused(chest_dicom):
    data = chest_dicom.read_bytes()
    with pytest.raises(ImageLoadError, match="DICOM"):
        load_xray(data[: len(data) // 3])


def test_oversized_image_is_refused_before_decoding():
    with pytest.raises(ImageLoadError, match="more than the limit"):
        load_xray(encode((gradient(100, 100) * 255).astype(np.uint8)), max_pixels=5_000)


def test_a_decompression_bomb_is_refused_with_a_message(decompression_bomb):
    # PIL's own DecompressionBombError must not escape: the API would answer 500.
    with pytest.raises(ImageLoadError, match="too large to decode"):
        load_xray(decompression_bomb)


def test_any_decoder_failure_is_an_image_load_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("decoder crashed")

    rgb = encode((np.stack([gradient()] * 3, axis=-1) * 255).astype(np.uint8))
    monkeypatch.setattr(Image.Image, "convert", broken)  # an RGB image is converted to gray after loading
    with pytest.raises(ImageLoadError, match=r"cannot be decoded.*decoder crashed"):
        load_xray(rgb)


def test_blank_image_is_refused():
    with pytest.raises(ImageLoadError, match="blank"):
        load_xray(encode(np.full((50, 50), 7, dtype=np.uint8)))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_xray(tmp_path / "absent.png")


def test_preprocess_matches_radialog_training_transform(shared_cxr):
    image = load_xray(shared_cxr / "00000001_000.png").to_pil()
    reference = transforms.Compose([transforms.Resize(512), transforms.CenterCrop(448), transforms.ToTensor()])
    expected = reference(image).repeat(3, 1, 1)
    actual = preprocess(image, ImageProcessorConfig(resize=512, crop=448))
    assert actual.shape == (3, 448, 448)
    assert torch.equal(actual, expected)
    assert actual.min() >= 0.0 and actual.max() <= 1.0  # no mean/std normalisation


def test_classifier_crop_is_488(chest_dicom):
    tensor = preprocess(load_xray(chest_dicom).to_pil(), ImageProcessorConfig(resize=512, crop=488))
    assert tensor.shape == (3, 488, 488)

"""Reading chest X-rays (PNG, JPEG, DICOM) and turning them into model inputs.

RaDialog was trained on images min-max scaled to uint8 and converted to grayscale, then
resized (shorter side 512), center-cropped (448; 488 for the findings classifier), converted
to a [0, 1] tensor and repeated to three channels, with no mean/std normalisation. The
functions here reproduce exactly that, so released weights see the inputs they were trained on.
R2GenGPT's Swin instead reads Hugging Face's ViT image processor output: squashed to 224 × 224 (bicubic,
no crop) and normalised with the ImageNet mean and std; `ImageProcessorConfig` can say either.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from radialog.errors import ImageLoadError

logger = logging.getLogger(__name__)

# A large CR/DR plate is about 4,300 × 3,500 (15 MP); anything far beyond that is not an X-ray we want
# to decode into memory (and protects the server from decompression bombs).
MAX_PIXELS = 50_000_000
DICOM_MAGIC_OFFSET = 128


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageProcessorConfig:
    """Geometry of the model input: shorter side resized to `resize`, then a centered `crop` square.

    `square` resizes straight to `resize` × `resize` instead (aspect ratio not kept, no crop), as the
    ViT/Swin image processors do; `mean`/`std`, when set, normalise each channel after scaling to [0, 1].
    """

    resize: int = 512
    crop: int = 448
    square: bool = False
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("set both `mean` and `std` for normalisation, or neither")


@dataclass
class XRay:
    """A decoded radiograph: `pixels` is 2-D, in display orientation (bright bone), uint8 after scaling."""

    pixels: np.ndarray
    source_format: str  # "png", "jpeg", "dicom", ...
    original_dtype: str
    window: tuple[float, float] | None = None  # DICOM window (center, width) that was applied, if any

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.pixels, mode="L")


def _looks_like_dicom(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height == 0 or width == 0:
        raise ImageLoadError("the image has no pixels")
    if height * width > max_pixels:
        raise ImageLoadError(
            f"the image is {width}×{height} = {height * width:,} pixels, more than the limit of {max_pixels:,}"
        )


def rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array to 0..255 (truncating, as RaDialog's training code did)."""
    array = array.astype(np.float64)
    low, high = float(array.min()), float(array.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise ImageLoadError("the image holds non-finite pixel values")
    if high == low:
        raise ImageLoadError("the image is blank: every pixel has the same value")
    return ((array - low) / (high - low) * 255.0).astype(np.uint8)


def _decode_raster(data: bytes, max_pixels: int) -> XRay:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise ImageLoadError("not a readable image: expected PNG, JPEG or DICOM") from err
    except Image.DecompressionBombError as err:
        # PIL refuses before we see the size when the header declares far more than its own limit.
        raise ImageLoadError(f"the image is far too large to decode, over the limit of {max_pixels:,} pixels") from err
    _check_size(image.height, image.width, max_pixels)
    fmt = (image.format or "unknown").lower()
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"the {fmt.upper()} file is corrupt or truncated ({err})") from err

    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert(image.mode[:-1] if image.mode != "PA" else "RGB")
    if image.mode == "P":
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3:
        # As in RaDialog: scale all channels together, then let PIL do the RGB → L luminance mix.
        pixels = np.asarray(Image.fromarray(rescale_to_uint8(array), mode="RGB").convert("L"))
    else:
        pixels = rescale_to_uint8(array)
    return XRay(pixels=pixels, source_format=fmt, original_dtype=str(array.dtype))


def _decode_dicom(data: bytes, max_pixels: int) -> XRay:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, OSError) as err:
        raise ImageLoadError(f"the DICOM file is corrupt ({err})") from err
    if "PixelData" not in dataset:
        raise ImageLoadError("the DICOM file has no pixel data (is it a report or structured document?)")
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageLoadError(
            f"unsupported DICOM photometric interpretation {photometric or 'missing'}: "
            "expected a grayscale radiograph (MONOCHROME1 or MONOCHROME2)"
        )
    _check_size(int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0)), max_pixels)
    try:
        raw = dataset.pixel_array
    except Exception as err:  # pydicom raises many types for broken or undecodable pixel data
        raise ImageLoadError(f"the DICOM pixel data cannot be decoded ({err})") from err
    if raw.ndim == 3:
        logger.info("multi-frame DICOM: using the first of %d frames", raw.shape[0])
        raw = raw[0]
    # Order matters: modality rescale to physical values, then the VOI window, then inversion.
    values = apply_modality_lut(raw, dataset)
    values = apply_voi_lut(values, dataset, prefer_lut=True)
    window = None
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        center, width = dataset.WindowCenter, dataset.WindowWidth
        center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
        width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
        window = (float(center), float(width))
    values = np.asarray(values, dtype=np.float64)
    if photometric == "MONOCHROME1":
        values = values.max() - values
    return XRay(pixels=rescale_to_uint8(values), source_format="dicom", original_dtype=str(raw.dtype), window=window)


def load_xray(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> XRay:
    """Decode a PNG, JPEG (8- or 16-bit, gray or RGB) or DICOM file into an 8-bit grayscale radiograph.

    Raises `ImageLoadError` with a user-facing message for anything that is not a usable image.
    """
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(f"no such file: {path}")
        data = path.read_bytes()
    if not data:
        raise ImageLoadError("the file is empty (0 bytes)")
    try:
        if _looks_like_dicom(data):
            return _decode_dicom(data, max_pixels)
        return _decode_raster(data, max_pixels)
    except ImageLoadError:
        raise
    except Exception as err:  # any other decoder failure is still the file's fault, never the server's
        raise ImageLoadError(f"the image cannot be decoded ({type(err).__name__}: {err})") from err


def preprocess(image: Image.Image, config: ImageProcessorConfig) -> torch.Tensor:
    """Grayscale PIL image → (3, S, S) float tensor: RaDialog's training transform by default ([0, 1] values)."""
    image = image.convert("L")
    interpolation = TF.InterpolationMode(config.interpolation)
    if config.square:
        image = TF.resize(image, [config.resize, config.resize], interpolation=interpolation)
    else:
        image = TF.center_crop(TF.resize(image, config.resize, interpolation=interpolation), config.crop)
    # A gray image repeated to RGB equals the RGB conversion R2GenGPT feeds its processor.
    pixels = TF.to_tensor(image).expand(3, -1, -1)
    if config.mean is not None:
        pixels = TF.normalize(pixels, config.mean, config.std)
    return pixels.contiguous()

"""Shared fixtures: test images, and the `tiny` / `mini` models built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_CXR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cxr"


@pytest.fixture(scope="session")
def shared_cxr() -> Path:
    """../shared/data/cxr: real chest X-rays that live beside the checkout (CI has them)."""
    if not (SHARED_CXR / "manifest.json").is_file():
        pytest.skip(f"real X-rays not available: {SHARED_CXR} is absent")
    return SHARED_CXR


@pytest.fixture(scope="session")
def chest_dicom() -> Path:
    """A real frontal chest CR film, 16-bit MONOCHROME1, shipped by pydicom-data."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("RG1_UNCR.dcm"))


@pytest.fixture(scope="session")
def decompression_bomb() -> bytes:
    """A valid PNG whose header declares 60000 × 60000 pixels (3.6 GP, 3.6 GB decoded) in 100 bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)  # 8-bit grayscale
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 100))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def tiny_model():
    from radialog.model import RaDialogModel, get_preset

    torch.manual_seed(0)
    return RaDialogModel.from_config(get_preset("tiny"), device="cpu")


@pytest.fixture(scope="session")
def steered_tiny_model(tiny_model):
    """The tiny model with non-zero LoRA weights, so that prompts and images steer what it answers."""
    import copy

    steered = copy.deepcopy(tiny_model)
    torch.manual_seed(7)
    with torch.no_grad():
        for name, param in steered.language_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    return steered


@pytest.fixture(scope="session")
def mini_model():
    from radialog.model import RaDialogModel, get_preset

    torch.manual_seed(0)
    return RaDialogModel.from_config(get_preset("mini"), device="cpu")


_LEARNING_RESULTS: dict[str, float] = {}


@pytest.fixture(scope="session")
def learning_results() -> dict[str, float]:
    """Numbers the learning checks report; printed in the run's summary, pass or fail."""
    return _LEARNING_RESULTS


def pytest_terminal_summary(terminalreporter) -> None:
    if _LEARNING_RESULTS:
        terminalreporter.section("learning checks")
        for name, value in _LEARNING_RESULTS.items():
            terminalreporter.write_line(f"{name}: {value:.3f}")

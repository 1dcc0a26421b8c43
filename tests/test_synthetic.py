"""Synthetic radiographs: determinism, findings visible by construction, reports that match, speed."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from radialog.cli import main
from radialog.data import read_manifest
from radialog.labeler import RuleBasedLabeler
from radialog.synthetic import (
    DRAWN_LABELS,
    NO_FINDING,
    DrawnFinding,
    SentenceBank,
    SyntheticCase,
    SyntheticConfig,
    generate_sample,
    heart_center,
    render_case,
    sample_anatomy,
)

SIZE = 256


@pytest.fixture(scope="module")
def bank() -> SentenceBank:
    # torchxrayvision (a dependency) ships the IU reports: a failure here is a real failure.
    return SentenceBank.from_iu()


def _upright(seed: int, cardiomegaly: bool = False) -> SyntheticCase:
    anatomy = sample_anatomy(np.random.default_rng(seed), cardiomegaly)
    return SyntheticCase(dataclasses.replace(anatomy, rotation=0.0, shift=(0.0, 0.0), zoom=1.0))


def _row(value: float) -> int:
    return int((value + 1) / 2 * SIZE)


def test_same_seed_same_sample(bank):
    config = SyntheticConfig()
    a, b = generate_sample(7, 0, config, bank), generate_sample(7, 0, config, bank)
    assert np.array_equal(a.pixels, b.pixels) and a.report == b.report and a.labels == b.labels
    c = generate_sample(7, 1, config, bank)
    assert not np.array_equal(a.pixels, c.pixels)
    assert a.pixels.shape == (SIZE, SIZE) and a.pixels.dtype == np.uint8


def test_effusion_brightens_the_lung_base():
    for seed in range(5):
        case = _upright(seed)
        an = case.anatomy
        effusion = dataclasses.replace(case, drawn=(DrawnFinding("Pleural Effusion", side=-1, size=0.5),))
        # The image-left lung base, just above the lateral diaphragm.
        rows = slice(_row(an.diaphragm - 0.2), _row(an.diaphragm - 0.02))
        cols = slice(_row(-an.lung_center - 0.5 * an.lung_half_width), _row(-an.lung_center + 0.5 * an.lung_half_width))
        before = render_case(case, SIZE)[rows, cols].astype(float).mean()
        after = render_case(effusion, SIZE)[rows, cols].astype(float).mean()
        assert after > before + 25


def _silhouette_width(pixels: np.ndarray, row: int) -> int:
    """Bright run around the midline on one row: the mediastinum plus the heart."""
    line = pixels[row].astype(float)
    lung_level = np.percentile(line[SIZE // 8 : -SIZE // 8], 10)
    bright = line > lung_level + 0.5 * (np.median(line[SIZE // 2 - 5 : SIZE // 2 + 5]) - lung_level)
    left = right = SIZE // 2
    while left > 0 and bright[left - 1]:
        left -= 1
    while right < SIZE - 1 and bright[right + 1]:
        right += 1
    return right - left


def test_cardiomegaly_widens_the_silhouette():
    for seed in range(5):
        normal = _upright(seed)
        enlarged = dataclasses.replace(normal, anatomy=dataclasses.replace(normal.anatomy, heart_ratio=0.64))
        row = _row(heart_center(normal.anatomy)[1])
        thorax = 2 * normal.anatomy.thorax_half_width / 2 * SIZE
        normal_width = _silhouette_width(render_case(normal, SIZE), row)
        enlarged_width = _silhouette_width(render_case(enlarged, SIZE), row)
        assert normal_width / thorax < 0.5 < 0.55 < enlarged_width / thorax


def test_pneumothorax_and_device_change_the_image():
    case = _upright(3)
    base = render_case(case, SIZE).astype(float)
    for finding in (DrawnFinding("Pneumothorax", side=1, size=0.2), DrawnFinding("Support Devices", kind=0)):
        changed = render_case(dataclasses.replace(case, drawn=(finding,)), SIZE).astype(float)
        assert np.abs(changed - base).max() > 40


def test_report_labels_match_the_image(bank):
    labeler = RuleBasedLabeler()
    config = SyntheticConfig()
    samples = [generate_sample(i, 0, config, bank) for i in range(200)]
    agree = 0
    for sample in samples:
        read = labeler.label_report(sample.report)
        agree += all((read[name] == 1) == (sample.labels[name] == 1) for name in (*DRAWN_LABELS, NO_FINDING))
    assert agree >= 0.95 * len(samples)
    normal = sum(sample.labels[NO_FINDING] == 1 and not sample.case.drawn for sample in samples)
    assert 0.2 < normal / len(samples) < 0.4  # ~30% without any finding


def test_speed(bank):
    config = SyntheticConfig()
    generate_sample(0, 0, config, bank)  # warm the caches
    start = time.perf_counter()
    for i in range(100):
        generate_sample(i, 5, config, bank)
    rate = 100 / (time.perf_counter() - start)
    assert rate >= 200, f"{rate:.0f} images/s"


def test_make_synthetic_cli(tmp_path, bank):
    out = tmp_path / "synth"
    assert main(["make-synthetic", "--out", str(out), "--count", "30", "--seed", "2", "--image-size", "128"]) == 0
    records = read_manifest(out / "manifest.jsonl")
    assert len(records) == 30 and {r.split for r in records} <= {"train", "validate", "test"}
    assert all((out / r.image).is_file() and r.findings for r in records)
    first = (out / "manifest.jsonl").read_bytes()
    assert main(["make-synthetic", "--out", str(out), "--count", "30", "--seed", "2", "--image-size", "128"]) == 0
    assert (out / "manifest.jsonl").read_bytes() == first
    assert main(["make-synthetic", "--out", str(out), "--count", "0"]) == 2

"""Synthetic chest radiographs with findings known by construction, paired with reports of real sentences.

Each image is drawn from a parametric PA chest film: torso, two lung fields with diaphragm domes and
costophrenic angles, mediastinum and heart, spine, ribs and clavicles, vessel-like lung texture, noise,
and patient variation (body size, position, slight rotation, exposure). Findings are drawn on top:

    Cardiomegaly        cardiac silhouette wider than ~0.55 of the thorax (normal 0.38-0.48)
    Pleural Effusion    homogeneous fluid at a lung base, rising laterally, blunting the angle
    Pneumothorax        the lung edge pulled away from the chest wall: a dark rim without vessels
    Lung Opacity        a hazy, ill-defined patch in a lung field
    Consolidation       a dense, well-defined patch in a lung field
    Support Devices     a thin bright tube or line (endotracheal/nasogastric tube, central line)

Reports are built from real sentences of the IU X-ray reports (read from torchxrayvision at run time,
never stored here): per present finding one sentence the labeler reads as stating it (and no other
finding), and for absent findings sentences it reads as negating them, so the report's labels agree
with the image. The record's `labels` are the constructed ground truth.

A sentence states a finding only if the drawing can show what it says (`drawable`): one patch in the lung
it names, a tube or line of a drawn kind, an effusion or pneumothorax on a named side; never a removed
device, an evaluation that was limited, scarring or a diffuse process. The finding is then drawn on that
side, at that height, as that device. A normal statement is never used beside a finding it denies, read
more widely than the labeler does ("The lungs are clear." denies every lung finding: `Sentence.denies`).
The demo's stating sentences are a reviewed list (tests/test_synthetic.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import itertools
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from radialog.data.manifest import ManifestRecord, write_manifest
from radialog.imaging import XRay, load_xray
from radialog.labeler import RuleBasedLabeler, iter_iu_reports
from radialog.labels import CHEXPERT_LABELS

logger = logging.getLogger(__name__)

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
# The findings this generator draws, in the order they are rendered.
DRAWN_LABELS: tuple[str, ...] = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Lung Opacity",
    "Consolidation",
    SUPPORT_DEVICES,
)
# 0.82^6 ≈ 0.30: about 30% of images have no finding at all.
DEFAULT_FINDING_PROBABILITY = 0.18


@dataclass
class SyntheticConfig:
    image_size: int = 256
    finding_probability: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(DRAWN_LABELS, DEFAULT_FINDING_PROBABILITY)
    )
    split: tuple[float, float] = (0.8, 0.1)  # train, validate; the rest is test
    # Keep only the N most frequent phrasings per finding (and per normal statement): a small,
    # fixed report vocabulary that a small model can learn in minutes. None: every usable sentence.
    sentences_per_finding: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.finding_probability) - set(DRAWN_LABELS)
        if unknown:
            raise ValueError(f"no synthetic rendering for {', '.join(sorted(unknown))}; choose from {DRAWN_LABELS}")
        if self.image_size < 32:
            raise ValueError("image_size must be at least 32")


# --- anatomy and findings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anatomy:
    """Patient and exposure. Coordinates are in [-1, 1], x to the image right, y down."""

    body_width: float  # half-width of the torso
    lung_top: float
    diaphragm: float  # lateral height of the right hemidiaphragm
    heart_ratio: float  # cardiothoracic ratio: heart width / inner thorax width
    rotation: float  # radians
    shift: tuple[float, float]
    zoom: float
    rib_spacing: float
    rib_phase: float
    brightness: float
    contrast: float
    gamma: float
    noise: float
    texture_seed: int

    @property
    def lung_center(self) -> float:
        return 0.40 * self.body_width

    @property
    def lung_half_width(self) -> float:
        return 0.33 * self.body_width

    @property
    def thorax_half_width(self) -> float:
        return self.lung_center + self.lung_half_width


@dataclass(frozen=True)
class DrawnFinding:
    """One drawn finding. `side` is in image terms: -1 image left (patient's right), +1 image right, 0 both."""

    name: str
    side: int = 0
    position: tuple[float, float] = (0.0, 0.0)  # lung-relative (x 0 medial → 1 lateral, y 0 top → 1 base)
    size: float = 0.0
    severity: float = 0.0
    kind: int = 0  # device: 0 endotracheal tube, 1 nasogastric tube, 2 central line


@dataclass(frozen=True)
class SyntheticCase:
    anatomy: Anatomy
    drawn: tuple[DrawnFinding, ...] = ()

    @property
    def present(self) -> set[str]:
        return {finding.name for finding in self.drawn}


def _uniform(rng: np.random.Generator):
    return lambda low, high: float(rng.uniform(low, high))


def sample_anatomy(rng: np.random.Generator, cardiomegaly: bool = False) -> Anatomy:
    # Python floats, not NumPy float64 scalars: those would promote every float32 image array to float64.
    uniform = _uniform(rng)
    return Anatomy(
        body_width=uniform(0.78, 0.95),
        lung_top=uniform(-0.8, -0.66),
        diaphragm=uniform(0.52, 0.68),
        heart_ratio=uniform(0.56, 0.68) if cardiomegaly else uniform(0.38, 0.48),
        rotation=uniform(-0.07, 0.07),
        shift=(uniform(-0.05, 0.05), uniform(-0.04, 0.06)),
        zoom=uniform(0.92, 1.06),
        rib_spacing=uniform(0.15, 0.19),
        rib_phase=uniform(0, 2 * np.pi),
        brightness=uniform(-0.06, 0.06),
        contrast=uniform(0.85, 1.15),
        gamma=uniform(0.8, 1.25),
        noise=uniform(0.01, 0.035),
        texture_seed=int(rng.integers(2**31)),
    )


def sample_finding(
    rng: np.random.Generator,
    name: str,
    side: int | None = None,
    zone: tuple[float, float] | None = None,
    kind: int | None = None,
) -> DrawnFinding:
    """A finding's geometry. `side` None draws one (bilateral for a third of effusions); `zone` is the
    vertical range of a patch (lung-relative, 0 top → 1 base) and `kind` the device, when the report's
    sentence names them, else drawn at random."""
    if side is None:
        side = 0 if name == "Pleural Effusion" and rng.random() < 0.33 else int(rng.choice((-1, 1)))
    uniform = _uniform(rng)
    if name in ("Lung Opacity", "Consolidation") and side == 0:
        side = int(rng.choice((-1, 1)))  # one patch per image: draw it in one lung
    low, high = zone or (0.25, 0.8)
    drawn_kind = int(rng.integers(3))
    return DrawnFinding(
        name=name,
        side=side,
        position=(uniform(0.2, 0.8), uniform(low, high)),
        size=uniform(0.0, 1.0),
        severity=uniform(0.0, 1.0),
        kind=drawn_kind if kind is None else kind,
    )


# --- rendering --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    return np.meshgrid(axis, axis)  # (x, y), each (size, size)


def _ramp(distance: np.ndarray, width: float) -> np.ndarray:
    """0 → 1 across `width` around distance 0: a soft edge that costs one clip."""
    return np.clip(distance / width + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean noise correlated over size/cells pixels: a small random grid, bilinearly enlarged."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BILINEAR))


@functools.lru_cache(maxsize=4)
def _noise_tile(size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2 * size, 2 * size), dtype=np.float32)


def _pixel_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """White noise: a random window of a fixed tile, ten times cheaper than drawing 65k normals per image."""
    row, col = rng.integers(size, size=2)
    return _noise_tile(size)[row : row + size, col : col + size]


def _curve_x(v: np.ndarray, x0: float, v0: float, slope: float, bend: float) -> np.ndarray:
    """x position of a tube running down the film, x = x0 + slope·(y-y0) + bend·(y-y0)²."""
    dv = v - v0
    return x0 + slope * dv + bend * dv * dv


def heart_center(anatomy: Anatomy) -> tuple[float, float]:
    """Unrotated (x, y) of the cardiac silhouette's widest row: left of the midline (image right), above the domes."""
    return 0.1 * anatomy.body_width, anatomy.diaphragm - 0.2


def _device(u: np.ndarray, v: np.ndarray, finding: DrawnFinding, anatomy: Anatomy, width: float) -> np.ndarray:
    hx, hy = heart_center(anatomy)
    if finding.kind == 2:  # central line: from the subclavian region across, then down into the SVC
        side = finding.side or -1
        start_x = side * (0.35 + 0.25 * finding.size) * anatomy.body_width
        entry_v = -0.55 + 0.08 * finding.severity
        across_v = entry_v + 0.12 * (u * side - start_x * side) ** 2
        x_min, x_max = sorted((start_x, side * 0.04))
        across = _ramp(width - np.abs(v - across_v), width * 0.6) * ((u > x_min) & (u < x_max))
        tip = hy - 0.3 + 0.15 * finding.position[1]
        down = _ramp(width - np.abs(u - side * 0.04), width * 0.6) * ((v > entry_v) & (v < tip))
        return np.maximum(across, down)
    tip = -0.15 + 0.1 * finding.position[1] if finding.kind == 0 else 0.95
    bend = 0.0 if finding.kind == 0 else 0.12  # the nasogastric tube veers to the stomach (image right)
    x = _curve_x(v, hx * 0.1 + 0.02 * (finding.position[0] - 0.5), -1.0, 0.01, bend)
    tube = _ramp(width * 1.4 - np.abs(u - x), width * 0.6) * (v < tip)
    return tube


def render_case(case: SyntheticCase, size: int = 256) -> np.ndarray:
    """The case as a (size, size) uint8 image. Deterministic: the case holds its own texture seed.

    The film is drawn at half resolution and enlarged bilinearly (four times fewer pixels to compute:
    anatomy and findings are smooth at that scale); quantum noise is added at full resolution.
    """
    an = case.anatomy
    rng = np.random.default_rng(an.texture_seed)
    size, out_size = max(32, size // 2), size
    x, y = _grid(size)
    cos, sin = math.cos(an.rotation), math.sin(an.rotation)
    xs, ys = x - an.shift[0], y - an.shift[1]
    u = (cos * xs + sin * ys) / an.zoom
    v = (-sin * xs + cos * ys) / an.zoom
    edge = 2.5 / size  # one to two pixels of soft edge at any size

    # Trunk narrowing towards the neck and the waist, shoulders widening it at the top.
    half_width = an.body_width * (1 - 0.15 * (v - 0.1) ** 2) + 0.12 * _ramp(-0.72 - v, 0.15)
    torso = _ramp(half_width - np.abs(u), 0.05)
    cx, a = an.lung_center, an.lung_half_width
    cy = 0.05
    b = cy - an.lung_top
    hx, hy = heart_center(an)
    hw, hh = an.heart_ratio * an.thorax_half_width, 0.27

    air = np.zeros_like(u)
    hyperlucent = np.zeros_like(u)
    pleural_lines = np.zeros_like(u)
    lungs_ellipse = []
    for side in (-1, 1):
        dx = (u - side * cx) / a
        ellipse = 1 - dx * dx - ((v - cy) / b) ** 2
        dome = an.diaphragm + (0.03 if side > 0 else 0.0) - 0.10 * (1 - dx * dx)
        lung = _ramp(ellipse, 0.05) * _ramp(dome - v, edge * 2)
        lungs_ellipse.append((side, dx, ellipse, lung))
        air = np.maximum(air, lung)

    heart = _ramp(1 - ((u - hx) / hw) ** 2 - ((v - hy) / hh) ** 2, 0.12)
    mediastinum = _ramp(0.085 + 0.03 * _ramp(v + 0.3, 0.1) - np.abs(u - 0.01), 0.03) * (v < an.diaphragm)
    air = air * (1 - heart) * (1 - mediastinum)

    lesions = np.zeros_like(u)
    for finding in case.drawn:
        for side, dx, ellipse, lung in lungs_ellipse:
            if finding.side not in (0, side):
                continue
            lateral = np.clip(dx * side, 0, 1)  # 0 at the lung's center, 1 at the chest wall
            if finding.name == "Pleural Effusion":
                level = an.diaphragm - 0.12 - 0.25 * finding.size - 0.15 * lateral
                fluid = _ramp(v - level, 0.04) * _ramp(ellipse + 0.3, 0.05)
                air = air * (1 - fluid)
            elif finding.name == "Pneumothorax":
                k = 0.72 + 0.16 * finding.size
                inner = (
                    1
                    - ((u - side * (cx - 0.6 * a * (1 - k))) / (a * k)) ** 2
                    - ((v - cy - 0.7 * b * (1 - k)) / (b * k)) ** 2
                )
                rim = _ramp(-inner, 0.01) * lung
                hyperlucent = np.maximum(hyperlucent, rim)
                pleural_lines = np.maximum(pleural_lines, _ramp(0.03 - np.abs(inner), 0.02) * lung)
            elif finding.name in ("Lung Opacity", "Consolidation"):
                px = side * (cx + a * (finding.position[0] - 0.5) * 1.2)
                py = an.lung_top + 0.15 + (an.diaphragm - an.lung_top - 0.3) * finding.position[1]
                dense = finding.name == "Consolidation"
                radius = (0.11 + 0.09 * finding.size) if dense else (0.13 + 0.1 * finding.size)
                blob = np.exp(-((u - px) ** 2 + ((v - py) * 1.2) ** 2) / (2 * radius * radius))
                blob *= 1 + 0.35 * _smooth_noise(rng, size, 12)  # irregular margins
                if dense:
                    blob = _ramp(blob - 0.5, 0.15)
                strength = (0.85 + 0.15 * finding.severity) if dense else (0.35 + 0.2 * finding.severity)
                lesions = np.maximum(lesions, np.clip(blob, 0, 1) * strength * lung)

    # Vessels: ridges of smooth noise, denser towards the hila; gone where the lung has collapsed.
    ridges = 1 - np.abs(_smooth_noise(rng, size, 22) + 0.5 * _smooth_noise(rng, size, 40))
    ridges = np.clip(ridges, 0, 1)
    ridges *= ridges
    hila = np.exp(-(((np.abs(u) - 0.2) / 0.35) ** 2) - ((v - 0.05) / 0.5) ** 2)
    vessels = ridges * ridges * (0.02 + 0.12 * hila) * air * (1 - hyperlucent)

    spine = _ramp(0.07 - np.abs(u), 0.02) * torso
    thorax = _ramp(1 - (u / (an.thorax_half_width + 0.06)) ** 2 - ((v + 0.05) / (an.diaphragm + 0.2)) ** 2, 0.1)
    # Posterior ribs: rising from the spine, curving down towards the chest wall.
    phase = 2 * np.pi * (v - 0.55 * np.abs(u) + 0.9 * u * u) / an.rib_spacing + an.rib_phase
    ribs = np.clip((np.cos(phase) - 0.35) * 2.5, 0, 1) * thorax * (np.abs(u) > 0.06)
    clavicle_v = -0.62 - 0.2 * np.abs(u) + 0.35 * u * u
    clavicles = _ramp(0.03 - np.abs(v - clavicle_v), 0.02) * ((np.abs(u) > 0.08) & (np.abs(u) < 0.65))

    image = 0.04 + 0.52 * torso - 0.36 * air * (1 - lesions) - 0.1 * hyperlucent * air
    image += vessels * (1 - lesions) + 0.1 * spine + 0.07 * ribs + 0.12 * clavicles + 0.12 * pleural_lines
    for finding in case.drawn:
        if finding.name == SUPPORT_DEVICES:
            image += 0.35 * _device(u, v, finding, an, edge)
    image = (image - 0.3) * an.contrast + 0.3 + an.brightness + 0.04 * _smooth_noise(rng, size, 4)
    if out_size != size:
        image = np.asarray(
            Image.fromarray(image.astype(np.float32, copy=False), mode="F").resize(
                (out_size, out_size), Image.Resampling.BILINEAR
            )
        )
    image = image + an.noise * _pixel_noise(rng, out_size)
    pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return _gamma_table(round(an.gamma, 2))[pixels]


# A pixel belongs to a finding's region where drawing it changes the film by more than this, averaged over
# a 7 × 7 window (so the quantum noise, which differs between the two renderings, stays below it).
REGION_THRESHOLD = 10  # grey levels


def finding_region(case: SyntheticCase, name: str, size: int = 256) -> np.ndarray:
    """(size, size) bool: where the drawn finding `name` changes the film (Cardiomegaly: where the heart is
    wider than a normal one), found by rendering the case again without it."""
    if name == "Cardiomegaly":
        without = SyntheticCase(dataclasses.replace(case.anatomy, heart_ratio=0.43), case.drawn)
    else:
        without = SyntheticCase(case.anatomy, tuple(f for f in case.drawn if f.name != name))
    difference = np.abs(render_case(case, size).astype(np.int16) - render_case(without, size).astype(np.int16))
    blurred = Image.fromarray(difference.astype(np.uint8), mode="L").filter(ImageFilter.BoxBlur(3))
    return np.asarray(blurred) > REGION_THRESHOLD


@functools.lru_cache(maxsize=64)
def _gamma_table(gamma: float) -> np.ndarray:
    return (255 * (np.arange(256) / 255) ** gamma).round().astype(np.uint8)


# --- reports ----------------------------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=\.)\s+(?=[A-Z0-9])")
# Report order: devices, heart, lungs, pleura, then anything else.
_ORDER = {SUPPORT_DEVICES: 0, "Cardiomegaly": 1, "Enlarged Cardiomediastinum": 1, "Pleural Effusion": 3}
_ORDER.update({"Pneumothorax": 4, "Fracture": 5})

LATERAL_FINDINGS = ("Pleural Effusion", "Pneumothorax", "Lung Opacity", "Consolidation")
PATCHES = ("Lung Opacity", "Consolidation")  # drawn as one patch, at the height its sentence names
_BOTH_SIDES = {"bilateral", "bilaterally", "bibasilar", "bibasal", "biapical", "both"}
# The drawn devices (DrawnFinding.kind), as reports name them.
DEVICE_KINDS = {
    0: re.compile(r"\bendotracheal\b|\bet tube\b"),
    1: re.compile(r"\bnasogastric\b|\bng tube\b|\benteric tube\b|\bfeeding tube\b|\borogastric\b"),
    2: re.compile(r"\bpicc\b|\bcentral (venous )?(line|catheter)\b|\bvenous catheter\b|\bij\b|internal jugular"),
}
# What a drawing of each finding cannot show: a sentence saying it is not a sentence for that drawing.
_NOT_DRAWN = {
    "Pleural Effusion": re.compile(r"loculated|hydropneumo|decubitus|evaluation|limited|pleuritis|improv|decreas"),
    "Pneumothorax": re.compile(r"hydropneumo|decubitus|evaluation|limited|resolved"),
    "Lung Opacity": re.compile(
        r"scar|marking|interstitial|bandlike|band-like|streaky|strandy|nodul|mass|\d|retrocardiac|diffuse|"
        r"throughout|multifocal|multilobar|greater than|worse|\band\b|improv|atelecta|granuloma|calcif|effusion"
    ),
    "Consolidation": re.compile(r"consolidations|diffuse|multilobar|multifocal|\band\b|improv|greater than"),
    SUPPORT_DEVICES: re.compile(
        r"remov|withdraw|pacemaker|pacing|defibrillator|leads?\b|clips?\b|stent|prosthe|valve|gastrostomy|"
        r"drainage|dialysis|mediport|\bport\b|chest tube|stimulator|exchange|retraction|recommend|\bmay\b"
    ),
}
_OPACITY_WORDS = re.compile(r"opacit|airspace disease|air space disease|infiltrate")
# Normal statements deny more than the labeler reads in them: "The lungs are clear." with a drawn
# consolidation would contradict the image. Topic → findings a normal statement about it denies.
_NORMAL_CUE = re.compile(
    r"\b(clear|normal|unremarkable|no acute|without acute|negative|no active|intact|free of|without evidence|"
    r"no evidence|no focal)\b"
)
_DEVICE_WORDS = re.compile(r"\btubes?\b|\blines?\b|catheter|picc")
_IMPLIED_DENIALS = (
    (re.compile(r"cardiopulmonary|\bacute\b|active disease|chest\b"), frozenset(DRAWN_LABELS) - {SUPPORT_DEVICES}),
    (re.compile(r"\blungs?\b|pulmonary"), frozenset(LATERAL_FINDINGS)),
    (re.compile(r"airspace|air space"), frozenset({"Lung Opacity", "Consolidation"})),
    (re.compile(r"\bheart\b|cardiac|cardiomediastinal|mediastin"), frozenset({"Cardiomegaly"})),
    (re.compile(r"pleura|costophrenic"), frozenset({"Pleural Effusion", "Pneumothorax"})),
    (_DEVICE_WORDS, frozenset({SUPPORT_DEVICES})),
)
# Vertical range (lung-relative) of a patch whose sentence names the lobe or zone.
_ZONES = (
    (re.compile(r"upper|apical|apex"), (0.25, 0.4)),
    (re.compile(r"lower|basilar|\bbases?\b|basal"), (0.62, 0.8)),
    (re.compile(r"middle|\bmid\b|lingula|perihilar|hilar"), (0.42, 0.6)),
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@dataclass(frozen=True)
class Sentence:
    text: str
    positive: frozenset[str]
    negative: frozenset[str]

    @property
    def order(self) -> int:
        return min((_ORDER.get(name, 2) for name in self.positive | self.negative), default=2)

    @functools.cached_property
    def side(self) -> int | None:
        """Image side the sentence speaks of: patient's right is the image left (-1); 0 both, None unknown.

        A device sentence names its entry side first ("Left IJ catheter with tip in the right atrium").
        """
        lowered = self.text.lower()
        if SUPPORT_DEVICES in self.positive:
            first = re.search(r"\b(right|left)\b", lowered)
            return None if first is None else (-1 if first.group(1) == "right" else 1)
        words = _words(lowered)
        if words & _BOTH_SIDES:
            return 0
        right, left = "right" in words, "left" in words
        if right and left:
            return 0
        return -1 if right else (1 if left else None)

    @functools.cached_property
    def zone(self) -> tuple[float, float] | None:
        lowered = self.text.lower()
        return next((zone for pattern, zone in _ZONES if pattern.search(lowered)), None)

    @functools.cached_property
    def device_kind(self) -> int | None:
        lowered = self.text.lower()
        return next((kind for kind, pattern in DEVICE_KINDS.items() if pattern.search(lowered)), None)

    @functools.cached_property
    def denies(self) -> frozenset[str]:
        """Drawn findings the sentence says are absent: the labeler's negations, and for a normal statement
        every finding of the anatomy it calls normal."""
        denied = set(self.negative)
        lowered = self.text.lower()
        if _NORMAL_CUE.search(lowered):
            for topic, findings in _IMPLIED_DENIALS:
                if topic.search(lowered):
                    denied |= findings
        return frozenset(denied & set(DRAWN_LABELS)) - self.positive


def drawable(name: str, sentence: Sentence) -> bool:
    """Whether a drawing of `name` shows what `sentence` says: one patch in one named lung, a tube or line
    of a drawn kind, a pneumothorax or an effusion on a named side; nothing the drawing cannot show."""
    lowered = sentence.text.lower()
    if name in _NOT_DRAWN and _NOT_DRAWN[name].search(lowered):
        return False
    if name in LATERAL_FINDINGS:
        side = sentence.side
        if side is None or (side == 0 and name != "Pleural Effusion"):
            return False
    if name == "Lung Opacity":
        return bool(_OPACITY_WORDS.search(lowered))
    if name == SUPPORT_DEVICES:
        return sentence.device_kind is not None
    return True


def sentence_digest(text: str) -> str:
    """A sentence's reviewed-list key (the IU reports' licence keeps their text out of this repository)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class SentenceBank:
    """Real report sentences sorted by what the labeler reads in them and what a drawing can show."""

    def __init__(self, sentences: Iterable[Sentence]):
        self.positive: dict[str, list[Sentence]] = {name: [] for name in DRAWN_LABELS}
        self.negating: dict[str, list[Sentence]] = {name: [] for name in DRAWN_LABELS}
        self.normal: list[Sentence] = []
        for sentence in sentences:
            if len(sentence.positive) == 1 and (name := next(iter(sentence.positive))) in self.positive:
                if drawable(name, sentence):
                    self.positive[name].append(sentence)
            elif not sentence.positive and not _mentions_device(sentence.text):
                self.normal.append(sentence)
                for name in sentence.negative & set(DRAWN_LABELS):
                    self.negating[name].append(sentence)
        empty = [name for name in DRAWN_LABELS if not self.positive[name]]
        if empty or not self.normal:
            raise ValueError(
                f"the report sentences hold no usable sentence for {', '.join(empty) or 'normal findings'}"
            )

    @classmethod
    def from_reports(cls, reports: Iterable[str]) -> SentenceBank:
        labeler = RuleBasedLabeler()
        counts = Counter(s.strip() for report in reports for s in _SENTENCE.split(report) if _usable(s.strip()))
        texts = sorted(counts, key=lambda text: (-counts[text], text))  # most frequent phrasing first
        sentences = []
        for text in texts:
            labels = labeler.label_report(text)
            if any(value == -1 for value in labels.values()):
                continue  # hedged sentences would make the label uncertain
            positive = frozenset(n for n, value in labels.items() if value == 1 and n != NO_FINDING)
            # A sentence is normal only if the labeler sees no abnormality at all, outside the 14 included.
            if not positive and labels[NO_FINDING] != 1:
                continue
            if positive == {SUPPORT_DEVICES} and labels[NO_FINDING] != 1:
                continue
            negative = frozenset(n for n, value in labels.items() if value == 0)
            sentences.append(Sentence(text, positive, negative))
        return cls(sentences)

    def restricted(self, per_list: int) -> SentenceBank:
        """The `per_list` most frequent sentences of each finding (stating, negating) and of the normal ones.

        Devices keep the most frequent sentences of each drawn kind in turn, so that every kind is drawn.
        """
        kept = [*self.normal[:per_list]]
        for name in DRAWN_LABELS:
            kept += self.negating[name][:per_list]
            if name == SUPPORT_DEVICES:
                by_kind = [[s for s in self.positive[name] if s.device_kind == kind] for kind in DEVICE_KINDS]
                kept += [s for row in itertools.zip_longest(*by_kind) for s in row if s is not None][:per_list]
            else:
                kept += self.positive[name][:per_list]
        return SentenceBank(dict.fromkeys(kept))

    @classmethod
    def from_iu(cls, path: str | Path | None = None) -> SentenceBank:
        """From the IU X-ray findings and impressions (torchxrayvision's copy by default)."""
        return _iu_bank(str(path) if path is not None else None)


@functools.lru_cache(maxsize=2)
def _iu_bank(path: str | None) -> SentenceBank:
    reports = iter_iu_reports(path)
    return SentenceBank.from_reports(text for report in reports for text in (report.findings, report.impression))


def _usable(text: str) -> bool:
    words = text.split()
    # "XXXX" marks anonymised words in IU X-ray; fragments and headings ("2 images.") carry no statement.
    return (
        3 <= len(words) <= 30
        and text[0].isupper()
        and text.endswith(".")
        and not text.endswith("..")
        and "xxxx" not in text.lower()
    )


def _mentions_device(text: str) -> bool:
    """Device sentences ("Interval removal of the NG tube.") are neither a finding's nor a normal statement."""
    lowered = text.lower()
    return any(pattern.search(lowered) for pattern in DEVICE_KINDS.values()) or bool(
        _DEVICE_WORDS.search(lowered) or _NOT_DRAWN[SUPPORT_DEVICES].search(lowered)
    )


def _pick(rng: np.random.Generator, candidates: list[Sentence], avoid: set[str], tries: int = 30) -> Sentence | None:
    """A random candidate that denies none of the findings in `avoid`."""
    for _ in range(tries):
        sentence = candidates[int(rng.integers(len(candidates)))]
        if not sentence.denies & avoid:
            return sentence
    return None


def write_report(
    rng: np.random.Generator, bank: SentenceBank, present: Iterable[str]
) -> tuple[str, dict[str, Sentence], set[str]]:
    """(report, the sentence stating each present finding, absent findings the report negates)."""
    present = set(present)
    chosen: dict[str, Sentence] = {}
    sentences: list[Sentence] = []
    for name in DRAWN_LABELS:
        if name in present:
            sentence = _pick(rng, bank.positive[name], present)
            if sentence is None:
                raise ValueError(f"no sentence states {name} without negating another present finding")
            chosen[name] = sentence
            sentences.append(sentence)
    negated: set[str] = set()
    for name in DRAWN_LABELS:
        if name in present or name in negated or name == SUPPORT_DEVICES or not bank.negating[name]:
            continue
        # Not a second denial of a finding already denied ("No pleural effusion." then "No effusion or
        # pneumothorax."): one statement per finding keeps what the report says plain to learn.
        sentence = _pick(rng, bank.negating[name], present | negated)
        if sentence is not None and sentence not in sentences:
            sentences.append(sentence)
            negated |= sentence.denies
    for _ in range(int(rng.integers(0, 3))):  # a few more normal statements (bones, mediastinum, ...)
        sentence = _pick(rng, bank.normal, present | negated)  # nothing denied twice, as above
        if sentence is not None and sentence not in sentences:
            sentences.append(sentence)
            negated |= sentence.denies
    order = rng.permutation(len(sentences))  # shuffle, then keep report order between topics
    sentences = sorted((sentences[i] for i in order), key=lambda s: s.order)
    return " ".join(s.text for s in sentences), chosen, negated & set(DRAWN_LABELS) - present


def case_labels(present: set[str], negated: set[str]) -> dict[str, int | None]:
    """Ground truth: drawn findings 1, findings the report negates 0, No Finding as CheXpert sets it."""
    labels: dict[str, int | None] = dict.fromkeys(CHEXPERT_LABELS)
    for name in negated:
        labels[name] = 0
    for name in present:
        labels[name] = 1
    if not present - {SUPPORT_DEVICES}:
        labels[NO_FINDING] = 1
    return labels


# --- the data set -----------------------------------------------------------------------------------------


@dataclass
class SyntheticSample:
    id: str
    pixels: np.ndarray
    report: str
    labels: dict[str, int | None]
    split: str
    case: SyntheticCase
    statements: dict[str, Sentence] = field(default_factory=dict)  # the sentence stating each drawn finding

    def to_xray(self) -> XRay:
        """The image as an upload reaches the model: through a PNG file and `load_xray`, which rescales
        the grey levels to the full 0..255 range (the drawn film rarely spans it)."""
        buffer = io.BytesIO()
        Image.fromarray(self.pixels, mode="L").save(buffer, format="PNG")
        return load_xray(buffer.getvalue())


def generate_sample(index: int, seed: int, config: SyntheticConfig, bank: SentenceBank) -> SyntheticSample:
    """Sample `index` of the data set `seed`: its own random stream, so any subset is reproducible alone."""
    rng = np.random.default_rng([seed, index])
    present = {name for name in DRAWN_LABELS if rng.random() < config.finding_probability.get(name, 0.0)}
    report, chosen, negated = write_report(rng, bank, present)
    anatomy = sample_anatomy(rng, cardiomegaly="Cardiomegaly" in present)
    # Findings go on the side their sentence names ("small left pleural effusion").
    drawn = tuple(
        sample_finding(
            rng, name, chosen[name].side, chosen[name].zone if name in PATCHES else None, chosen[name].device_kind
        )
        for name in DRAWN_LABELS
        if name in present
    )
    case = SyntheticCase(anatomy, drawn)
    draw = rng.random()
    train, validate = config.split
    split = "train" if draw < train else ("validate" if draw < train + validate else "test")
    return SyntheticSample(
        id=f"synth-{index:06d}",
        pixels=render_case(case, config.image_size),
        report=report,
        labels=case_labels(present, negated),
        split=split,
        case=case,
        statements=chosen,
    )


def sentence_bank(config: SyntheticConfig | None = None) -> SentenceBank:
    """The sentences reports of `config` are written from."""
    config = config or SyntheticConfig()
    bank = SentenceBank.from_iu()
    return bank if config.sentences_per_finding is None else bank.restricted(config.sentences_per_finding)


def iter_samples(
    count: int, seed: int = 0, config: SyntheticConfig | None = None, bank: SentenceBank | None = None
) -> Iterator[SyntheticSample]:
    config = config or SyntheticConfig()
    bank = bank or sentence_bank(config)
    for index in range(count):
        yield generate_sample(index, seed, config, bank)


def make_synthetic_dataset(
    out_dir: str | Path,
    count: int,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    on_sample: Callable[[SyntheticSample, str], None] | None = None,
) -> Path:
    """Write `images/*.png` and `manifest.jsonl` (split train/validate/test) under `out_dir`; returns the manifest.

    `on_sample(sample, image_path)` sees every sample as it is written (the instruct data is made from them).
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)

    def records() -> Iterator[ManifestRecord]:
        samples = iter_samples(count, seed, config)
        for sample in tqdm(samples, total=count, desc="synthetic", unit="image", disable=None):
            image = f"images/{sample.id}.png"
            # Low compression: PNG deflate would otherwise cost more than drawing the image.
            Image.fromarray(sample.pixels, mode="L").save(out_dir / image, compress_level=1)
            if on_sample is not None:
                on_sample(sample, image)
            yield ManifestRecord(sample.id, image, sample.report, labels=sample.labels, split=sample.split)

    manifest = out_dir / "manifest.jsonl"
    write_manifest(records(), manifest)
    return manifest

"""Pointing game of the per-finding heatmaps (`radialog.heatmap`) on synthetic radiographs the model never saw.

Draws held-out images (data set seed 1; the embedded demo checkpoint was trained on seed 0), passes each
through a PNG upload as the app does, and for every finding drawn into it computes the finding's heatmap.
A hit is a map whose peak lies within 15 pixels of the classifier's input (scaled to the image) of where
the finding is drawn (`radialog.synthetic.finding_region`), as in Zhang et al.'s pointing game. The
baseline always points at the centre of the region the classifier sees. "mass near" is the share of the
map's mass within that tolerance of the finding (the energy-based pointing game), "view share" the share
of the classifier's view that this neighbourhood covers (what an evenly spread map would score).

    .venv/bin/python benchmarks/heatmap_pointing.py [--checkpoint DIR] [--images 300] [--layer NAME]
        [--method integrated-gradients|hirescam]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import get_args

import numpy as np
from tqdm import tqdm

from radialog.heatmap import HeatmapMethod, finding_heatmap, within
from radialog.model import RaDialogModel
from radialog.model.loading import EMBEDDED_CHECKPOINT
from radialog.synthetic import DRAWN_LABELS, SyntheticConfig, finding_region, iter_samples

HELD_OUT_SEED = 1
TOLERANCE = 15  # pixels of the classifier's input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=EMBEDDED_CHECKPOINT)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--layer", help="another feature map of the classifier's CNN (default: HEATMAP_LAYERS)")
    parser.add_argument("--method", choices=get_args(HeatmapMethod), default="integrated-gradients")
    args = parser.parse_args()

    model = RaDialogModel.from_pretrained(args.checkpoint, device="cpu")
    crop = model.config.classifier.image_encoder.processor.crop
    size = 256
    samples = iter_samples(args.images, seed=HELD_OUT_SEED, config=SyntheticConfig(image_size=size))
    hits = {name: [] for name in DRAWN_LABELS}
    baseline = {name: [] for name in DRAWN_LABELS}
    mass = {name: [] for name in DRAWN_LABELS}
    view_share = {name: [] for name in DRAWN_LABELS}
    for sample in tqdm(samples, total=args.images, desc="held-out images"):
        xray = sample.to_xray()
        for name in sorted(sample.case.present):
            region = finding_region(sample.case, name, size)
            if not region.any():
                continue  # drawn too faintly to change the film
            heatmap = finding_heatmap(model, xray, name, layer=args.layer, method=args.method)
            left, top, right, bottom = heatmap.box
            tolerance = TOLERANCE * (right - left) / crop
            hits[name].append(heatmap.points_at(region, tolerance))
            mass[name].append(heatmap.mass_near(region, tolerance))
            view = np.zeros_like(region)
            view[round(top) : round(bottom), round(left) : round(right)] = True
            view_share[name].append(float((within(region, tolerance) & view).sum() / view.sum()))
            rows, cols = region.nonzero()
            centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
            baseline[name].append(bool((((cols - centre_x) ** 2 + (rows - centre_y) ** 2).min()) <= tolerance**2))

    layer = args.layer or "default (HEATMAP_LAYERS)"
    print(f"{args.checkpoint}: {args.images} held-out images (seed {HELD_OUT_SEED}), {args.method}, layer {layer}\n")
    print("| finding | drawn | pointing game | centre baseline | mass near | view share |")
    print("|---|---|---|---|---|---|")
    table = [(name, hits[name], baseline[name], mass[name], view_share[name]) for name in DRAWN_LABELS]
    pooled = (list(itertools.chain.from_iterable(c.values())) for c in (hits, baseline, mass, view_share))
    table.append(("all", *pooled))
    for name, *columns in table:
        if columns[0]:
            means = " | ".join(f"{sum(column) / len(column):.2f}" for column in columns)
            print(f"| {name} | {len(columns[0])} | {means} |")


if __name__ == "__main__":
    main()

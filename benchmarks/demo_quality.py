"""What the embedded demo checkpoint reads in synthetic radiographs it never saw.

Draws held-out images (data set seed 1; the checkpoint was trained on seed 0), passes each through a
PNG upload as the app does, and prints per drawn finding the classifier's AUROC and its F1 at the
configured threshold, and the F1 of generated reports as the rule-based labeler reads them.

    .venv/bin/python benchmarks/demo_quality.py [--checkpoint DIR] [--images 300] [--reports 60]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.metrics import f1_score, roc_auc_score
from tqdm import tqdm

from radialog.labeler import RuleBasedLabeler
from radialog.labeler.base import POSITIVE
from radialog.model import RaDialogModel
from radialog.model.loading import EMBEDDED_CHECKPOINT
from radialog.synthetic import DRAWN_LABELS, SyntheticConfig, iter_samples

HELD_OUT_SEED = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=EMBEDDED_CHECKPOINT)
    parser.add_argument("--images", type=int, default=300, help="held-out images for the classifier")
    parser.add_argument("--reports", type=int, default=60, help="the first N of them also get a report")
    args = parser.parse_args()

    model = RaDialogModel.from_pretrained(args.checkpoint, device="cpu")
    samples = list(iter_samples(args.images, seed=HELD_OUT_SEED, config=SyntheticConfig(image_size=256)))
    labeler = RuleBasedLabeler()
    probabilities, positives, read = [], [], []
    with torch.no_grad():
        for i, sample in enumerate(tqdm(samples, desc="held-out images")):
            xray = sample.to_xray()
            encoded = model.encode_image(xray)
            probabilities.append(encoded.probabilities)
            positives.append(set(encoded.positive))
            if i < args.reports:
                labels = labeler.label_report(model.generate_report(xray).report)
                read.append({name for name, value in labels.items() if value == POSITIVE})

    truth = [s.case.present for s in samples]  # the findings drawn into each image
    print(f"{args.checkpoint}: {args.images} held-out images, reports for the first {len(read)}\n")
    print("| finding | images with it | classifier AUROC | classifier F1 | report F1 |")
    print("|---|---|---|---|---|")
    for name in DRAWN_LABELS:
        y = [name in t for t in truth]
        auroc = roc_auc_score(y, [p[name] for p in probabilities])
        f1 = f1_score(y, [name in p for p in positives], zero_division=0)
        report_f1 = f1_score(y[: len(read)], [name in r for r in read], zero_division=0) if read else None
        report_cell = "—" if report_f1 is None else f"{report_f1:.2f}"
        print(f"| {name} | {sum(y)} | {auroc:.3f} | {f1:.2f} | {report_cell} |")
    drawn = truth[: len(read)]
    hits = sum(len(r & set(DRAWN_LABELS) & t) for r, t in zip(read, drawn, strict=True))
    stated = sum(len(r & set(DRAWN_LABELS)) for r in read)
    micro = 2 * hits / (stated + sum(len(t) for t in drawn)) if read else 0.0
    print(f"\nreports, micro F1 over the drawn findings: {micro:.2f}")


if __name__ == "__main__":
    main()

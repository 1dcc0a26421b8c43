"""MIMIC-CXR adapter: MIMIC-CXR-JPG images + the free-text reports → manifest records.

Layout (the PhysioNet downloads, reports possibly in another folder):

    ROOT/mimic-cxr-2.0.0-split.csv                       dicom_id, study_id, subject_id, split
    ROOT/mimic-cxr-2.0.0-chexpert.csv                    optional: subject_id, study_id, 14 labels
    ROOT/files/p10/p10000032/s50414267/<dicom_id>.jpg    images
    REPORTS/files/p10/p10000032/s50414267.txt            reports (REPORTS defaults to ROOT)

One record per image, as RaDialog trains: every view of a study shares the study's report. Images
without a findings section are left out, as RaDialog does.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from radialog.data.manifest import Labels, ManifestRecord
from radialog.data.sections import parse_report
from radialog.errors import InputError
from radialog.labeler.base import ReportLabeler
from radialog.labels import CHEXPERT_LABELS

logger = logging.getLogger(__name__)

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv"


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
        return list(reader)


def _label_value(text: str, where: str) -> int | None:
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise InputError(f"{where}: label {text!r} is not a number") from err
    if value not in (1.0, 0.0, -1.0):
        raise InputError(f"{where}: label {text!r} is not 1, 0, -1 or blank")
    return int(value)


def read_chexpert_labels(path: str | Path) -> dict[str, Labels]:
    """study_id → labels from MIMIC-CXR-JPG's CheXpert (or CheXbert) CSV."""
    path = Path(path)
    rows = _read_csv(path, ("study_id", *CHEXPERT_LABELS))
    return {
        row["study_id"].lstrip("s"): {name: _label_value(row[name], f"{path}:{line}") for name in CHEXPERT_LABELS}
        for line, row in enumerate(rows, start=2)
    }


def _study_dir(root: Path, subject_id: str, study_id: str) -> Path:
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def iter_mimic_records(
    root: str | Path,
    reports_root: str | Path | None = None,
    chexpert_csv: str | Path | None = None,
    labeler: ReportLabeler | None = None,
) -> Iterator[ManifestRecord]:
    """Records with `image` relative to `root`.

    Labels come from `chexpert_csv` (default: ROOT/mimic-cxr-2.0.0-chexpert.csv when present); without
    one, `labeler` labels the findings section, and without a labeler they stay null.
    """
    root = Path(root)
    reports_root = Path(reports_root) if reports_root is not None else root
    rows = _read_csv(root / SPLIT_FILE, ("dicom_id", "study_id", "subject_id", "split"))
    if chexpert_csv is None and (root / CHEXPERT_FILE).is_file():
        chexpert_csv = root / CHEXPERT_FILE
    study_labels = read_chexpert_labels(chexpert_csv) if chexpert_csv is not None else None
    reports: dict[str, tuple] = {}  # study → (sections, labels), parsed once for all its images
    missing_image = missing_report = no_findings = 0
    for row in tqdm(rows, desc="MIMIC-CXR", unit="image", disable=None):
        subject, study, dicom = row["subject_id"], row["study_id"], row["dicom_id"]
        study_dir = _study_dir(root, subject, study)
        image = study_dir / f"{dicom}.jpg"
        if not image.is_file():
            missing_image += 1
            continue
        if study not in reports:
            report_path = _study_dir(reports_root, subject, study).with_suffix(".txt")
            if not report_path.is_file():
                reports[study] = (None, None)
            else:
                sections = parse_report(report_path.read_text(encoding="utf-8", errors="replace"))
                if study_labels is not None:
                    labels = study_labels.get(study)
                elif labeler is not None and sections.findings:
                    labels = labeler.label([sections.findings])[0]
                else:
                    labels = None
                reports[study] = (sections, labels)
        sections, labels = reports[study]
        if sections is None:
            missing_report += 1
            continue
        if not sections.findings:
            no_findings += 1
            continue
        yield ManifestRecord(
            id=dicom,
            image=image.relative_to(root).as_posix(),
            findings=sections.findings,
            impression=sections.impression,
            indication=sections.indication,
            labels=labels,
            # MIMIC-CXR-JPG calls it "validate" already; accept "val" from re-made split files.
            split={"val": "validate"}.get(row["split"], row["split"]),
        )
    logger.info(
        "MIMIC-CXR: left out %d images not on disk, %d without a report, %d without findings",
        missing_image,
        missing_report,
        no_findings,
    )

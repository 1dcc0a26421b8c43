"""IU X-ray (Open-i) adapter: `ecgen-radiology/*.xml` reports + `images/<parentImage id>.png` → records.

Layout of the Open-i download (NLMCXR_reports.tgz and NLMCXR_png.tgz unpacked side by side):

    ROOT/ecgen-radiology/1.xml ...       one report per XML, <parentImage id="CXR1_1_IM-0001-3001"/>
    ROOT/images/CXR1_1_IM-0001-3001.png

IU X-ray has no official split and no labels: the split is drawn from a hash of the report id (so a
report's images stay together and the split is stable), and a labeler labels findings + impression.
One record per image, as for MIMIC-CXR; reports without findings are left out.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from radialog.data.manifest import ManifestRecord
from radialog.errors import InputError
from radialog.labeler.base import ReportLabeler
from radialog.labeler.iu_reports import IUReport, parse_iu_report

logger = logging.getLogger(__name__)

# Fractions of train / validate (the rest is test).
IU_SPLIT = (0.8, 0.1)


def iu_split(report_id: str, fractions: tuple[float, float] = IU_SPLIT) -> str:
    """A split from a CRC of the id: stable across runs and machines, unlike Python's hash()."""
    position = zlib.crc32(report_id.encode()) / 2**32
    if position < fractions[0]:
        return "train"
    return "validate" if position < fractions[0] + fractions[1] else "test"


def iter_iu_xml(root: str | Path) -> Iterator[IUReport]:
    root = Path(root)
    folder = root / "ecgen-radiology"
    if not folder.is_dir():
        raise InputError(f"{root}: no ecgen-radiology/ folder of Open-i XML reports")
    for path in sorted(folder.glob("*.xml"), key=lambda p: (len(p.stem), p.stem)):
        try:
            yield parse_iu_report(path.read_bytes())
        except Exception as err:  # ElementTree's ParseError and InputError alike: name the file
            raise InputError(f"{path}: not an Open-i report ({err})") from err


def iter_iu_records(
    root: str | Path, labeler: ReportLabeler | None = None, require_images: bool = True
) -> Iterator[ManifestRecord]:
    """Records with `image` relative to `root` (images/<id>.png).

    `require_images=False` keeps records whose PNG is absent: enough for text-only work (instruct data,
    labeler checks) on the reports alone, as torchxrayvision ships them.
    """
    root = Path(root)
    missing_image = no_findings = 0
    for report in tqdm(iter_iu_xml(root), desc="IU X-ray", unit="report", disable=None):
        if not report.findings:
            no_findings += 1
            continue
        labels = labeler.label([report.text])[0] if labeler is not None else None
        for image_id in report.image_ids:
            image = root / "images" / f"{image_id}.png"
            if not image.is_file():
                missing_image += 1
                if require_images:
                    continue
            yield ManifestRecord(
                id=image_id,
                image=image.relative_to(root).as_posix(),
                findings=report.findings,
                impression=report.impression,
                indication=report.indication,
                labels=labels,
                split=iu_split(report.id),
            )
    logger.info(
        "IU X-ray: %d reports without findings left out; %d images not on disk%s",
        no_findings,
        missing_image,
        " (left out)" if require_images else " (kept: text-only manifest)",
    )

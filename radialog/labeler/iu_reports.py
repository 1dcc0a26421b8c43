"""Reader for the IU X-ray (Open-i) reports that torchxrayvision ships as `data/NLMCXR_reports.tgz`.

3,955 de-identified chest X-ray reports from Indiana University (Demner-Fushman et al., 2016),
one Open-i XML file each, licensed CC BY-NC-ND 4.0: read them from the installed package at run
time; do not copy them into this repository.
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from radialog.errors import InputError


@dataclass(frozen=True)
class IUReport:
    """One IU X-ray report. Sections are "" where the report has none; "XXXX" marks anonymised words."""

    id: str  # Open-i uId, e.g. "CXR1"
    findings: str
    impression: str
    indication: str
    comparison: str
    image_ids: tuple[str, ...]  # e.g. ("CXR1_1_IM-0001-3001", ...): the PNG/DICOM file stems
    mesh: tuple[str, ...]  # major MeSH terms the curators assigned, e.g. "Cardiomegaly/mild"

    @property
    def text(self) -> str:
        """Findings and impression with their headers, as a radiologist would read them."""
        parts = [
            f"{name}: {body}" for name, body in (("FINDINGS", self.findings), ("IMPRESSION", self.impression)) if body
        ]
        return "\n".join(parts)


def default_iu_reports_path() -> Path:
    """The tgz inside the installed torchxrayvision package."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise InputError("torchxrayvision is not installed: it ships the IU X-ray reports (NLMCXR_reports.tgz)")
    return Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def parse_iu_report(xml: bytes) -> IUReport:
    root = ET.fromstring(xml)
    sections = {node.get("Label", "").upper(): _clean(node.text) for node in root.iter("AbstractText")}
    uid = root.find("uId")
    if uid is None or not uid.get("id"):
        raise InputError("an IU X-ray report has no <uId id=...>")
    mesh = root.find("MeSH")
    return IUReport(
        id=uid.get("id"),
        findings=sections.get("FINDINGS", ""),
        impression=sections.get("IMPRESSION", ""),
        indication=sections.get("INDICATION", ""),
        comparison=sections.get("COMPARISON", ""),
        image_ids=tuple(image.get("id") for image in root.iter("parentImage") if image.get("id")),
        mesh=tuple(_clean(term.text) for term in mesh.iter("major")) if mesh is not None else (),
    )


def iter_iu_reports(path: str | Path | None = None) -> Iterator[IUReport]:
    """Yield every report in the tgz (default: torchxrayvision's copy), in the archive's order."""
    path = Path(path) if path is not None else default_iu_reports_path()
    if not path.is_file():
        raise InputError(f"IU X-ray reports not found: {path}")
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".xml"):
                handle = archive.extractfile(member)
                if handle is not None:
                    yield parse_iu_report(handle.read())

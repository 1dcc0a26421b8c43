"""A study's exported record (`Session.record`) as a file a person, an EHR or a PACS can take in.

    json      the record itself
    txt       the report with its findings and consistency flags, for reading
    fhir      a FHIR DiagnosticReport (JSON) with one contained Observation per positive finding
    dicom-sr  a DICOM Comprehensive SR holding the report text and the coded positive findings

FHIR: `fhir.resources` validates the resource; its top-level package is FHIR R5 (from version 7), so this
uses its `R4B` subpackage (FHIR 4.3), whose DiagnosticReport and Observation have the fields used here
unchanged from R4 (4.0.1). Both structured formats mark the report as an unverified, preliminary draft.

DICOM SR (`highdicom`): given the source X-ray's DICOM header, the SR joins its study (patient and study
attributes carried over, the image listed as evidence); without one it opens a new study with the patient
unknown (the SR then references no instance, since there is none).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from pydicom import Dataset, dcmwrite
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

logger = logging.getLogger(__name__)

ExportFormat = Literal["json", "txt", "fhir", "dicom-sr"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
DRAFT_NOTICE = "AI-generated draft report, not for clinical use"

# CheXpert observations → SNOMED CT, as DICOM PS3.16 lists them (pydicom's `codes.SCT`, generated from the
# standard). Labels without a matching concept there stay text only rather than get a guessed code.
SNOMED_CODES: dict[str, Code] = {
    "Cardiomegaly": codes.SCT.Cardiomegaly,  # 287272002
    "Edema": codes.SCT.PulmonaryEdema,  # 19242006
    "Pneumothorax": codes.SCT.Pneumothorax,  # 36118008
    "Pleural Effusion": codes.SCT.PleuralEffusion,  # 60046008
}
SNOMED_SYSTEM = "http://snomed.info/sct"
LOINC_SYSTEM = "http://loinc.org"


@dataclass(frozen=True)
class ExportFile:
    content: bytes
    media_type: str
    filename: str


def export_file(record: dict, fmt: str, source: Dataset | None = None) -> ExportFile:
    """`record` in one of `FORMATS`; `source` is the uploaded DICOM header, when the upload was DICOM."""
    stem = f"radialog-report-{record['study_id'][:8]}"
    if fmt == "json":
        return ExportFile(json.dumps(record, indent=2).encode(), "application/json", f"{stem}.json")
    if fmt == "txt":
        return ExportFile(to_text(record).encode(), "text/plain; charset=utf-8", f"{stem}.txt")
    if fmt == "fhir":
        return ExportFile(to_fhir_json(record).encode(), "application/fhir+json", f"{stem}.fhir.json")
    if fmt == "dicom-sr":
        buffer = io.BytesIO()
        dcmwrite(buffer, to_dicom_sr(record, source), enforce_file_format=True)
        return ExportFile(buffer.getvalue(), "application/dicom", f"{stem}.dcm")
    raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")


def to_text(record: dict) -> str:
    positive = ", ".join(record["positive_findings"]) or "none"
    lines = [
        f"RaDialog draft report ({DRAFT_NOTICE})",
        f"Model: {record['model_id']}",
        f"Exported: {record['exported_at']}",
        f"Predicted findings: {positive}",
    ]
    flags = _flags(record)
    if flags:
        lines += ["", "Report vs. predicted findings:", *(f"- {flag}" for flag in flags)]
    return "\n".join([*lines, "", "Findings:", record["report"], ""])


def _flags(record: dict) -> list[str]:
    """One line per contradiction or omission of the record's consistency check."""
    flags = []
    for check in (record.get("consistency") or {}).get("checks", []):
        if check["verdict"] == "agreement":
            continue
        probability = "" if check["probability"] is None else f", p={check['probability']:.2f}"
        said = f': "{check["sentence"]}"' if check["sentence"] else ""
        flags.append(f"{check['verdict']}: {check['finding']}{probability} (report {check['report']}{said})")
    return flags


# ---------------------------------------------------------------------- FHIR
def to_fhir_json(record: dict) -> str:
    """A FHIR R4(B) DiagnosticReport, validated by `fhir.resources`, as JSON."""
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    checks = {c["finding"]: c for c in (record.get("consistency") or {}).get("checks", [])}
    observations = [
        _observation(f"finding-{i}", label, record["findings"].get(label), checks.get(label))
        for i, label in enumerate(record["positive_findings"], start=1)
    ]
    report = DiagnosticReport.model_validate(
        {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": "urn:radialog:study", "value": record["study_id"]}],
            "status": "preliminary",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                            "code": "RAD",
                            "display": "Radiology",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": LOINC_SYSTEM, "code": "18748-4", "display": "Diagnostic imaging study"}],
                "text": "Chest X-ray report",
            },
            "effectiveDateTime": record["created_at"],
            "issued": record["exported_at"],
            "performer": [{"display": f"RaDialog {record['model_id']} ({DRAFT_NOTICE})"}],
            "contained": observations,
            "result": [{"reference": f"#{o['id']}", "display": o["code"]["text"]} for o in observations],
            "conclusion": record["report"],
            "conclusionCode": [_concept(label) for label in record["positive_findings"] if label in SNOMED_CODES],
        }
    )
    return report.model_dump_json(indent=2)


def _concept(label: str) -> dict:
    code = SNOMED_CODES.get(label)
    coding = [] if code is None else [{"system": SNOMED_SYSTEM, "code": code.value, "display": code.meaning}]
    return {"coding": coding, "text": label} if coding else {"text": label}


def _observation(resource_id: str, label: str, probability: float | None, check: dict | None) -> dict:
    observation = {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging",
                    }
                ]
            }
        ],
        "code": _concept(label),
        "method": {"text": "RaDialog image classifier"},
    }
    if probability is not None:
        observation["valueQuantity"] = {
            "value": probability,
            "unit": "probability",
            "system": "http://unitsofmeasure.org",
            "code": "1",
        }
    if check is not None and check["verdict"] != "agreement":
        said = f': "{check["sentence"]}"' if check["sentence"] else ""
        observation["note"] = [{"text": f"{check['verdict']} with the report (report {check['report']}{said})"}]
    return observation


# ---------------------------------------------------------------------- DICOM SR
def to_dicom_sr(record: dict, source: Dataset | None = None) -> Dataset:
    """A Comprehensive SR: observer = the model (a device), the report as TEXT, coded positive findings."""
    from highdicom.sr import (
        CodeContentItem,
        ComprehensiveSR,
        RelationshipTypeValues,
        TextContentItem,
        UIDRefContentItem,
    )

    context, contains = RelationshipTypeValues.HAS_OBS_CONTEXT, RelationshipTypeValues.CONTAINS
    model_id = record["model_id"]
    findings = [TextContentItem(codes.DCM.Finding, record["report"], contains)]
    findings += [
        CodeContentItem(codes.DCM.Finding, SNOMED_CODES[label], contains)
        for label in record["positive_findings"]
        if label in SNOMED_CODES
    ]
    content = _container(
        codes.LN.DiagnosticImagingReport,
        [
            CodeContentItem(codes.DCM.ObserverType, codes.DCM.Device, context),
            # The same model always gets the same device UID.
            UIDRefContentItem(codes.DCM.DeviceObserverUID, generate_uid(entropy_srcs=[model_id]), context),
            TextContentItem(codes.DCM.DeviceObserverName, model_id[:64], context),
            TextContentItem(codes.DCM.Comment, DRAFT_NOTICE, contains),
            _container(codes.DCM.Findings, findings, contains),
        ],
    )
    evidence = source if source is not None else _new_study()
    sr = ComprehensiveSR(
        evidence=[evidence],
        content=content,
        series_instance_uid=generate_uid(),
        series_number=990,  # out of the way of the modality's own series numbers
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="RaDialog",
        is_complete=False,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = DRAFT_NOTICE
    if source is None:
        # highdicom takes the patient and study from an evidence instance; this one does not exist.
        del sr.CurrentRequestedProcedureEvidenceSequence
    return sr


def _container(name: Code, items: list, relationship_type: str | None = None) -> Dataset:
    from highdicom.sr import ContainerContentItem, ContentSequence

    container = ContainerContentItem(name, relationship_type=relationship_type)
    container.ContentSequence = ContentSequence(items)
    return container


def _new_study() -> Dataset:
    """The study and (unknown, empty) patient attributes for an SR of an upload that was no DICOM file."""
    now = datetime.now(UTC)
    study = Dataset()
    study.StudyInstanceUID = generate_uid()
    study.SeriesInstanceUID = generate_uid()
    study.SOPInstanceUID = generate_uid()
    study.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture: a stand-in, dropped again
    study.StudyDate, study.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID"):
        setattr(study, keyword, "")
    study.ReferringPhysicianName = ""
    return study

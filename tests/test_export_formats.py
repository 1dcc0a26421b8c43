"""Report export: FHIR and DICOM SR files read back with their own libraries, and the API's export route."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from highdicom.sr import ComprehensiveSR

from radialog.app.service import StudyService
from radialog.consistency import check_consistency
from radialog.export_formats import DRAFT_NOTICE, export_file

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
REPORT = "Mild cardiomegaly. No pleural effusion."


@pytest.fixture
def record() -> dict:
    probabilities = {"Cardiomegaly": 0.91, "Pleural Effusion": 0.83, "Fracture": 0.02}
    positive = ["Cardiomegaly", "Pleural Effusion"]
    return {
        "study_id": "0123456789abcdef",
        "created_at": "2026-01-31T09:30:00+00:00",
        "exported_at": "2026-01-31T09:35:00+00:00",
        "model": "radialog-v1-report",
        "model_id": "preset:tiny",
        "image": {"format": "png", "window": None},
        "findings": probabilities,
        "positive_findings": positive,
        "report": REPORT,
        "turns": [],
        "consistency": check_consistency(REPORT, positive, probabilities).to_dict(),
    }


def content_texts(dataset: pydicom.Dataset) -> list[str]:
    """Every TEXT value in the SR content tree."""
    texts = []
    for item in dataset.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            texts.append(item.TextValue)
        texts += content_texts(item)
    return texts


def content_codes(dataset: pydicom.Dataset) -> list[str]:
    codes = []
    for item in dataset.get("ContentSequence", []):
        if item.ValueType == "CODE":
            codes.append(item.ConceptCodeSequence[0].CodeValue)
        codes += content_codes(item)
    return codes


def test_the_fhir_report_parses_back_as_a_preliminary_diagnostic_report(record):
    exported = export_file(record, "fhir")
    assert exported.media_type == "application/fhir+json"
    report = DiagnosticReport.model_validate_json(exported.content)
    assert report.status == "preliminary" and report.conclusion == REPORT
    assert [c.coding[0].code for c in report.conclusionCode] == ["287272002", "60046008"]  # SNOMED CT
    observations = {o.id: o for o in report.contained}
    assert [r.reference for r in report.result] == ["#finding-1", "#finding-2"]
    effusion = observations["finding-2"]
    assert effusion.code.text == "Pleural Effusion" and float(effusion.valueQuantity.value) == 0.83
    assert "contradiction" in effusion.note[0].text and "No pleural effusion" in effusion.note[0].text
    assert DRAFT_NOTICE in report.performer[0].display


def test_the_sr_of_a_non_dicom_upload_is_a_new_study_with_an_unknown_patient(record):
    exported = export_file(record, "dicom-sr")
    dataset = pydicom.dcmread(io.BytesIO(exported.content))
    assert dataset.SOPClassUID == COMPREHENSIVE_SR and dataset.Modality == "SR"
    assert dataset.PreliminaryFlag == "PRELIMINARY" and dataset.VerificationFlag == "UNVERIFIED"
    assert REPORT in content_texts(dataset) and DRAFT_NOTICE in content_texts(dataset)
    assert "preset:tiny" in content_texts(dataset)  # the device observer name: the model
    assert {"287272002", "60046008"} <= set(content_codes(dataset))
    assert dataset.PatientID == "" and "CurrentRequestedProcedureEvidenceSequence" not in dataset
    assert ComprehensiveSR.from_dataset(dataset).SOPInstanceUID == dataset.SOPInstanceUID  # highdicom parses it


def test_the_sr_of_a_dicom_upload_joins_its_study_and_references_the_image(record, chest_dicom):
    source = pydicom.dcmread(chest_dicom)
    dataset = pydicom.dcmread(io.BytesIO(export_file(record, "dicom-sr", source).content))
    assert dataset.StudyInstanceUID == source.StudyInstanceUID and dataset.PatientID == source.PatientID
    assert dataset.SeriesInstanceUID != source.SeriesInstanceUID and dataset.SOPInstanceUID != source.SOPInstanceUID
    series = dataset.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_the_text_export_lists_the_flags(record):
    text = export_file(record, "txt").content.decode()
    assert DRAFT_NOTICE in text and REPORT in text
    assert 'contradiction: Pleural Effusion, p=0.83 (report negative: "No pleural effusion")' in text


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown export format 'pdf'"):
        export_file({"study_id": "x"}, "pdf")


def test_the_api_exports_a_study_in_every_format(api_client, xray_bytes, tiny_worker, api_store):
    study = api_client.post("/v1/studies", files={"file": ("x.png", xray_bytes[0], "application/octet-stream")}).json()
    url = f"/v1/studies/{study['id']}/export"
    assert api_client.get(url).status_code == 400  # no report yet
    StudyService(tiny_worker, api_store).edit_report(study["id"], REPORT)

    record = api_client.get(url)  # json by default
    assert record.status_code == 200 and record.json()["report"] == REPORT
    assert record.json()["consistency"]["checks"]
    assert 'filename="radialog-report-' in record.headers["content-disposition"]

    fhir = api_client.get(url, params={"format": "fhir"})
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    assert DiagnosticReport.model_validate_json(fhir.content).conclusion == REPORT

    sr = api_client.get(url, params={"format": "dicom-sr"})
    assert sr.headers["content-type"] == "application/dicom"
    assert REPORT in content_texts(pydicom.dcmread(io.BytesIO(sr.content)))

    assert REPORT in api_client.get(url, params={"format": "txt"}).text

    unknown = api_client.get(url, params={"format": "pdf"})
    assert unknown.status_code == 422 and "dicom-sr" in json.dumps(unknown.json()["detail"])


def test_an_api_exported_sr_of_a_dicom_study_joins_the_uploaded_study(api_client, chest_dicom, tiny_worker, api_store):
    upload = api_client.post("/v1/studies", files={"file": ("film.dcm", chest_dicom.read_bytes())})
    assert upload.status_code == 201, upload.text
    study_id = upload.json()["id"]
    StudyService(tiny_worker, api_store).edit_report(study_id, REPORT)
    exported = api_client.get(f"/v1/studies/{study_id}/export", params={"format": "dicom-sr"})
    sr = pydicom.dcmread(io.BytesIO(exported.content))
    source = pydicom.dcmread(chest_dicom, stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID

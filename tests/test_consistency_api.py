"""The consistency check through the REST API: its own route, the study, the report and the export record."""

from __future__ import annotations

import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)

from radialog.app.service import StudyService

REPORT = "No pneumothorax. Small left pleural effusion."


@pytest.fixture
def study(api_client, xray_bytes) -> dict:
    created = api_client.post("/v1/studies", files={"file": ("xray.png", xray_bytes[0], "application/octet-stream")})
    assert created.status_code == 201, created.text
    return created.json()


def test_a_study_without_a_report_has_nothing_to_check(api_client, study):
    assert api_client.get(f"/v1/studies/{study['id']}").json()["consistency"] is None
    answer = api_client.get(f"/v1/studies/{study['id']}/consistency")
    assert answer.status_code == 400 and "no report" in answer.json()["detail"]
    assert api_client.get("/v1/studies/nosuchstudy/consistency").status_code == 404


def test_an_edited_report_is_checked_against_the_studys_findings(api_client, study, tiny_worker, api_store):
    # The tiny model's classifier calls these two positive on this image: the report denies one and
    # leaves out the other.
    assert {"Pneumothorax", "Cardiomegaly"} <= set(study["positive_findings"])
    StudyService(tiny_worker, api_store).edit_report(study["id"], REPORT)

    answer = api_client.get(f"/v1/studies/{study['id']}/consistency")
    assert answer.status_code == 200, answer.text
    result = answer.json()
    checks = {c["finding"]: c for c in result["checks"]}
    assert checks["Pneumothorax"]["verdict"] == "contradiction"
    assert checks["Pneumothorax"]["sentence"] == "No pneumothorax"
    assert checks["Pneumothorax"]["probability"] == study["findings"]["Pneumothorax"]
    assert checks["Cardiomegaly"]["verdict"] == "omission" and checks["Cardiomegaly"]["sentence"] is None
    assert result["consistent"] is False
    assert result["counts"]["contradiction"] >= 1 and result["counts"]["omission"] >= 1

    assert api_client.get(f"/v1/studies/{study['id']}").json()["consistency"] == result
    record = StudyService(tiny_worker, api_store).export_record(study["id"])
    assert record["consistency"] == result


def test_a_generated_report_comes_back_with_its_check(api_client, study):
    answer = api_client.post(f"/v1/studies/{study['id']}/report")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["consistency"] == api_client.get(f"/v1/studies/{study['id']}/consistency").json()
    assert {c["finding"] for c in body["consistency"]["checks"]} >= set(study["positive_findings"]) - {"No Finding"}

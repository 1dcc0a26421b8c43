"""`GET /v1/studies/{id}/heatmap`: a finding's class-activation map over the study's image, as PNG."""

from __future__ import annotations

import io

import numpy as np
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from PIL import Image

from radialog.imaging import load_xray


def test_the_heatmap_is_a_png_of_the_image_that_differs_between_findings(api_client, xray_bytes):
    created = api_client.post("/v1/studies", files={"file": ("xray.png", xray_bytes[0], "application/octet-stream")})
    study = created.json()["id"]
    answer = api_client.get(f"/v1/studies/{study}/heatmap", params={"finding": "Pleural Effusion"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(answer.content))
    height, width = load_xray(xray_bytes[0]).pixels.shape
    assert overlay.size == (width, height) and overlay.mode == "RGB"
    other = api_client.get(f"/v1/studies/{study}/heatmap", params={"finding": "Cardiomegaly"})
    assert not np.array_equal(np.asarray(overlay), np.asarray(Image.open(io.BytesIO(other.content))))


def test_an_unknown_finding_or_study_is_refused_with_a_message(api_client, xray_bytes):
    created = api_client.post("/v1/studies", files={"file": ("xray.png", xray_bytes[0], "application/octet-stream")})
    answer = api_client.get(f"/v1/studies/{created.json()['id']}/heatmap", params={"finding": "Broken Heart"})
    assert answer.status_code == 400 and "unknown finding" in answer.json()["detail"]
    assert api_client.get("/v1/studies/nosuch/heatmap", params={"finding": "Edema"}).status_code == 404

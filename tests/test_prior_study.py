"""Prior-study comparison: a prior X-ray of the same patient goes into BioViL-T's temporal input only when
the weights were trained with priors or the caller asks, the prompt says so exactly then, and the prior
survives the API, the study store and a restart."""

from __future__ import annotations

import sqlite3

import pytest
import torch
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from store_fixtures import *  # noqa: F403 (pytest fixtures)

from radialog.app.database import MIGRATIONS, Database, migrate
from radialog.app.service import StudyService, UploadTooLarge
from radialog.app.studies import StudyStore
from radialog.chat import (
    PRIOR_COMPARED,
    PRIOR_FOR_COMPARISON_ONLY,
    PRIOR_NOT_ACCEPTED,
    PRIOR_NOT_ASKED,
    PRIOR_UNTRAINED_BUT_USED,
    PriorInfo,
    Task,
    prior_is_used,
)
from radialog.errors import ImageLoadError, InputError
from radialog.imaging import load_xray
from radialog.model import RaDialogModel, get_preset
from radialog.model.configuration import ImageEncoderConfig, RaDialogConfig
from radialog.prompts import PRIOR_SENTENCE, REPORT_INSTRUCTION, build_report_prompt, image_placeholders

PRIOR_KEYS = {"present", "used_by_model", "notice"}


@pytest.fixture(scope="module")
def swin_model() -> RaDialogModel:
    torch.manual_seed(0)
    return RaDialogModel.from_config(get_preset("r2gengpt-tiny"), device="cpu")


def first_user_message(session, task: Task, text: str = "") -> str:
    return session.prepare(task, text).conversation.messages[0][1]


# ---------------------------------------------------------------------- model and configuration
def test_the_encoder_reads_the_prior_and_the_classifier_the_current_image_only(tiny_model, xray_bytes):
    current, prior = load_xray(xray_bytes[0]), load_xray(xray_bytes[1])
    alone = tiny_model.encode_image(current)
    compared = tiny_model.encode_image(current, prior)
    assert not alone.with_prior and compared.with_prior
    assert compared.image_embeds.shape == alone.image_embeds.shape
    assert not torch.allclose(compared.image_embeds, alone.image_embeds, atol=1e-4)
    assert torch.equal(compared.image_embeds, tiny_model.embed_image(current, prior))
    assert compared.probabilities == alone.probabilities and compared.positive == alone.positive


def test_a_swin_encoder_refuses_a_prior(swin_model, xray_bytes):
    xray = load_xray(xray_bytes[0])
    with pytest.raises(InputError, match="'swin' image encoder takes no prior"):
        swin_model.encode_image(xray, xray)
    encoder = swin_model.config.image_encoder
    with pytest.raises(InputError, match="takes no prior"):
        prior_is_used(encoder, use_prior=True)
    assert prior_is_used(encoder) is False
    assert PriorInfo.of(encoder, False, b"x").notice == PRIOR_NOT_ACCEPTED
    with pytest.raises(ValueError, match="trained_with_priors"):
        ImageEncoderConfig(kind="swin", swin=dict(encoder.swin), trained_with_priors=True)


def test_weights_not_trained_with_priors_are_the_default_and_old_configs_load(tmp_path):
    for name in ("radialog-v1", "demo", "tiny"):
        assert get_preset(name).image_encoder.trained_with_priors is False
    assert RaDialogConfig.load("radialog/demo_checkpoint").image_encoder.trained_with_priors is False
    config = get_preset("tiny")
    old = config.to_dict()
    del old["image_encoder"]["trained_with_priors"]  # a config.json written before the flag existed
    assert RaDialogConfig.from_dict(old).image_encoder.trained_with_priors is False
    config.image_encoder.trained_with_priors = True
    config.save(tmp_path)
    assert RaDialogConfig.load(tmp_path).image_encoder.trained_with_priors is True


def test_whether_a_prior_is_used_and_what_the_notice_says():
    untrained, trained = ImageEncoderConfig(), ImageEncoderConfig(trained_with_priors=True)
    assert (prior_is_used(untrained), prior_is_used(untrained, True)) == (False, True)
    assert (prior_is_used(trained), prior_is_used(trained, False)) == (True, False)
    assert PriorInfo.of(untrained, False, b"x").notice == PRIOR_FOR_COMPARISON_ONLY
    assert PriorInfo.of(untrained, True, b"x").notice == PRIOR_UNTRAINED_BUT_USED
    assert PriorInfo.of(trained, True, b"x").notice == PRIOR_COMPARED
    assert PriorInfo.of(trained, False, b"x").notice == PRIOR_NOT_ASKED
    assert "not trained with prior" in PRIOR_FOR_COMPARISON_ONLY and "not trained" in PRIOR_UNTRAINED_BUT_USED
    assert PriorInfo.of(untrained, False, b"x").digest != PriorInfo.of(untrained, False, b"y").digest


def test_the_prompt_names_a_prior_only_when_one_is_read():
    plain = build_report_prompt("edema", 4)
    assert plain == f"Image information: {image_placeholders(4)}. Predicted Findings: edema. {REPORT_INSTRUCTION}"
    with_prior = build_report_prompt("edema", 4, with_prior=True)
    assert with_prior == plain.replace("Predicted Findings:", f"{PRIOR_SENTENCE} Predicted Findings:")


# ---------------------------------------------------------------------- service
def test_by_default_a_prior_is_shown_only_and_the_embeddings_stay_the_single_images(service, xray_bytes):
    session = service.create_study(xray_bytes[0]).session
    single = session.encoded.image_embeds.clone()
    assert session.record()["prior"] is None and service.prior_image(session.id) is None

    attached = service.attach_prior(session.id, xray_bytes[1])
    assert attached is session and service.prior_image(session.id) == xray_bytes[1]
    assert session.record()["prior"] == {"present": True, "used_by_model": False, "notice": PRIOR_FOR_COMPARISON_ONLY}
    assert torch.equal(session.encoded.image_embeds, single) and not session.encoded.with_prior
    assert PRIOR_SENTENCE not in first_user_message(session, Task.REPORT)


def test_use_prior_feeds_both_images_and_keeps_the_report_and_turns(service, tiny_model, xray_bytes):
    session = service.create_study(xray_bytes[0]).session
    single = session.encoded.image_embeds.clone()
    findings = dict(session.probabilities)
    report = service.start_task(session.id, Task.REPORT).answer()
    service.start_task(session.id, Task.QUESTION, "Is there edema?").answer()

    service.attach_prior(session.id, xray_bytes[1], use_prior=True)
    record = session.record()
    assert record["prior"] == {"present": True, "used_by_model": True, "notice": PRIOR_UNTRAINED_BUT_USED}
    assert record["report"] == report and [t["task"] for t in record["turns"]] == ["report", "question"]
    assert session.probabilities == findings  # the classifier reads the current image only
    expected = tiny_model.encode_image(load_xray(xray_bytes[0]), load_xray(xray_bytes[1])).image_embeds
    assert torch.equal(session.encoded.image_embeds, expected)
    assert not torch.allclose(session.encoded.image_embeds, single, atol=1e-4)
    # The anchor turn (the report request) now says a prior exists; the next turn is built on it.
    assert session.state().anchor.prompt.count(PRIOR_SENTENCE) == 1
    assert first_user_message(session, Task.CHAT, "Any change?").count(PRIOR_SENTENCE) == 1

    # Replaced by a prior that is not read: back to the single image and RaDialog's own wording.
    service.attach_prior(session.id, xray_bytes[1], use_prior=False)
    assert torch.equal(session.encoded.image_embeds, single)
    assert PRIOR_SENTENCE not in session.state().anchor.prompt
    assert PRIOR_SENTENCE not in first_user_message(session, Task.REPORT)


def test_a_question_anchor_is_reworded_too(service, xray_bytes):
    session = service.create_study(xray_bytes[0]).session
    service.start_task(session.id, Task.QUESTION, "Is there edema?").answer()
    service.attach_prior(session.id, xray_bytes[1], use_prior=True)
    anchor = session.state().anchor.prompt
    assert anchor.endswith("Is there edema?") and anchor.count(PRIOR_SENTENCE) == 1


def test_a_prior_upload_is_checked_like_a_study_upload(worker, xray_bytes):
    small = StudyService(worker, StudyStore(), max_upload_bytes=len(xray_bytes[0]))
    study_id = small.create_study(xray_bytes[0]).session.id
    with pytest.raises(UploadTooLarge):
        small.attach_prior(study_id, xray_bytes[0] + b"\0")
    with pytest.raises(ImageLoadError):
        small.attach_prior(study_id, b"not an image")
    assert small.prior_image(study_id) is None


# ---------------------------------------------------------------------- store and API
def test_the_prior_survives_a_restart_and_a_change_by_another_process(worker, xray_bytes, open_database):
    first = StudyService(worker, StudyStore(database=open_database()))
    session = first.create_study(xray_bytes[0]).session
    single = session.encoded.image_embeds.clone()
    first.start_task(session.id, Task.REPORT).answer()
    first.attach_prior(session.id, xray_bytes[1], use_prior=True)

    restarted = StudyService(worker, StudyStore(database=open_database()))  # a new process: nothing in memory
    restored = restarted.get(session.id)
    assert restored is not session and restored.prior == session.prior
    assert restored.state() == session.state() and restored.encoded.with_prior
    assert torch.allclose(restored.encoded.image_embeds, session.encoded.image_embeds)
    assert restarted.prior_image(session.id) == xray_bytes[1]

    # Another process stops reading the prior: the first one's cached session is rebuilt, not just refreshed.
    restarted.attach_prior(session.id, xray_bytes[1], use_prior=False)
    refreshed = first.get(session.id)
    assert refreshed.prior.used_by_model is False and torch.allclose(refreshed.encoded.image_embeds, single)
    assert PRIOR_SENTENCE not in refreshed.state().anchor.prompt


def test_a_database_from_before_priors_is_migrated_and_its_studies_have_none(worker, xray_bytes, tmp_path):
    path = tmp_path / "studies.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    old.execute("INSERT INTO schema_version (version) VALUES (1)")
    for statement in MIGRATIONS[0]:
        old.execute(statement.format(blob="BLOB"))
    old.execute(
        "INSERT INTO studies (id, model_id, created_at, updated_s, revision, image, image_format, probabilities, "
        "positive, context_start) VALUES ('old', 'tiny', '2025-01-01T00:00:00+00:00', 1e12, 'r', ?, 'png', '{}', "
        "'[]', 0)",
        (xray_bytes[0],),
    )
    old.commit()
    old.close()
    database = Database.sqlite(path)
    service = StudyService(worker, StudyStore(database=database))
    assert migrate(database) == len(MIGRATIONS) == 2
    assert service.get("old").prior is None and service.prior_image("old") is None


def test_the_api_attaches_a_prior_and_shows_it_with_the_study(api_client, tiny_worker, api_store, xray_bytes):
    created = api_client.post("/v1/studies", files={"file": ("now.png", xray_bytes[0], "image/png")})
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    assert api_client.get(f"/v1/studies/{study_id}").json()["prior"] is None

    answer = api_client.post(
        f"/v1/studies/{study_id}/prior", files={"file": ("before.png", xray_bytes[1], "image/png")}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["prior"] == {"present": True, "used_by_model": False, "notice": PRIOR_FOR_COMPARISON_ONLY}
    answer = api_client.post(
        f"/v1/studies/{study_id}/prior?use_prior=true", files={"file": ("before.png", xray_bytes[1], "image/png")}
    )
    assert answer.status_code == 200, answer.text
    prior = api_client.get(f"/v1/studies/{study_id}").json()["prior"]
    assert set(prior) == PRIOR_KEYS and prior["used_by_model"] is True
    assert StudyService(tiny_worker, api_store).prior_image(study_id) == xray_bytes[1]

    bad = api_client.post(f"/v1/studies/{study_id}/prior", files={"file": ("x.png", b"not an image", "image/png")})
    assert bad.status_code == 415
    missing = api_client.post("/v1/studies/nosuchstudy/prior", files={"file": ("x.png", xray_bytes[1], "image/png")})
    assert missing.status_code == 404
    assert "/v1/studies/{study_id}/prior" in api_client.get("/openapi.json").json()["paths"]

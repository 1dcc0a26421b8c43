"""The study store on SQLite and on a real PostgreSQL server: studies outlive the store object, are shared
between processes, are refused when the store is full, expire, are really erased, and a database that
is down answers 503."""

from __future__ import annotations

import time

import pytest
from app_fixtures import *  # noqa: F403 (pytest fixtures)
from fastapi.testclient import TestClient
from store_fixtures import *  # noqa: F403 (pytest fixtures)

from radialog.app.api import create_api
from radialog.app.service import StudyService
from radialog.app.studies import StoreFull, StoreSettings, StudyNotFound, StudyStore
from radialog.chat import Task


def new_service(worker, database, **settings) -> StudyService:
    return StudyService(worker, StudyStore(StoreSettings(**settings), database))


def count_rows(database, table: str) -> int:
    with database.transaction() as run:
        return run(f"SELECT COUNT(*) FROM {table}", ()).fetchone()[0]


def test_a_study_outlives_its_store_with_report_revisions_and_conversation(worker, open_database, xray_bytes):
    first = new_service(worker, open_database())
    created = first.create_study(xray_bytes[0]).session
    generated = first.start_task(created.id, Task.REPORT).answer()
    first.edit_report(created.id, "Mild cardiomegaly. No effusion.")
    first.start_task(created.id, Task.QUESTION, "Is there edema?").answer()
    before = first.get(created.id)

    restarted = new_service(worker, open_database())  # a new process: nothing in memory
    session = restarted.get(created.id)
    assert session is not before
    assert session.state() == before.state() and session.report == "Mild cardiomegaly. No effusion."
    assert session.created_at == before.created_at and session.image == before.image
    assert session.probabilities == pytest.approx(before.probabilities, nan_ok=True)
    assert session.positive == before.positive
    assert [t.task for t in session.transcript] == [Task.REPORT, Task.QUESTION]
    revisions = restarted.store.revisions(created.id)
    assert [(r.source, r.report) for r in revisions] == [
        ("report", generated),
        ("edit", "Mild cardiomegaly. No effusion."),
    ]
    # The conversation goes on from the edited report, and is stored again.
    assert restarted.start_task(created.id, Task.SUMMARIZE).answer() is not None
    assert len(new_service(worker, open_database()).get(created.id).transcript) == 3


def test_two_stores_on_one_database_see_each_others_studies_turns_and_deletes(worker, open_database, xray_bytes):
    a, b = new_service(worker, open_database()), new_service(worker, open_database())
    study_id = a.create_study(xray_bytes[0]).session.id
    assert a.get(study_id).transcript == []  # cached in a
    b.start_task(study_id, Task.REPORT).answer()  # b has never seen it: restored from the database
    assert a.get(study_id).report == b.get(study_id).report is not None, "a's cached session is refreshed"
    a.delete(study_id)
    with pytest.raises(StudyNotFound):
        b.get(study_id)


def test_a_full_store_refuses_new_studies_and_keeps_the_old_ones(worker, open_database, xray_bytes, caplog):
    service = new_service(worker, open_database(), max_studies=2)
    kept = [service.create_study(xray_bytes[0]).session.id for _ in range(2)]
    with pytest.raises(StoreFull, match="full"):
        service.create_study(xray_bytes[1])
    assert "study store full" in caplog.text
    assert [service.get(study_id).id for study_id in kept] == kept and len(service.store) == 2
    service.delete(kept[0])
    assert service.create_study(xray_bytes[1])


def test_studies_past_their_retention_are_deleted(worker, open_database, xray_bytes):
    database = open_database()
    service = new_service(worker, database)
    study_id = service.create_study(xray_bytes[0]).session.id
    service.start_task(study_id, Task.REPORT).answer()
    time.sleep(0.2)
    expiring = new_service(worker, open_database(), retention_days=0.1 / 86400)  # 0.1 s
    with pytest.raises(StudyNotFound):
        expiring.get(study_id)
    assert [count_rows(database, table) for table in ("studies", "turns", "report_revisions")] == [0, 0, 0]


def test_delete_erases_every_row_of_the_study(worker, open_database, xray_bytes):
    database = open_database()
    service = new_service(worker, database)
    study_id = service.create_study(xray_bytes[0]).session.id
    service.start_task(study_id, Task.REPORT).answer()
    service.delete(study_id)
    with pytest.raises(StudyNotFound):
        service.get(study_id)
    assert [count_rows(database, table) for table in ("studies", "turns", "report_revisions")] == [0, 0, 0]


def test_delete_leaves_no_copy_of_the_image_in_the_sqlite_files(worker, tmp_path, xray_bytes):
    from radialog.app.database import Database

    data_dir = tmp_path / "data"
    service = new_service(worker, Database.open(None, data_dir))
    sample = xray_bytes[0][2000:2064]  # PNG bytes are stored as uploaded

    def on_disk() -> bytes:
        return b"".join(path.read_bytes() for path in data_dir.iterdir())

    study_id = service.create_study(xray_bytes[0]).session.id
    assert sample in on_disk()
    service.delete(study_id)
    assert sample not in on_disk()


def test_a_database_that_is_down_answers_503_and_recovers(postgres_server, tiny_worker, xray_bytes):
    from radialog.app.database import Database

    postgres_server.execute("CREATE DATABASE paused")
    store = StudyStore(database=Database.postgres(postgres_server.url("paused")))
    with TestClient(create_api(tiny_worker, store)) as client:
        study_id = client.post("/v1/studies", files={"file": ("x.png", xray_bytes[0], "image/png")}).json()["id"]
        postgres_server.execute("ALTER DATABASE paused ALLOW_CONNECTIONS false")
        postgres_server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'paused'")
        down = client.get(f"/v1/studies/{study_id}")
        assert down.status_code == 503 and "database is unavailable" in down.json()["detail"]
        assert down.headers["Retry-After"]
        postgres_server.execute("ALTER DATABASE paused ALLOW_CONNECTIONS true")
        assert client.get(f"/v1/studies/{study_id}").status_code == 200

"""Manifest format, MIMIC-CXR section parser, and the MIMIC-CXR / IU X-ray adapters on tiny fake trees."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from radialog.cli import main
from radialog.data import (
    ManifestRecord,
    iter_iu_records,
    iter_mimic_records,
    iu_split,
    parse_report,
    read_manifest,
    write_manifest,
)
from radialog.errors import InputError
from radialog.labeler import RuleBasedLabeler
from radialog.labeler.iu_reports import default_iu_reports_path
from radialog.labels import CHEXPERT_LABELS

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough and fever.

 COMPARISON:  None.

 FINDINGS:

 The heart is mildly enlarged.  There is a small left pleural effusion.
 No pneumothorax.

 IMPRESSION:

 Cardiomegaly and small left effusion.
"""


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), 100).save(path)


def test_manifest_roundtrip(tmp_path):
    labels = dict.fromkeys(CHEXPERT_LABELS)
    labels["Cardiomegaly"] = 1
    records = [
        ManifestRecord("a", "img/a.png", "Heart is enlarged.", labels=labels, split="train"),
        ManifestRecord("b", "img/b.png", "Lungs are clear.", impression="Normal.", split="test"),
    ]
    path = tmp_path / "m.jsonl"
    assert write_manifest(records, path) == 2
    assert read_manifest(path) == records
    assert records[0].positive_labels() == ["Cardiomegaly"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "image": "x.png"}', "missing 'findings'"),
        ('{"id": "a", "image": "x.png", "findings": "f", "labels": {"Cardiomegaly": 2}}', "expected 1, 0, -1"),
        ('{"id": "a", "image": "x.png", "findings": "f", "labels": {"Heart": 1}}', "unknown label"),
        ('{"id": "a", "image": "x.png", "findings": "f", "split": "dev"}', "split 'dev'"),
        ('{"id": "a", "image": "x.png", "findings": 3}', "must be text"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "ok", "image": "x.png", "findings": "f"}\n' + line + "\n")
    with pytest.raises(InputError, match=message) as err:
        read_manifest(path)
    assert "m.jsonl:2" in str(err.value)


def test_manifest_rejects_duplicates_empty_and_missing(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "image": "x", "findings": ""}\n' * 2)
    with pytest.raises(InputError, match="more than once"):
        read_manifest(path)
    path.write_text("\n")
    with pytest.raises(InputError, match="no records"):
        read_manifest(path)
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "absent.jsonl")


def test_labels_accept_float_values(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "image": "x", "findings": "f", "labels": {"Edema": -1.0, "Fracture": null}}\n')
    labels = read_manifest(path)[0].labels
    assert labels["Edema"] == -1 and labels["Fracture"] is None and len(labels) == 14


def test_section_parser():
    sections = parse_report(MIMIC_REPORT)
    assert sections.findings == (
        "The heart is mildly enlarged. There is a small left pleural effusion. No pneumothorax."
    )
    assert sections.impression == "Cardiomegaly and small left effusion."
    assert sections.indication == "___F with cough and fever."
    assert parse_report("CONCLUSION: No acute disease.").impression == "No acute disease."
    assert parse_report("Just a sentence without headers.").findings == ""


def _fake_mimic(root: Path) -> None:
    rows = [("d1", "50000001", "10000001", "train"), ("d2", "50000001", "10000001", "train")]
    rows += [("d3", "50000002", "11000002", "test"), ("d4", "50000003", "12000003", "validate")]
    rows += [("d5", "50000004", "13000004", "train")]  # image not on disk
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n" + "".join(",".join(r) + "\n" for r in rows)
    )
    for dicom, study, subject, _ in rows[:4]:
        _image(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg")
    reports = {
        "50000001": MIMIC_REPORT,
        "50000002": "FINDINGS: Lungs are clear.\n",
        "50000003": "IMPRESSION: Normal.\n",
    }
    for _, study, subject, _ in (rows[0], rows[2], rows[3]):
        report = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        report.write_text(reports[study])


def test_mimic_adapter_and_cli(tmp_path, caplog):
    root = tmp_path / "mimic"
    root.mkdir()
    _fake_mimic(root)
    records = list(iter_mimic_records(root, labeler=RuleBasedLabeler()))
    # d4's report has no findings section, d5 has no image: both left out, as RaDialog does.
    assert [r.id for r in records] == ["d1", "d2", "d3"]
    assert records[0].image == "files/p10/p10000001/s50000001/d1.jpg"
    assert records[0].findings == records[1].findings and records[0].split == "train"
    assert records[0].labels["Cardiomegaly"] == 1 and records[0].labels["Pleural Effusion"] == 1
    assert records[2].split == "test" and records[2].labels["No Finding"] == 1

    labels_csv = root / "mimic-cxr-2.0.0-chexpert.csv"
    header = "subject_id,study_id," + ",".join(CHEXPERT_LABELS)
    values = ["" for _ in CHEXPERT_LABELS]
    values[CHEXPERT_LABELS.index("Edema")] = "-1.0"
    labels_csv.write_text(f"{header}\n10000001,50000001,{','.join(values)}\n")
    records = list(iter_mimic_records(root))
    assert records[0].labels["Edema"] == -1 and records[0].labels["Cardiomegaly"] is None
    assert records[2].labels is None  # a study missing from the CSV

    out = tmp_path / "out" / "manifest.jsonl"
    assert main(["make-manifest", "mimic", str(root), "--out", str(out)]) == 0
    written = read_manifest(out)
    assert len(written) == 3
    assert (out.parent / written[0].image).resolve() == (root / records[0].image).resolve()


def test_mimic_adapter_errors(tmp_path, capsys):
    assert main(["make-manifest", "mimic", str(tmp_path), "--out", str(tmp_path / "m.jsonl")]) == 2
    assert "mimic-cxr-2.0.0-split.csv: file not found" in capsys.readouterr().err
    (tmp_path / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,split\n")
    with pytest.raises(InputError, match="missing column"):
        list(iter_mimic_records(tmp_path))


IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="INDICATION">Cough.</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<parentImage id="CXR{n}_1_IM-0001-1001"/><parentImage id="CXR{n}_1_IM-0001-2001"/></eCitation>
"""


def test_iu_adapter_on_fake_tree(tmp_path):
    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    cases = [
        (1, "The heart is enlarged. No effusion.", "Cardiomegaly."),
        (2, "", "Normal chest."),
        (3, "Clear lungs.", ""),
    ]
    for n, findings, impression in cases:
        (folder / f"{n}.xml").write_text(IU_XML.format(n=n, findings=findings, impression=impression))
        _image(tmp_path / "images" / f"CXR{n}_1_IM-0001-1001.png")
    records = list(iter_iu_records(tmp_path, RuleBasedLabeler()))
    # Report 2 has no findings; the second image of each report is not on disk.
    assert [r.id for r in records] == ["CXR1_1_IM-0001-1001", "CXR3_1_IM-0001-1001"]
    assert records[0].image == "images/CXR1_1_IM-0001-1001.png"
    assert records[0].indication == "Cough." and records[0].impression == "Cardiomegaly."
    assert records[0].labels["Cardiomegaly"] == 1 and records[0].split == iu_split("CXR1")
    text_only = list(iter_iu_records(tmp_path, require_images=False))
    assert len(text_only) == 4  # both images of reports 1 and 3, on disk or not
    (folder / "4.xml").write_text("<eCitation>")
    with pytest.raises(InputError, match=r"4\.xml: not an Open-i report"):
        list(iter_iu_records(tmp_path))


def test_iu_split_is_stable_and_balanced():
    splits = [iu_split(f"CXR{i}") for i in range(3000)]
    assert splits == [iu_split(f"CXR{i}") for i in range(3000)]
    assert 0.75 < splits.count("train") / 3000 < 0.85 and splits.count("validate") > 200


def test_iu_adapter_reads_the_real_open_i_xml(tmp_path):
    """The real reports (torchxrayvision's copy), unpacked to tmp only: never into the repository."""
    archive_path = default_iu_reports_path()
    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    with tarfile.open(archive_path, "r:gz") as archive:
        members = [m for m in archive if m.isfile() and m.name.endswith(".xml")][:30]
        for member in members:
            (folder / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    from radialog.labeler.iu_reports import parse_iu_report

    reports = [parse_iu_report(p.read_bytes()) for p in sorted(folder.glob("*.xml"))]
    for report in reports:
        for image_id in report.image_ids:
            _image(tmp_path / "images" / f"{image_id}.png")
    records = list(iter_iu_records(tmp_path, RuleBasedLabeler()))
    expected = sum(len(r.image_ids) for r in reports if r.findings)
    assert len(records) == expected > 20
    assert all(r.findings and r.labels is not None and r.id.startswith("CXR") for r in records)
    out = tmp_path / "out.jsonl"
    assert main(["make-manifest", "iu", str(tmp_path), "--out", str(out)]) == 0
    assert len(read_manifest(out)) == expected
    assert json.loads(out.read_text().splitlines()[0])["image"].startswith("images/CXR")

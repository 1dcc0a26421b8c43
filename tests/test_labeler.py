"""Rule-based CheXpert labeler: negation, uncertainty, No Finding, all 14 observations, real report layout.

The sentences are our own, written in the style of IU X-ray / MIMIC-CXR reports. The dev sets in
tests/data/labeler/ hold more of them with their expected labels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from radialog.labeler import RuleBasedLabeler, iter_iu_reports
from radialog.labeler.rules import label_sentence
from radialog.labeler.text import split_sentences
from radialog.labels import CHEXPERT_LABELS

DATA = Path(__file__).parent / "data" / "labeler"
NF = "No Finding"


@pytest.fixture(scope="module")
def labeler() -> RuleBasedLabeler:
    return RuleBasedLabeler()


def check(labeler: RuleBasedLabeler, text: str, expected: dict[str, int]) -> None:
    """Every one of the 14 labels must be as expected (unlisted ones: not mentioned)."""
    got = labeler.label_report(text)
    assert list(got) == list(CHEXPERT_LABELS)
    want = {name: expected.get(name) for name in CHEXPERT_LABELS}
    assert got == want, {name: (want[name], got[name]) for name in CHEXPERT_LABELS if got[name] != want[name]}


# One positive, one negative and (where reports hedge it) one uncertain sentence per observation.
PER_LABEL = [
    ("The cardiomediastinal silhouette is widened.", {"Enlarged Cardiomediastinum": 1}),
    ("Normal cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": 0, NF: 1}),
    ("Stable cardiomediastinal contours.", {"Enlarged Cardiomediastinum": -1}),
    ("The heart is moderately enlarged.", {"Cardiomegaly": 1}),
    ("Heart size is within normal limits.", {"Cardiomegaly": 0, NF: 1}),
    ("Borderline cardiomegaly.", {"Cardiomegaly": -1}),
    ("Patchy opacity in the left lower lobe.", {"Lung Opacity": 1}),
    ("No focal airspace opacity.", {"Lung Opacity": 0, NF: 1}),
    ("Questionable opacity at the right base.", {"Lung Opacity": -1}),
    ("A 2 cm nodule in the right upper lobe.", {"Lung Lesion": 1}),
    ("No suspicious pulmonary nodules or masses.", {"Lung Lesion": 0, NF: 1}),
    ("Mild interstitial pulmonary edema.", {"Edema": 1}),
    ("No pulmonary edema.", {"Edema": 0, NF: 1}),
    ("Mild pulmonary vascular congestion.", {"Edema": -1}),
    ("Consolidation in the right middle lobe.", {"Consolidation": 1}),
    ("There is no focal consolidation.", {"Consolidation": 0, NF: 1}),
    ("Right lower lobe pneumonia.", {"Pneumonia": 1}),
    ("No radiographic evidence of pneumonia.", {"Pneumonia": 0, NF: 1}),
    ("Findings are concerning for pneumonia.", {"Pneumonia": -1}),
    ("Bibasilar subsegmental atelectasis.", {"Atelectasis": 1}),
    ("Probable atelectasis at the left base.", {"Atelectasis": -1}),
    ("Small left apical pneumothorax.", {"Pneumothorax": 1}),
    ("There is no pneumothorax.", {"Pneumothorax": 0, NF: 1}),
    ("Small bilateral pleural effusions.", {"Pleural Effusion": 1}),
    ("No pleural effusion.", {"Pleural Effusion": 0, NF: 1}),
    ("Possible small right pleural effusion.", {"Pleural Effusion": -1}),
    ("Biapical pleural thickening.", {"Pleural Other": 1}),
    ("Old healed fractures of the left ribs.", {"Fracture": 1}),
    ("No acute displaced rib fracture.", {"Fracture": 0, NF: 1}),
    ("Right internal jugular catheter with tip in the SVC.", {"Support Devices": 1, NF: 1}),
    ("The endotracheal tube has been removed.", {"Support Devices": 0, NF: 1}),
]


@pytest.mark.parametrize(("text", "expected"), PER_LABEL, ids=[t for t, _ in PER_LABEL])
def test_each_observation(labeler, text, expected):
    check(labeler, text, expected)


def test_every_observation_is_covered():
    observed = {name for _, expected in PER_LABEL for name, value in expected.items() if value == 1}
    assert observed == set(CHEXPERT_LABELS)


NEGATION = [
    (
        "No pneumothorax, pleural effusion, or focal airspace consolidation.",
        {"Pneumothorax": 0, "Pleural Effusion": 0, "Consolidation": 0, NF: 1},
    ),
    ("There is no evidence of pneumothorax.", {"Pneumothorax": 0, NF: 1}),
    ("The lungs are clear without consolidation or effusion.", {"Consolidation": 0, "Pleural Effusion": 0, NF: 1}),
    ("The lungs are free of focal infiltrate.", {"Lung Opacity": 0, NF: 1}),
    ("Negative for pneumonia.", {"Pneumonia": 0, NF: 1}),
    ("No XXXX of pleural fluid collection is seen.", {"Pleural Effusion": 0, NF: 1}),
    ("The previously seen right effusion has resolved.", {"Pleural Effusion": 0, NF: 1}),
    ("Interval resolution of the left lower lobe pneumonia.", {"Pneumonia": 0, NF: 1}),
    ("The pneumothorax is no longer seen.", {"Pneumothorax": 0, NF: 1}),
    ("Normal heart size.", {"Cardiomegaly": 0, NF: 1}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0, NF: 1}),
    ("No findings to suggest pneumonia.", {"Pneumonia": 0, NF: 1}),
    ("No pleural effusion, but there is a small right pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 1}),
    ("Mild cardiomegaly, no effusion.", {"Cardiomegaly": 1, "Pleural Effusion": 0}),
    ("Normal heart size with mild pulmonary edema.", {"Cardiomegaly": 0, "Edema": 1}),
    # Pseudo-negation: the effusion is still there.
    ("No change in the small left pleural effusion.", {"Pleural Effusion": 1}),
]


@pytest.mark.parametrize(("text", "expected"), NEGATION, ids=[t for t, _ in NEGATION])
def test_negation(labeler, text, expected):
    check(labeler, text, expected)


UNCERTAINTY = [
    ("Pneumonia cannot be excluded.", {"Pneumonia": -1}),
    ("Cannot exclude a small left pleural effusion.", {"Pleural Effusion": -1}),
    ("A small pneumothorax is not excluded.", {"Pneumothorax": -1}),
    ("Left basilar opacity may represent atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("Opacity in the right base could be pneumonia.", {"Lung Opacity": 1, "Pneumonia": -1}),
    ("Atelectasis versus pneumonia in the lingula.", {"Atelectasis": -1, "Pneumonia": -1}),
    ("Streaky opacity, atelectasis or scarring.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("Suspicious for a right upper lobe mass.", {"Lung Lesion": -1}),
    # CheXpert: "no new" leaves the old finding possible; stable heart size may be stably enlarged.
    ("No new consolidation.", {"Consolidation": -1}),
    ("Heart size is unchanged.", {"Cardiomegaly": -1}),
    # Uncertain heart failure makes cardiomegaly uncertain too (CheXpert's exception).
    ("Findings may reflect congestive heart failure.", {"Edema": -1, "Cardiomegaly": -1}),
]


@pytest.mark.parametrize(("text", "expected"), UNCERTAINTY, ids=[t for t, _ in UNCERTAINTY])
def test_uncertainty(labeler, text, expected):
    check(labeler, text, expected)


NO_FINDING = [
    ("No acute cardiopulmonary abnormality.", {NF: 1}),
    ("The heart is normal in size. The lungs are clear.", {"Cardiomegaly": 0, NF: 1}),
    # Support devices do not count as findings.
    ("Left chest wall pacemaker. Lungs are clear.", {"Support Devices": 1, NF: 1}),
    # Uncertain findings do.
    ("Possible small left effusion.", {"Pleural Effusion": -1}),
    # So do abnormalities outside the 14 observations.
    ("Calcified granuloma in the right upper lobe.", {}),
    ("Lungs are hyperinflated, consistent with emphysema.", {}),
    ("Degenerative changes of the thoracic spine.", {}),
    # ...unless negated.
    ("No hiatal hernia. No emphysema.", {NF: 1}),
    # Mentions that are not findings: the granuloma is a finding, the heart is not described.
    ("Calcified granuloma projecting over the heart.", {}),
    ("Small pericardial effusion.", {}),
]


@pytest.mark.parametrize(("text", "expected"), NO_FINDING, ids=[t for t, _ in NO_FINDING])
def test_no_finding_rule(labeler, text, expected):
    check(labeler, text, expected)


def test_empty_report_mentions_nothing(labeler):
    check(labeler, "", {})
    check(labeler, "  \n ", {})


def test_sections_lists_and_anonymisation(labeler):
    report = (
        "INDICATION: Rule out pneumonia.\n"
        "COMPARISON: XXXX showing a right effusion.\n"
        "FINDINGS: The heart is normal in size. Nodule measures 2.5 cm in the left upper lobe.\n"
        "IMPRESSION:\n1. No acute disease.\n2. Left upper lobe nodule.\n- No pneumothorax."
    )
    assert split_sentences(report) == [
        "the heart is normal in size",
        "nodule measures 2.5 cm in the left upper lobe",
        "no acute disease",
        "left upper lobe nodule",
        "no pneumothorax",
    ]
    check(labeler, report, {"Cardiomegaly": 0, "Lung Lesion": 1, "Pneumothorax": 0})


def test_mentions_in_several_sentences_aggregate_as_chexpert(labeler):
    # Positive beats uncertain beats negative.
    check(labeler, "No pleural effusion. Small left pleural effusion.", {"Pleural Effusion": 1})
    check(labeler, "No pneumonia. Pneumonia is not excluded.", {"Pneumonia": -1})


def _dev_set(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("name", "min_accuracy"),
    # dev_held_out was written before the last round of rule changes and scored 44/49 reports
    # (98.98% of labels) then; it is kept apart so that number stays meaningful.
    # dev_plain_language holds the plain-language sentences of the template teacher, whose finding
    # preservation is checked with this labeler: it must read every one of them.
    [
        ("dev_sentences.jsonl", 1.0),
        ("dev_reports.jsonl", 1.0),
        ("dev_held_out.jsonl", 0.99),
        ("dev_plain_language.jsonl", 1.0),
    ],
)
def test_dev_set_accuracy(labeler, name, min_accuracy):
    items = _dev_set(name)
    correct, wrong = 0, []
    for item in items:
        got = labeler.label_report(item["text"])
        for label in CHEXPERT_LABELS:
            if got[label] == item["labels"].get(label):
                correct += 1
            else:
                wrong.append((item["text"][:60], label, item["labels"].get(label), got[label]))
    accuracy = correct / (len(items) * len(CHEXPERT_LABELS))
    assert accuracy >= min_accuracy, wrong


@pytest.fixture(scope="module")
def iu_reports():
    return list(iter_iu_reports())


def test_iu_reader_reads_all_reports(iu_reports):
    assert len(iu_reports) == 3955
    assert len({r.id for r in iu_reports}) == 3955
    first = next(r for r in iu_reports if r.id == "CXR1")
    assert first.findings.startswith("The cardiac silhouette")
    assert first.image_ids and all(i.startswith("CXR1_") for i in first.image_ids)
    assert first.text.startswith("FINDINGS: ") and "\nIMPRESSION: " in first.text
    assert sum(bool(r.findings or r.impression) for r in iu_reports) > 3900


def test_labels_the_iu_reports_fast_and_reproducibly(labeler, iu_reports):
    texts = [r.text for r in iu_reports]
    label_sentence.cache_clear()  # time the cold path
    start = time.process_time()
    first = labeler.label(texts)
    seconds = time.process_time() - start
    assert len(texts) / seconds >= 1000, f"{len(texts) / seconds:.0f} reports/s"
    label_sentence.cache_clear()
    assert labeler.label(texts) == first
    # Sanity on real text: common findings are found, and about a third of the reports are normal.
    positives = {name: sum(labels[name] == 1 for labels in first) for name in CHEXPERT_LABELS}
    assert all(positives[name] > 10 for name in ("Cardiomegaly", "Pleural Effusion", "Atelectasis", "Lung Opacity"))
    assert 0.25 < positives[NF] / len(texts) < 0.5

"""The report-vs-classifier check on handwritten report sentences."""

from __future__ import annotations

import json
import math

import pytest

from radialog.consistency import ConsistencyConfig, Verdict, check_consistency
from radialog.labels import CHEXPERT_LABELS


def probabilities(**named: float) -> dict[str, float]:
    """All 14 labels at 0.01 except those named (underscores for spaces)."""
    probs = dict.fromkeys(CHEXPERT_LABELS, 0.01)
    probs.update({name.replace("_", " "): p for name, p in named.items()})
    return probs


def test_a_stated_effusion_the_classifier_rules_out_is_a_contradiction_naming_the_sentence():
    report = "The heart size is normal. There is a large left pleural effusion. No pneumothorax."
    result = check_consistency(report, positive=[], probabilities=probabilities())
    effusion = result.by_finding()["Pleural Effusion"]
    assert effusion.verdict is Verdict.CONTRADICTION
    assert effusion.report == "positive" and not effusion.classifier_positive
    assert effusion.sentence == "There is a large left pleural effusion"
    assert effusion.probability == 0.01
    assert [c.finding for c in result.contradictions] == ["Pleural Effusion"]
    assert not result.consistent


def test_a_negated_finding_the_classifier_calls_positive_is_a_contradiction():
    # The demo's case from issue 15: the findings table says effusion, the report denies it.
    report = "Mild cardiomegaly. No definite pleural effusion."
    probs = probabilities(Cardiomegaly=0.9, Pleural_Effusion=1.0)
    result = check_consistency(report, positive=["Cardiomegaly", "Pleural Effusion"], probabilities=probs)
    checks = result.by_finding()
    assert checks["Pleural Effusion"].verdict is Verdict.CONTRADICTION
    assert checks["Pleural Effusion"].report == "negative"
    assert checks["Pleural Effusion"].sentence == "No definite pleural effusion"
    assert checks["Cardiomegaly"].verdict is Verdict.AGREEMENT
    assert checks["Cardiomegaly"].sentence == "Mild cardiomegaly"


def test_a_positive_finding_the_report_never_mentions_is_an_omission():
    report = "The lungs are clear. No pleural effusion or pneumothorax."
    result = check_consistency(report, positive=["Cardiomegaly"], probabilities=probabilities(Cardiomegaly=0.8))
    cardiomegaly = result.by_finding()["Cardiomegaly"]
    assert cardiomegaly.verdict is Verdict.OMISSION
    assert cardiomegaly.report == "not mentioned" and cardiomegaly.sentence is None
    assert [c.finding for c in result.omissions] == ["Cardiomegaly"]


def test_a_negated_finding_the_classifier_calls_negative_agrees():
    result = check_consistency("No pneumothorax.", positive=[], probabilities=probabilities())
    pneumothorax = result.by_finding()["Pneumothorax"]
    assert pneumothorax.verdict is Verdict.AGREEMENT and pneumothorax.sentence == "No pneumothorax"
    assert result.consistent


def test_a_hedged_mention_neither_omits_nor_contradicts():
    report = "Possible small right pleural effusion."
    assert check_consistency(report, ["Pleural Effusion"]).by_finding()["Pleural Effusion"].verdict is Verdict.AGREEMENT
    assert check_consistency(report, []).by_finding()["Pleural Effusion"].verdict is Verdict.AGREEMENT


def test_a_stated_finding_between_the_thresholds_is_not_flagged():
    report = "Left basilar atelectasis."
    unsure = check_consistency(report, positive=[], probabilities=probabilities(Atelectasis=0.35))
    assert unsure.by_finding()["Atelectasis"].verdict is Verdict.AGREEMENT
    strict = check_consistency(
        report, positive=[], probabilities=probabilities(Atelectasis=0.35), config=ConsistencyConfig(0.4)
    )
    assert strict.by_finding()["Atelectasis"].verdict is Verdict.CONTRADICTION


def test_without_probabilities_every_finding_not_positive_counts_as_absent():
    result = check_consistency("Right lower lobe consolidation.", positive=["Edema"])
    checks = result.by_finding()
    assert checks["Consolidation"].verdict is Verdict.CONTRADICTION and checks["Consolidation"].probability is None
    assert checks["Edema"].verdict is Verdict.OMISSION


def test_findings_without_a_classifier_output_are_not_checked():
    probs = probabilities(Fracture=math.nan)
    result = check_consistency("Acute rib fracture on the left.", positive=[], probabilities=probs)
    assert "Fracture" not in result.by_finding()
    assert check_consistency("Acute rib fracture.", positive=[], probabilities={}).checks == ()


def test_no_finding_is_left_to_the_other_observations():
    result = check_consistency("No acute cardiopulmonary process.", ["No Finding"], probabilities(No_Finding=0.9))
    assert "No Finding" not in result.by_finding()
    assert len(result.checks) == len(CHEXPERT_LABELS) - 1 and result.consistent


def test_the_result_is_json_with_counts():
    report = "There is a large left pleural effusion. No pneumothorax."
    data = check_consistency(report, ["Cardiomegaly"], probabilities(Cardiomegaly=0.7)).to_dict()
    data = json.loads(json.dumps(data, allow_nan=False))
    assert data["consistent"] is False
    assert data["counts"] == {"agreement": 11, "contradiction": 1, "omission": 1}
    by_finding = {c["finding"]: c for c in data["checks"]}
    assert by_finding["Pleural Effusion"]["verdict"] == "contradiction"
    assert by_finding["Cardiomegaly"] == {
        "finding": "Cardiomegaly",
        "verdict": "omission",
        "report": "not mentioned",
        "classifier_positive": True,
        "probability": 0.7,
        "sentence": None,
    }


def test_a_negative_threshold_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="negative_threshold"):
        ConsistencyConfig(negative_threshold=1.5)

"""Report-level consistency in `radialog evaluate`: each generated report against its reference's findings."""

from __future__ import annotations

import json

import pytest

from radialog.cli import main
from radialog.labeler import RuleBasedLabeler
from radialog.metrics import EvaluationConfig, evaluate_reports

NO_EXTRAS = EvaluationConfig(meteor=False, bertscore=None)

# (reference, generated report): what each pair does to the checks.
FAITHFUL = (
    "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "The heart is enlarged. There is a small left pleural effusion. There is no pneumothorax.",
)
DENIES_THE_EFFUSION = (  # contradiction: the reference's effusion is denied
    "Small right pleural effusion. The heart size is normal.",
    "The heart size is normal. No pleural effusion or pneumothorax.",
)
INVENTS_A_PNEUMOTHORAX = (  # contradiction: a finding the reference does not have
    "The lungs are clear. No pleural effusion or pneumothorax.",
    "Small right apical pneumothorax. No pleural effusion.",
)
LEAVES_OUT_THE_HEART = (  # omission: the reference's cardiomegaly is not mentioned
    "Mild cardiomegaly. No focal consolidation.",
    "No focal consolidation. No pleural effusion.",
)


def evaluate(pairs):
    references, predictions = zip(*pairs, strict=True)
    return evaluate_reports(list(predictions), list(references), RuleBasedLabeler(), NO_EXTRAS)


def test_faithful_reports_have_no_contradiction_or_omission():
    consistency = evaluate([FAITHFUL, FAITHFUL]).consistency
    assert consistency.with_contradiction == 0 and consistency.with_omission == 0
    assert consistency.mean_agreements == 13  # every observation but No Finding is checked and agrees


@pytest.mark.parametrize("pair", [DENIES_THE_EFFUSION, INVENTS_A_PNEUMOTHORAX], ids=["denied", "invented"])
def test_a_contradicting_report_counts_once_among_the_reports(pair):
    consistency = evaluate([FAITHFUL, pair]).consistency
    assert consistency.with_contradiction == pytest.approx(0.5) and consistency.with_omission == 0
    assert consistency.mean_agreements == pytest.approx((13 + 12) / 2)


def test_an_omitted_finding_is_an_omission_not_a_contradiction():
    consistency = evaluate([LEAVES_OUT_THE_HEART, FAITHFUL, FAITHFUL, FAITHFUL]).consistency
    assert consistency.with_omission == pytest.approx(0.25) and consistency.with_contradiction == 0


def test_evaluate_writes_and_prints_the_consistency(tmp_path, capsys):
    pairs = [FAITHFUL, DENIES_THE_EFFUSION, LEAVES_OUT_THE_HEART, INVENTS_A_PNEUMOTHORAX]
    records = [{"id": i, "reference": ref, "prediction": pred} for i, (ref, pred) in enumerate(pairs)]
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in records))
    out_dir = tmp_path / "eval"
    assert main(["evaluate", str(predictions), "--output-dir", str(out_dir), "--no-meteor", "--no-bertscore"]) == 0
    consistency = json.loads((out_dir / "metrics.json").read_text())["consistency"]
    assert consistency == {
        "with_contradiction": 0.5,
        "with_omission": 0.25,
        "mean_agreements": (13 + 12 + 12 + 12) / 4,
        "findings_from": "reference labels",
    }
    out = capsys.readouterr().out
    assert "Consistency with the findings of the reference labels" in out
    assert "reports with a contradiction" in out and "0.5000" in out

"""Metrics: CE precision/recall/F1 under both uncertain policies, pycocoevalcap NLG scores, BERTScore."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from sklearn.metrics import f1_score

from radialog.labeler import blank_labels
from radialog.labels import CHEXPERT_5_LABELS, CHEXPERT_LABELS
from radialog.metrics import BertScoreConfig, bert_score, clinical_efficacy, nlg_metrics, tokenize
from radialog.metrics.nlg import meteor_scorer

REPORTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Moderate cardiomegaly. Small bilateral pleural effusions with bibasilar atelectasis.",
    "Right lower lobe consolidation, concerning for pneumonia. No pneumothorax.",
    "Mild pulmonary edema. The heart is enlarged. Right internal jugular catheter tip in the SVC.",
    "Left apical pneumothorax. Healed left rib fractures. No pleural effusion.",
    "Stable cardiomediastinal silhouette. Calcified granuloma in the right upper lobe.",
    "No acute cardiopulmonary process. Heart size is within normal limits.",
    "Patchy opacity in the left base may represent atelectasis. 1.5 cm nodule in the right upper lobe.",
]


def labels(**values) -> dict:
    return blank_labels() | values


def test_ce_counts_by_hand():
    # Cardiomegaly: TP, FN, FP → P = R = F1 = 1/2. Effusion: one TP. Edema: uncertain on the reference side.
    predicted = [labels(Cardiomegaly=1, Edema=1), labels(**{"Pleural Effusion": 1}), labels(Cardiomegaly=1)]
    reference = [labels(Cardiomegaly=1, Edema=-1), labels(Cardiomegaly=1, **{"Pleural Effusion": 1}), labels()]
    radialog = clinical_efficacy(predicted, reference, policy="radialog")
    card = radialog.per_label["Cardiomegaly"]
    assert (card.precision, card.recall, card.f1, card.support, card.predicted) == (0.5, 0.5, 0.5, 2, 2)
    assert radialog.per_label["Pleural Effusion"].f1 == 1.0
    # radialog: the uncertain reference edema counts as absent, so the predicted one is a false positive.
    assert radialog.per_label["Edema"].precision == 0.0 and radialog.per_label["Edema"].support == 0
    # rrg: uncertain counts as present, so it is a true positive.
    assert clinical_efficacy(predicted, reference, policy="rrg").per_label["Edema"].f1 == 1.0
    # Micro pools the counts over all 14 labels: TP 2 (cardiomegaly, effusion), FP 2 (cardiomegaly, edema), FN 1.
    assert radialog.micro_14.precision == pytest.approx(2 / 4) and radialog.micro_14.recall == pytest.approx(2 / 3)
    # Macro over 14: labels nobody has score 0 (sklearn's and RaDialog's convention) unless asked otherwise.
    assert radialog.macro_14.f1 == pytest.approx((0.5 + 1.0) / 14)
    assert clinical_efficacy(predicted, reference, zero_division=1.0).macro_14.f1 == pytest.approx(
        (0.5 + 1.0 + 11) / 14
    )


def test_ce_matches_radialogs_formula_on_random_labels():
    rng = random.Random(0)
    values = (1, 0, -1, None)

    def random_report():
        return {name: rng.choice(values) for name in CHEXPERT_LABELS}

    predicted = [random_report() for _ in range(200)]
    reference = [random_report() for _ in range(200)]

    def as_radialog_did(rows):  # test.py: NaN → 0, then -1 → 0, columns in RaDialog's order
        array = np.array([[np.nan if r[n] is None else r[n] for n in CHEXPERT_LABELS] for r in rows], dtype=float)
        array = np.nan_to_num(array, nan=0)
        array[array == -1] = 0
        return array

    expected = f1_score(as_radialog_did(reference), as_radialog_did(predicted), average="macro")
    ce = clinical_efficacy(predicted, reference, policy="radialog")
    assert ce.macro_14.f1 == pytest.approx(expected)
    five = [CHEXPERT_LABELS.index(n) for n in CHEXPERT_5_LABELS]
    expected_5 = f1_score(as_radialog_did(reference)[:, five], as_radialog_did(predicted)[:, five], average="micro")
    assert ce.micro_5.f1 == pytest.approx(expected_5)
    assert ce.macro_5.f1 == pytest.approx(np.mean([ce.per_label[n].f1 for n in CHEXPERT_5_LABELS]))


def test_ce_rejects_bad_arguments():
    with pytest.raises(ValueError, match="uncertain policy"):
        clinical_efficacy([labels()], [labels()], policy="optimistic")
    with pytest.raises(ValueError, match="1 predicted label sets but 2"):
        clinical_efficacy([labels()], [labels(), labels()])


def test_tokenize_is_nltk_style_and_lowercased():
    assert tokenize("FINDINGS: Heart size is normal. A 2.5 cm nodule, left base.") == (
        "findings : heart size is normal . a 2.5 cm nodule , left base ."
    )
    assert tokenize("<s>No XXXX effusion.</s>\nDon't  worry") == "no xxxx effusion . do n't worry"


@pytest.fixture(scope="module")
def shuffled() -> list[str]:
    references = REPORTS[:]
    random.Random(1).shuffle(references)
    assert all(a != b for a, b in zip(references, REPORTS, strict=True))
    return references


@pytest.fixture(scope="module")
def identical_scores() -> dict[str, float]:
    return nlg_metrics(REPORTS, REPORTS)


def test_nlg_perfect_on_identical_reports(identical_scores):
    for name in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L"):
        assert identical_scores[name] == pytest.approx(1.0, abs=1e-6), name
    assert identical_scores["CIDEr"] == pytest.approx(10.0)  # CIDEr-D is scaled by 10


def test_nlg_equals_pycocoevalcap_on_the_same_tokenised_inputs(identical_scores, shuffled):
    ours = nlg_metrics(REPORTS, shuffled)
    gts = {i: [tokenize(r)] for i, r in enumerate(shuffled)}
    res = {i: [tokenize(p)] for i, p in enumerate(REPORTS)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [ours[f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=0)
    assert ours["METEOR"] == pytest.approx(meteor_scorer().compute_score(gts, res)[0], abs=0)
    assert ours["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=0)
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=0)
    for name, value in ours.items():
        assert value < identical_scores[name] / 2, name


def test_bleu_1_by_hand():
    # Candidate "no pleural effusion ." vs reference "no effusion ." : 3 of 4 unigrams match, candidate
    # longer than the reference so no brevity penalty → BLEU-1 = 3/4.
    scores = nlg_metrics(["No pleural effusion."], ["No effusion."], meteor=False)
    assert scores["BLEU-1"] == pytest.approx(0.75, abs=1e-6)
    assert "METEOR" not in scores


def test_empty_prediction_scores_zero_instead_of_crashing():
    scores = nlg_metrics(["", "No pleural effusion."], ["Small left effusion.", "No pleural effusion."], meteor=False)
    assert 0 < scores["ROUGE-L"] < 0.6


def test_bertscore_with_the_installed_minilm():
    config = BertScoreConfig()
    same = bert_score(REPORTS[:3], REPORTS[:3], config)
    assert same["f1"] == pytest.approx(1.0, abs=1e-4)
    assert same["num_layers"] == 6 and same["model"].endswith("model")
    different = bert_score(REPORTS[:3], REPORTS[3:6], config)
    assert 0 < different["f1"] < same["f1"] - 0.05

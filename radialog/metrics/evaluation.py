"""Scoring generated reports against references: CE, NLG overlap, BERTScore and consistency in one call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from radialog.consistency import check_consistency
from radialog.labeler.base import POSITIVE, UNCERTAIN, Labels, ReportLabeler
from radialog.labels import CHEXPERT_LABELS
from radialog.metrics.bertscore import BertScoreConfig, bert_score
from radialog.metrics.clinical import ClinicalEfficacy, clinical_efficacy
from radialog.metrics.nlg import nlg_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationConfig:
    uncertain_policy: str = "radialog"  # see clinical.UNCERTAIN_POLICIES
    zero_division: float = 0.0  # score of a label with nothing to count (sklearn's default: 0)
    meteor: bool = True  # needs Java
    bertscore: BertScoreConfig | None = field(default_factory=BertScoreConfig)  # None: skip BERTScore


@dataclass(frozen=True)
class ReportConsistency:
    """Report-level summary of `radialog.consistency` checks of the generated reports.

    Evaluation records carry no classifier outputs, so the findings each report is checked against are its
    reference's labels (`findings_from`).
    """

    with_contradiction: float  # share of reports with at least one contradiction
    with_omission: float  # share of reports with at least one omission
    mean_agreements: float  # agreeing observations per report, of the 13 checked (No Finding is not)
    findings_from: str = "reference labels"

    def to_dict(self) -> dict:
        return asdict(self)


# The reference's labels as the classifier's view: positive → to be stated; uncertain → between the
# consistency thresholds, flagged neither way; negative or not mentioned → clearly absent.
_REFERENCE_PROBABILITY = {POSITIVE: 1.0, UNCERTAIN: 0.5}


def report_consistency(
    predictions: Sequence[str], reference_labels: Sequence[Labels], labeler: ReportLabeler
) -> ReportConsistency:
    """Check each prediction against its reference's findings: contradictions, omissions, agreements."""
    results = []
    for prediction, labels in zip(predictions, reference_labels, strict=True):
        positive = [name for name, value in labels.items() if value == POSITIVE]
        probabilities = {name: _REFERENCE_PROBABILITY.get(value, 0.0) for name, value in labels.items()}
        results.append(check_consistency(prediction, positive, probabilities, labeler=labeler))
    n = max(len(results), 1)
    return ReportConsistency(
        with_contradiction=sum(bool(r.contradictions) for r in results) / n,
        with_omission=sum(bool(r.omissions) for r in results) / n,
        mean_agreements=sum(len(r.checks) - len(r.contradictions) - len(r.omissions) for r in results) / n,
    )


@dataclass(frozen=True)
class Evaluation:
    n_reports: int
    labeler: str
    clinical: ClinicalEfficacy
    nlg: dict[str, float]
    bertscore: dict | None
    consistency: ReportConsistency
    predicted_labels: list[Labels]
    reference_labels: list[Labels]

    def to_dict(self) -> dict:
        """What metrics.json holds (the per-report labels are written separately)."""
        return {
            "n_reports": self.n_reports,
            "labeler": self.labeler,
            "clinical_efficacy": self.clinical.to_dict(),
            "nlg": self.nlg,
            "bertscore": self.bertscore,
            "consistency": self.consistency.to_dict(),
        }


def evaluate_reports(
    predictions: Sequence[str],
    references: Sequence[str],
    labeler: ReportLabeler,
    config: EvaluationConfig | None = None,
    progress: bool = False,
) -> Evaluation:
    """Label both sides with `labeler`, then compute every metric. Lists are paired by position."""
    config = config or EvaluationConfig()
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    predicted_labels = labeler.label(predictions, progress=progress)
    reference_labels = labeler.label(references, progress=progress)
    clinical = clinical_efficacy(predicted_labels, reference_labels, config.uncertain_policy, config.zero_division)
    unscored = [name for name, s in clinical.per_label.items() if s.support == 0 and s.predicted == 0]
    if unscored:
        logger.warning(
            "no report has %s on either side: their F1 counts as %g in the macro averages",
            ", ".join(unscored),
            config.zero_division,
        )
    nlg = nlg_metrics(predictions, references, meteor=config.meteor)
    bertscore = bert_score(predictions, references, config.bertscore) if config.bertscore is not None else None
    consistency = report_consistency(predictions, reference_labels, labeler)
    return Evaluation(
        len(predictions), labeler.name, clinical, nlg, bertscore, consistency, predicted_labels, reference_labels
    )


def format_table(evaluation: Evaluation) -> str:
    """A plain-text summary for the terminal."""
    ce = evaluation.clinical
    lines = [
        f"{evaluation.n_reports} reports; CheXpert labels by '{evaluation.labeler}', uncertain policy '{ce.policy}'",
        "",
        f"{'Clinical efficacy':<28}{'precision':>10}{'recall':>10}{'F1':>10}",
    ]
    for name, scores in (
        ("macro, 14 labels", ce.macro_14),
        ("micro, 14 labels", ce.micro_14),
        ("macro, 5 labels", ce.macro_5),
        ("micro, 5 labels", ce.micro_5),
    ):
        lines.append(f"  {name:<26}{scores.precision:>10.4f}{scores.recall:>10.4f}{scores.f1:>10.4f}")
    lines += ["", f"{'Per label':<28}{'precision':>10}{'recall':>10}{'F1':>10}{'ref +':>8}{'pred +':>8}"]
    for name in CHEXPERT_LABELS:
        s = ce.per_label[name]
        lines.append(f"  {name:<26}{s.precision:>10.4f}{s.recall:>10.4f}{s.f1:>10.4f}{s.support:>8d}{s.predicted:>8d}")
    lines += ["", "NLG"]
    lines += [f"  {name:<26}{value:>10.4f}" for name, value in evaluation.nlg.items()]
    if evaluation.bertscore is not None:
        b = evaluation.bertscore
        lines += [
            "",
            f"BERTScore ({'/'.join(Path(b['model']).parts[-2:])}, layer {b['num_layers']})",
            f"  {'precision / recall / F1':<26}{b['precision']:>10.4f}{b['recall']:>10.4f}{b['f1']:>10.4f}",
        ]
    c = evaluation.consistency
    lines += [
        "",
        f"Consistency with the findings of the {c.findings_from}",
        f"  {'reports with a contradiction':<34}{c.with_contradiction:>10.4f}",
        f"  {'reports with an omission':<34}{c.with_omission:>10.4f}",
        f"  {'agreements per report (of 13)':<34}{c.mean_agreements:>10.2f}",
    ]
    return "\n".join(lines)


def plot_per_label_f1(evaluation: Evaluation, path: str | Path) -> Path:
    """Horizontal bars of each label's F1, with the 14-label macro F1 as a line; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    ce = evaluation.clinical
    names = list(CHEXPERT_LABELS)
    f1 = [ce.per_label[name].f1 for name in names]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ax.barh(names[::-1], f1[::-1], color="#4c72b0")
    ax.axvline(ce.macro_14.f1, color="#c44e52", linestyle="--", label=f"macro F1 {ce.macro_14.f1:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title(
        f"CE F1 per label ({evaluation.labeler} labels, '{ce.policy}' policy, {evaluation.n_reports} reports)",
        fontsize=10,
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

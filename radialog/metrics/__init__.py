"""Report-generation metrics: clinical efficacy (CheXpert labels), NLG overlap (pycocoevalcap), BERTScore.

How each is computed, and which conventions published numbers use: docs/evaluation.md.
"""

from radialog.metrics.bertscore import BertScoreConfig, bert_score
from radialog.metrics.clinical import UNCERTAIN_POLICIES, ClinicalEfficacy, binarize, clinical_efficacy
from radialog.metrics.evaluation import Evaluation, EvaluationConfig, evaluate_reports, format_table, plot_per_label_f1
from radialog.metrics.nlg import NLG_METRICS, nlg_metrics, tokenize

__all__ = [
    "NLG_METRICS",
    "UNCERTAIN_POLICIES",
    "BertScoreConfig",
    "ClinicalEfficacy",
    "Evaluation",
    "EvaluationConfig",
    "bert_score",
    "binarize",
    "clinical_efficacy",
    "evaluate_reports",
    "format_table",
    "nlg_metrics",
    "plot_per_label_f1",
    "tokenize",
]

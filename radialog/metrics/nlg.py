"""NLG overlap metrics by the standard pycocoevalcap implementations: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

Texts are tokenised as RaDialog's evaluation did (`' '.join(word_tokenize(text)).lower()`), but
with nltk's Punkt sentence splitter *untrained* instead of the downloaded English model, so no
nltk data is needed: the Treebank word tokenizer is the same; sentence ends differ only after
abbreviations ("e.g.", "dr.") that the trained model knows. Each report is one "image" with one
reference; BLEU is corpus-level (pycocoevalcap's "closest" reference length), METEOR is the
METEOR 1.5 jar's corpus score, ROUGE-L (β = 1.2) and CIDEr-D are means over reports.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from radialog.errors import InputError, RaDialogError

logger = logging.getLogger(__name__)

NLG_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
# Stands in for an empty prediction: ROUGE-L divides by the candidate length and METEOR needs a
# word. It matches nothing, so an empty report scores (close to) zero, as it should.
EMPTY_PREDICTION = "<empty>"


@functools.cache
def _tokenizers():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def tokenize(text: str) -> str:
    """Lowercased, space-joined nltk-style tokens; drops the `<s>`/`</s>` markers RaDialog's code removed."""
    text = " ".join(text.replace("<s>", " ").replace("</s>", " ").split())
    sentences, words = _tokenizers()
    return " ".join(token for sentence in sentences.tokenize(text) for token in words.tokenize(sentence)).lower()


def _inputs(predictions: Sequence[str], references: Sequence[str]) -> tuple[dict, dict]:
    """pycocoevalcap's dicts: report index → [tokenised text]."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise InputError("no reports to score")
    gts, res = {}, {}
    n_empty = 0
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        gts[i] = [tokenize(reference)]
        if not gts[i][0]:
            raise InputError(f"reference {i + 1} is empty: NLG metrics need a reference text")
        res[i] = [tokenize(prediction) or EMPTY_PREDICTION]
        n_empty += res[i][0] == EMPTY_PREDICTION
    if n_empty:
        logger.warning("%d of %d predictions are empty; they score as %r", n_empty, len(predictions), EMPTY_PREDICTION)
    return gts, res


@functools.cache
def meteor_scorer():
    """pycocoevalcap's METEOR wrapper around `java -jar meteor-1.5.jar`, started once per process:
    loading its paraphrase table takes seconds, scoring then takes milliseconds."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        return Meteor()
    except FileNotFoundError as err:
        raise RaDialogError("METEOR needs a Java runtime ('java' is not on PATH); install one or skip METEOR") from err


def nlg_metrics(predictions: Sequence[str], references: Sequence[str], meteor: bool = True) -> dict[str, float]:
    """Corpus scores, keyed by NLG_METRICS names (METEOR left out when `meteor` is False)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _inputs(predictions, references)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n}": float(value) for n, value in enumerate(bleu, start=1)}
    if meteor:
        scores["METEOR"] = float(meteor_scorer().compute_score(gts, res)[0])
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores

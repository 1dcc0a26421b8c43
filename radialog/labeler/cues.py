"""Negation and uncertainty cues, before and after a mention, within its sentence.

The CheXpert labeler finds these on a dependency parse (NegBio patterns); we approximate them with
phrases and a reach in words, which is fast and needs no parser. Priorities follow CheXpert's
order of rules: "cannot be excluded" / "no new" (uncertain, checked before negation) beat negation,
which beats uncertainty. Each cue counts only within its reach and within the clause: clause
breaks ("but", "however", "there is", ...) end its scope.

Patterns are matched at word boundaries; within a list, earlier patterns win at the same position
(so "no new" is read before "no", "cannot be excluded" before "not").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Cue(IntEnum):
    """What a cue says about a mention; higher values win when several apply."""

    PSEUDO = 0  # looks like a negation, is not: "no change in the effusion" → still positive
    OR = 1  # "atelectasis or pneumonia": uncertain unless negated
    UNCERTAIN = 2
    NEGATION = 3
    UNCERTAIN_FIRST = 4  # CheXpert's pre-negation uncertainty: "cannot exclude", "no new"


class Qualifier(IntEnum):
    """The state of an anatomy mention ("heart size is normal / stable / enlarged")."""

    NORMAL = 0
    STABLE = 1  # CheXpert reads a stable silhouette as uncertain: it may be stably enlarged
    ABNORMAL = 2


@dataclass(frozen=True)
class Phrase:
    pattern: str
    kind: Cue | Qualifier
    reach: int  # most words allowed between the cue and the mention


_UNC_FIRST = Cue.UNCERTAIN_FIRST
_NEG = Cue.NEGATION
_UNC = Cue.UNCERTAIN
_EXCLUDE = r"(?:exclude[ds]?|rule[ds]? out)"
_ADVERB = r"(?:entirely |completely |totally |definitely |fully )?"
_CHANGE = r"(?:change|increase|decrease|improvement|worsening|progression)s?"
_A_LITTLE = r"(?:slightly|partially|partly|somewhat|mildly)"
_BY_A_LITTLE = rf"(?:{_A_LITTLE}|by|\d[\d.]*)"

BEFORE: tuple[Phrase, ...] = (
    Phrase(r"(?:cannot|can ?not|can't|could not|unable to|difficult to) (?:be )?" + _ADVERB + _EXCLUDE, _UNC_FIRST, 8),
    Phrase(r"no (?:definite |significant |obvious |convincing )?new", _UNC_FIRST, 8),
    Phrase(r"no (?:significant |definite |substantial |appreciable |overall )?(?:interval )?" + _CHANGE, Cue.PSEUDO, 8),
    Phrase(r"not only", Cue.PSEUDO, 8),
    Phrase(r"no (?:[\w-]+ ){0,3}?(?:to suggest|to explain|to indicate|suggestive of|suggesting)", _NEG, 12),
    Phrase(
        r"(?:no|without|negative for|free of) (?:[\w-]+ ){0,3}?"
        r"(?:evidence|signs?|findings?|features?|suggestion|indication) (?:of|for)",
        _NEG,
        12,
    ),
    Phrase(r"no longer", _NEG, 6),
    Phrase(r"no", _NEG, 12),
    Phrase(r"not", _NEG, 4),
    Phrase(r"without|free of|clear of|negative for|absen(?:ce|t) of", _NEG, 12),
    # A clipped "clear of" ("lungs are clear airspace disease"): right before the mention, after a verb
    # ("clear hyperexpanded lungs" says nothing against the hyperexpansion).
    Phrase(
        r"clear(?:(?<=is clear)|(?<=are clear)|(?<=and clear)|(?<=remain clear))"
        r"(?: (?:focal|acute|confluent|definite))?(?: air[- ]?space)?",
        _NEG,
        0,
    ),
    Phrase(r"nor", _NEG, 6),
    Phrase(r"neither", _NEG, 8),
    Phrase(r"(?:interval )?(?:resolution|clearing|removal|disappearance|withdrawal) of", _NEG, 8),
    Phrase(r"resolved|cleared|removed", _NEG, 4),
    Phrase(_EXCLUDE, _NEG, 8),
    Phrase(r"history of", _NEG, 6),
    Phrase(
        r"possibl[ey]|probabl[ey]|presum(?:ed|ably|ptive)|questionabl[ey]|question(?:ed)? of|suspect(?:ed)?"
        r"|suspicio(?:us|n)(?: (?:for|of))?|concern(?:ing|s)? (?:for|of)|worrisome(?: for)?|may|might|could"
        r"|suggest(?:s|ed|ing|ive of|ion of)?|equivocal|indeterminate|uncertain|borderline|less likely"
        r"|differential (?:diagnosis )?(?:includes?|considerations?)"
        r"|(?:clinical(?:ly)? )?correlat\w*(?: clinically)? for",
        _UNC,
        8,
    ),
    Phrase(r"or|versus|vs\.?", Cue.OR, 3),
)

AFTER: tuple[Phrase, ...] = (
    Phrase(
        r"(?:(?:is|are|was|were|be|been) )?(?:not|cannot|can ?not|could not) (?:be )?"
        + _ADVERB
        + r"(?:excluded|ruled out)",
        _UNC_FIRST,
        8,
    ),
    Phrase(
        r"(?:(?:has|have|is|are) )?not (?:significantly |substantially |markedly )?"
        r"(?:changed|increased|decreased|improved|worsened)",
        Cue.PSEUDO,
        4,
    ),
    Phrase(r"not (?:well |clearly |definitely |optimally )(?:seen|visualized|evaluated|assessed)", _UNC, 6),
    Phrase(r"(?:poorly|incompletely|suboptimally) (?:seen|visualized|evaluated|assessed)", _UNC, 6),
    Phrase(r"(?:is |are )?(?:difficult|hard) to (?:assess|evaluate|exclude)", _UNC, 6),
    Phrase(
        r"(?:may|might|could|can) (?:also |still )?(?:be )?"
        r"(?:present|seen|noted|developing|superimposed|underlying|contributing|obscured)",
        _UNC,
        6,
    ),
    Phrase(r"possible|questionable|suspected|questioned|equivocal|less likely", _UNC, 6),
    # A device pulled back a little is still in place: "tube has been withdrawn 2 cm".
    Phrase(rf"{_A_LITTLE} withdrawn|withdrawn {_BY_A_LITTLE}", Cue.PSEUDO, 4),
    Phrase(r"no longer", _NEG, 6),
    Phrase(r"not", _NEG, 3),
    Phrase(
        r"(?:(?:has|have) )?(?:since )?(?:resolved|cleared|been removed|been withdrawn(?! "
        + _BY_A_LITTLE
        + r"))|removed|withdrawn|absent|gone",
        _NEG,
        6,
    ),
    Phrase(r"(?:is|are) negative|(?:excluded|ruled out)", _NEG, 4),
    Phrase(r"or|versus|vs\.?", Cue.OR, 2),
)

_ENLARGED = r"enlarg\w*|large|larger|widen\w*|wider|wide|prominen\w*|increas\w*|big|bigger|globular"
_STABLE = r"(?:grossly |essentially |overall )?(?:stable|unchanged|similar)"

QUALIFIERS_BEFORE: tuple[Phrase, ...] = (
    Phrase(r"no (?:significant |interval |appreciable )*change (?:in|of)", Qualifier.STABLE, 4),
    Phrase(_STABLE, Qualifier.STABLE, 4),
    Phrase(r"(?:upper|top|high)[- ]normal|normal(?:ly)?(?:[- ]sized?)?|unremarkable", Qualifier.NORMAL, 4),
    Phrase(_ENLARGED, Qualifier.ABNORMAL, 4),
)

QUALIFIERS_AFTER: tuple[Phrase, ...] = (
    Phrase(_STABLE, Qualifier.STABLE, 8),
    Phrase(
        r"not (?:significantly |substantially |markedly )?changed|no (?:significant |interval )*change",
        Qualifier.STABLE,
        8,
    ),
    Phrase(r"not (?:significantly |substantially )?(?:enlarged|widened|prominent)", Qualifier.NORMAL, 8),
    Phrase(
        r"(?:at |within )?(?:the )?upper limits? of normal|(?:with)?in (?:the )?normal (?:limits|range)"
        r"|(?:upper|top|high)[- ]normal|normal\w*|unremarkable|negative",
        Qualifier.NORMAL,
        8,
    ),
    Phrase(_ENLARGED, Qualifier.ABNORMAL, 8),
)

# Clause breaks: a cue's scope does not cross them. After a mention a comma also ends the clause
# ("mild cardiomegaly, no effusion"); before it, it does not ("no effusion, pneumothorax or ...").
BREAKS_BEFORE = (
    r"but|however|although|though|except|aside from|apart from|other than|which|whereas|while|yet"
    r"|there (?:is|are|has|have|was|were)|and (?:the|there)|with the exception of"
)
BREAKS_AFTER = (
    r"but|however|although|though|except|which|whereas|while|yet|there (?:is|are|has|have|was|were)|and there"
)

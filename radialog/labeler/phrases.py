"""Mention phrases per observation (regular expressions over lowercased, normalised sentences).

Following the CheXpert labeler's approach, each observation has phrases that mention it and
phrases that look like a mention but are not ("pericardial effusion" is not a pleural effusion,
"calcified granuloma overlying the heart" says nothing about the heart's size). The lists are ours,
written from reading IU X-ray and MIMIC-CXR style reports.

Three kinds of mention:
- findings state the observation itself ("cardiomegaly", "pleural effusion"): positive unless a
  negation or uncertainty cue applies;
- anatomy mentions name a structure whose normal/abnormal state is the observation ("heart size",
  "cardiomediastinal silhouette"): they count only with a qualifier ("normal", "enlarged", "stable");
- hedged mentions are uncertain by nature (CheXpert: "vascular congestion" → uncertain edema).
Every pattern is matched at word starts (a leading \\b is added). Some phrases are plain-language
("fluid around the left lung"): reports rewritten for patients are labelled with the same rules.
"""

from __future__ import annotations

_LUNGS = r"(?:the |both |each )?(?:left |right )?lungs?\b"  # plain-language "around the right lung"
_AIR_LEAK = r"air (?:has )?leak(?:ed|ing|s)?"

FINDINGS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"mediastinal (?:widening|enlargement|prominence)",
        r"widened (?:superior )?mediastinum",
    ),
    "Cardiomegaly": (r"cardiomegaly", r"cardiac enlargement"),
    "Lung Opacity": (
        r"opaci\w*",
        r"air[- ]?space (?:disease|process|filling)",
        r"infiltrat\w*",
        r"interstitial (?:markings?|pattern|prominence|thickening|lung disease|disease|changes?)",
        r"increased (?:[a-z]+ )?(?:markings|density|densities)",
        r"reticul\w*",
        r"(?:parenchymal |pulmonary |lung |apical )?scar(?:s|ring|red)?\b",
        r"peribronchial (?:thickening|cuffing)",
        r"bronchial wall thickening",
        r"decreased translucency",
        r"ground[- ]glass",
        r"haz(?:y|iness)",
    ),
    "Lung Lesion": (
        r"mass(?:es)?\b",
        r"nodules?\b",
        r"nodular (?:densit\w*|opacit\w*|lesions?|foci|focus)",
        r"lump\b",
        r"cavitary lesions?",
        r"cavitation",
        r"carcinoma",
        r"neoplasm\w*",
        r"tumou?rs?\b",
        r"malignan\w*",
        r"(?:lung|pulmonary) lesions?",
    ),
    "Edema": (r"edema", r"(?:congestive )?heart failure", r"chf\b", r"kerley"),
    "Consolidation": (
        r"consolidat\w*",
        r"lungs? (?:is |are |looks? |appears? )?(?:partly |partially )?(?:filled in|solid)\b",
    ),
    "Pneumonia": (r"(?:broncho)?pneumoni(?:a|as|c|tis)\b", r"infect(?:ion|ions|ious)\b"),
    "Atelectasis": (r"atelecta\w*", r"collaps(?:e|ed|es)\b"),
    "Pneumothorax": (
        r"(?:hydro)?pneumothora(?:x|ces)\b",
        _AIR_LEAK + r" (?:around|outside|next to) " + _LUNGS,
    ),
    "Pleural Effusion": (
        r"effusions?\b",
        r"pleural fluid",
        r"hydrothorax",
        r"fluid (?:around|surrounding|at the (?:bottom|base)s? of) " + _LUNGS,
    ),
    "Pleural Other": (
        r"pleural (?:thickening|plaques?|calcifications?|scar\w*)",
        r"pleur(?:al[- ]|o-?)parenchymal (?:scar\w*|thickening)",
        r"fibrothorax",
        r"fibrosis",
        r"apical (?:pleural )?capping",
    ),
    "Fracture": (r"fractur\w*", r"fx\b", r"broken (?:ribs?|bones?|collarbones?)"),
    "Support Devices": (
        r"pacers?\b",
        r"pacemakers?",
        r"(?:central|venous|arterial|picc|midline|swan[- ]ganz|jugular|subclavian|femoral|ij|dialysis)"
        r" (?:venous )?lines?\b",
        r"picc\b",
        r"(?:medical )?(?:tubes?|lines?) (?:or|and) (?:tubes?|lines?)\b",  # one mention: "or" is no hedge here
        r"medical (?:devices?|lines?)",
        r"tubes?\b",
        r"tubing",
        r"catheters?",
        r"valves?\b",
        r"hardware",
        r"arthroplast\w*",
        r"prosthe\w*",
        r"stents?\b",
        r"(?:a)?icd\b",
        r"defibrillators?",
        r"devices?\b",
        r"drains?\b",
        r"plates?\b",
        r"screws?\b",
        r"cannula\w*",
        r"apparatus",
        r"coils?\b",
        r"mediport",
        r"port(?:-a-cath)?\b",
        r"wires?\b",
        r"clips?\b",
        r"(?:pacer|pacemaker|pacing|cardiac|ecg|ekg|monitor|monitoring|defibrillator|icd|transvenous) leads?\b",
        r"(?:nerve )?stimulators?",
        r"(?:pacer|pacemaker|pulse|battery) generators?",
        r"electrodes?",
        r"tracheostomy",
        r"endotracheal",
        r"(?:et|ng|og)t\b",
    ),
}

ANATOMY: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"cardio[- ]?mediastin\w*(?: (?:silhouettes?|contours?|structures?|shadows?|width|size|borders?))?",
        r"mediastinum",
        r"mediastinal (?:contours?|silhouettes?|structures|width|configuration|shadows?|borders?|outline)",
        r"pericardial silhouette",
        r"middle of the chest",
    ),
    "Cardiomegaly": (
        r"heart(?: size| shadow| silhouette| contours?)?\b",
        r"cardiac (?:and mediastinal )?(?:size|silhouettes?|shadow|contours?|diameter)",
        r"size of the heart",
        r"cardiothoracic ratio",
    ),
}

HEDGED: dict[str, tuple[str, ...]] = {
    "Edema": (
        r"(?:pulmonary )?(?:vascular|venous) congestion",
        r"pulmonary congestion",
        r"indistinct\w*",
        r"vascular prominence",
        r"prominen\w* (?:of the )?(?:pulmonary )?(?:vascula\w*|vessels)",
    ),
}

# Look like mentions, are not. A mention that overlaps one of these is ignored.
_OVER = (
    r"(?:over|overlying|overlies|overlie|projecting over|projects over|projected over"
    r"|in|within|into|behind|through|along)"
)
EXCLUSIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"mediastin\w* (?:lymph\w*|nodes?|adenopathy|mass(?:es)?|shift\w*|drains?|tubes?|clips|wires"
        r"|air|emphysema|fat|lipomatosis)",
        _OVER + r" the (?:superior |left |right |anterior |posterior |inferior )?mediastinum",
    ),
    "Cardiomegaly": (
        r"heart (?:failure|disease|valves?|borders?)",
        r"(?:heart|cardiac) borders?",
        r"cardiac (?:valves?|surgery|pacer|pacemaker|devices?|monitor\w*|leads?)",
        _OVER + r" the (?:left |right |superior |inferior |lower )?heart",
    ),
    "Lung Opacity": (r"pleural(?:[- ]parenchymal)? scar\w*", r"pleuro-?parenchymal scar\w*"),
    "Lung Lesion": (r"calcified nodul\w*", r"mass effect", r"breast mass\w*"),
    "Edema": (r"(?:soft tissue|subcutaneous|chest wall|extremity|facial) edema",),
    "Pneumonia": (r"granulomatous infection",),
    "Atelectasis": (
        # Plain language for a pneumothorax: "air has leaked around the lung, and part of it has collapsed".
        _AIR_LEAK + r" .*collaps\w*",
        r"vertebra\w* (?:body )?(?:height )?collaps\w*",
        r"collaps\w* (?:of )?(?:the )?(?:[tl]\d+|vertebra\w*)",
    ),
    "Pleural Effusion": (r"pericardial effusions?", r"(?:joint|knee|shoulder) effusions?"),
    "Support Devices": (
        r"nipple markers?",
        r"plate[- ]?like",
        r"valve calcifi\w*",
        r"calcifi\w* (?:of the )?(?:aortic |mitral )?valves?",
    ),
}

# Searches the image could not answer ("evaluation for pneumothorax is limited"): a mention inside one
# states nothing. Only "for X" searches: "evaluation of the stent is limited" still says there is a stent.
_SEARCH = r"(?:evaluation|assessment) (?:of (?:[\w-]+ ){1,5}?)?for"
_LIMITED = r"(?:somewhat |slightly |markedly |severely |very )?(?:limited|suboptimal|compromised|hampered)"
NOT_ASSESSED: tuple[str, ...] = (
    rf"{_SEARCH} (?:[\w-]+ ){{1,4}}?(?:is |are |was |were )?{_LIMITED}",  # "evaluation for X is limited"
    rf"limited {_SEARCH} (?:[\w-]+ ){{0,3}}[\w-]+",  # "limited evaluation for X"
)

# Abnormalities outside the 14 observations. They take "No Finding" away when positive or
# uncertain (CheXpert's No Finding rule), and are not reported themselves.
OTHER_FINDINGS: tuple[str, ...] = (
    r"emphysema\w*",
    r"hyperinfla\w*",
    r"hyperexpan\w*",
    r"hyperlucen\w*",
    r"copd\b",
    r"chronic obstructive",
    r"granulom\w*",
    r"calcifi\w*",
    r"(?:dextro|levo)?scolio\w*",
    r"kyph\w*",
    r"degenerat\w*",
    r"spondylo\w*",
    r"osteophyt\w*",
    r"osteopeni\w*",
    r"demineraliz\w*",
    r"hernia\w*",
    r"eventration",
    r"elevat(?:ed|ion)",
    r"blunt\w*",
    r"tortu\w*",
    r"ectasia|ectatic",
    r"atherosclero\w*",
    r"aneurysm\w*",
    r"bronchiectasis",
    r"bronchi(?:tis|olitis)",
    r"airways? disease",
    r"cephalization",
    r"thicken\w*",
    r"bullae|bullous|bulla\b|blebs?\b",
    r"cysts?\b|cystic",
    r"aspiration",
    r"contusions?",
    r"hematomas?",
    r"hemorrhage",
    r"pneumomediastinum",
    r"pneumoperitoneum",
    r"free (?:intraperitoneal |subdiaphragmatic )?air",
    r"metasta\w*",
    r"(?:lymph)?adenopathy",
    r"volume loss",
    r"deformit\w*",
    r"hypertension",
    r"pericardial effusions?",
    r"prominen\w*",
    r"fullness",
    r"lucenc\w*",
    r"lytic|sclerotic",
    r"flatten\w*",
    r"shift\b",
)

# CheXpert's exception: heart failure stated as present or possible makes cardiomegaly uncertain.
HEART_FAILURE = r"(?:congestive )?heart failure|chf\b"

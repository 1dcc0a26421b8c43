"""Question templates per instruct task, in the spirit of RaDialog's `data/instruct_prompts/*.csv`.

`<X>` is a finding, `<add>` / `<rem>` the findings a correction adds / removes. RaDialog's evaluation
prompts (radialog.prompts) are among them so the trained model knows the wording it is tested with.
"""

from __future__ import annotations

CPBQA = (
    "Is there any <X>?",
    "Is there evidence of <X> in the report?",
    "Does the report mention <X>?",
    "Does the patient have <X>?",
    "Is any <X> seen on this image?",
    "Can you see signs of <X>?",
    "Is <X> present?",
)

CPAQA = (
    "List all the findings in this report.",
    "Enumerate the findings mentioned in the report.",
    "What findings can be identified from this report?",
    "Name every finding this report describes.",
    "Which abnormalities does the report mention?",
    "Give me a list of the findings.",
)

CO_ADD = (
    "The patient also has <add>, correct the report. Don't make other changes.",
    "You forgot to mention <add>. Please update the report.",
    "I think you missed <add>, please provide a corrected report.",
    "There is <add>, which the report does not mention. Please rewrite it.",
    "Please add <add> to the report and leave the rest as it is.",
)

CO_REMOVE = (
    "The patient does not have <rem>. Update the report. Don't make other changes.",
    "There is no <rem>, please adapt the report accordingly.",
    "You mentioned <rem>, but I don't think this is the case. Correct the report.",
    "Write a corrected report that does not mention <rem>.",
    "I disagree: there is no <rem>. Please fix the report.",
)

CO_BOTH = (
    "Please adapt the report with the following corrections: Include <add> and remove <rem>. Don't make other changes.",
    "I think the patient has <add> but does not have <rem>. Please adapt the report.",
    "You forgot to mention <add>. Also, the patient does not have <rem>, please remove this.",
)

RQA = (
    "Is the patient's heart healthy?",
    "Are there any abnormalities in the lungs?",
    "Are the patient's lungs healthy?",
    "Does the patient have any abnormalities in the bones?",
    "Is there anything abnormal in the mediastinum?",
    "Does the patient have any heart-related issues?",
    "Is there any problem with the pleura?",
    "Are there any medical devices visible in the image?",
)

EL = (
    "Explain this report in very easy terms, such that a child would understand.",
    "Reformulate this report in simple and understandable language.",
    "Please rewrite this report in easy language for a patient without medical knowledge.",
    "Give me a simple version of this report that needs no expert knowledge.",
    "What does this report mean, in plain words?",
)

SU = (
    "Summarize this report with bullet points.",
    "Provide a short summary of the most important points in this report.",
    "Please summarize this report in one sentence.",
    "Write a concise summary of the major findings in this report.",
    "Summarize the report in at most two sentences.",
)

# Tasks whose answers a teacher LLM writes from the reference report (RaDialog used Vicuna-13b).
TEACHER_TASKS: dict[str, tuple[str, ...]] = {"RQA": RQA, "EL": EL, "SU": SU}

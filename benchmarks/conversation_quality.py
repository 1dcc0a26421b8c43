"""How well a checkpoint holds a conversation, task by task, on synthetic studies it never saw.

Held-out studies (data set seed 1; the demo trains on seed 0), each uploaded as a PNG the way the app
reads it; every question is asked in a wording the training never used (the `eval` wordings of
instruct_data/synthetic_tasks.py), and every answer is scored against what was drawn, read back with
the rule-based labeler:

- classifier: the predicted finding set equals the drawn one;
- report: clinical-efficacy F1 per drawn finding;
- yes/no QA (held-out wordings, and the app's finding picker, RaDialog's " Is there any X?");
- region QA: the findings of the region and their side, as the drawing has them;
- correction: the removed finding gone, the added one present, every other finding of the report kept;
- multi-turn: after the correction, a yes/no question about the corrected finding follows the new report;
- plain language: Flesch-Kincaid grade, and the report's findings all kept, none added;
- summary: bullet form, and the findings kept.

Each task after the report starts again from the report (`Session.restore_state`), except multi-turn.

    .venv/bin/python benchmarks/conversation_quality.py [--checkpoint DIR] [--studies 40] \
        [--out docs/conversation_quality.md]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import textstat
import torch
from tqdm import tqdm

from radialog.chat import Session, Task
from radialog.engines.transformers_engine import one_at_a_time
from radialog.instruct_data.plain_language import sentence_side
from radialog.instruct_data.synthetic_tasks import (
    EXPLAIN_REQUESTS,
    REGIONS,
    SUMMARY_REQUESTS,
    SyntheticStudy,
    SyntheticTaskWriter,
    yes_no_answer,
    yes_no_question,
)
from radialog.labeler import RuleBasedLabeler
from radialog.model import RaDialogModel
from radialog.model.loading import EMBEDDED_CHECKPOINT
from radialog.synthetic import DRAWN_LABELS, SyntheticConfig, iter_samples, sentence_bank

HELD_OUT_SEED = 1
CONFIG = SyntheticConfig(image_size=256, sentences_per_finding=5)
TARGETS = {
    "yes/no QA accuracy (held-out wordings)": 0.95,
    "region QA accuracy": 0.90,
    "correction success": 0.90,
    "plain language: finding preservation": 0.95,
    "summary: finding preservation": 0.95,
}
MAX_GRADE = 8.0
MIN_REPORT_F1 = 0.90


class Scorer:
    def __init__(self) -> None:
        self.labeler = RuleBasedLabeler()
        self.hits: dict[str, list[bool]] = defaultdict(list)
        self.grades: list[float] = []
        self.report_counts = {name: [0, 0, 0] for name in DRAWN_LABELS}  # tp, fp, fn
        self.examples: dict[str, list[dict]] = defaultdict(list)

    def read(self, text: str) -> set[str]:
        labels = self.labeler.label_report(text)
        return {name for name in DRAWN_LABELS if labels[name] == 1}

    def add(self, metric: str, ok: bool, **example: str) -> None:
        self.hits[metric].append(bool(ok))
        if not ok and len(self.examples[metric]) < 3:
            self.examples[metric].append(example)

    def report(self, truth: set[str], report: str) -> set[str]:
        read = self.read(report)
        for name in DRAWN_LABELS:
            counts = self.report_counts[name]
            counts[0] += name in truth and name in read
            counts[1] += name not in truth and name in read
            counts[2] += name in truth and name not in read
        return read

    def report_f1(self) -> dict[str, float]:
        return {
            n: 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0 for n, (tp, fp, fn) in self.report_counts.items()
        }


def yes_no(answer: str) -> bool | None:
    first = answer.strip().lower().split(maxsplit=1)
    word = first[0].strip(".,!") if first else ""
    return {"yes": True, "no": False}.get(word)


def region_correct(scorer: Scorer, expected: str, answer: str, region_findings: set[str]) -> bool:
    """The same findings of the region, and the same side named, as the drawing's answer."""
    same = scorer.read(expected) & region_findings == scorer.read(answer) & region_findings
    return same and sentence_side(expected) == sentence_side(answer)


def run_study(
    session: Session, study: SyntheticStudy, writer: SyntheticTaskWriter, scorer: Scorer, rng: random.Random
) -> None:
    truth = set(study.present)
    scorer.add("classifier: finding set exact", set(session.positive) & set(DRAWN_LABELS) == truth)
    report = session.ask(Task.REPORT)
    read = scorer.report(truth, report)
    after_report = session.state()

    def fresh() -> None:
        session.restore_state(after_report)

    for _ in range(3):
        fresh()
        question, expected = writer.yes_no(study, rng)
        answer = session.ask(Task.CHAT, question)
        scorer.add(
            "yes/no QA accuracy (held-out wordings)",
            yes_no(answer) == yes_no(expected),
            q=question,
            a=answer,
            report=report,
        )
    for _ in range(2):
        fresh()
        name = rng.choice([*sorted(truth), *DRAWN_LABELS])
        answer = session.ask(Task.QUESTION, add=[name])
        scorer.add("yes/no QA accuracy (finding picker)", yes_no(answer) == (name in truth), q=name, a=answer)
    for _ in range(2):
        fresh()
        question, expected = writer.region(study, rng)
        answer = session.ask(Task.CHAT, question)
        region = next((names for key, (names, _) in REGIONS.items() if key in question.lower()), set(DRAWN_LABELS))
        scorer.add(
            "region QA accuracy",
            region_correct(scorer, expected, answer, set(region)),
            q=question,
            a=answer,
            expected=expected,
        )

    fresh()
    instruction, _, after, _ = writer.correction(study, rng)
    (changed,) = after ^ study.present
    corrected = session.ask(Task.CORRECT, instruction)
    wanted = read - {changed} if changed in study.present else read | {changed}
    scorer.add("correction success", scorer.read(corrected) == wanted, q=instruction, report=report, a=corrected)
    question, style = yes_no_question(changed, rng, "eval")
    answer = session.ask(Task.CHAT, question)
    expected = yes_no_answer(changed in scorer.read(corrected), style)
    scorer.add(
        "multi-turn: question after a correction",
        yes_no(answer) == yes_no(expected),
        q=question,
        a=answer,
        report=corrected,
    )

    fresh()
    plain = session.ask(Task.CHAT, rng.choice(EXPLAIN_REQUESTS["eval"]))
    scorer.grades.append(textstat.flesch_kincaid_grade(plain))
    scorer.add("plain language: finding preservation", scorer.read(plain) == read, report=report, a=plain)
    fresh()
    summary = session.ask(Task.CHAT, rng.choice(SUMMARY_REQUESTS["eval"]))
    lines = [line for line in summary.splitlines() if line.strip()]
    scorer.add(
        "summary: bullet form",
        bool(lines) and all(line.lstrip().startswith(("-", "•", "*")) for line in lines),
        a=summary,
    )
    scorer.add("summary: finding preservation", scorer.read(summary) == read, report=report, a=summary)


def _mark(met: bool) -> str:
    return "✓" if met else "✗"


def table(scorer: Scorer, checkpoint: Path, studies: int, seconds: float) -> str:
    rows = [
        f"Checkpoint `{checkpoint}`, {studies} held-out synthetic studies (seed {HELD_OUT_SEED}), "
        f"{seconds / 60:.1f} min on CPU.",
        "",
    ]
    rows += ["| task | measure | value | target |", "|---|---|---|---|"]
    for metric, hits in scorer.hits.items():
        target = TARGETS.get(metric)
        value = sum(hits) / len(hits)
        mark = "" if target is None else f"≥ {target:.2f} {_mark(value >= target)}"
        rows.append(f"| {metric.split(':')[0]} | {metric} ({len(hits)}) | {value:.2f} | {mark} |")
    grade = sum(scorer.grades) / len(scorer.grades)
    rows.append(
        f"| plain language | Flesch-Kincaid grade, mean | {grade:.1f} | ≤ {MAX_GRADE:.0f} {_mark(grade <= MAX_GRADE)} |"
    )
    for name, f1 in scorer.report_f1().items():
        n = sum(scorer.report_counts[name][i] for i in (0, 2))
        rows.append(
            f"| report | CE F1, {name} ({n} with it) | {f1:.2f} | ≥ {MIN_REPORT_F1:.2f} {_mark(f1 >= MIN_REPORT_F1)} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=EMBEDDED_CHECKPOINT)
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    parser.add_argument("--examples", type=Path, default=None, help="write up to 3 failures per measure (JSON) here")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = RaDialogModel.from_pretrained(args.checkpoint, device="cpu")
    engine = one_at_a_time(model)  # as a single user sees it
    bank = sentence_bank(CONFIG)
    writer = SyntheticTaskWriter(bank, split="eval")
    scorer, rng = Scorer(), random.Random(HELD_OUT_SEED)
    start = time.perf_counter()
    with torch.inference_mode():
        for sample in tqdm(iter_samples(args.studies, HELD_OUT_SEED, CONFIG, bank), total=args.studies, desc="studies"):
            session = Session.start(model, sample.to_xray(), engine=engine)
            run_study(session, SyntheticStudy.of(sample, ""), writer, scorer, rng)
    text = table(scorer, args.checkpoint, args.studies, time.perf_counter() - start)
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if args.examples is not None:
        args.examples.write_text(json.dumps(scorer.examples, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()

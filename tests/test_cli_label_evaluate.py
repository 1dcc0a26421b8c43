"""`radialog label` and `radialog evaluate`: file formats, the IU X-ray run, metrics files, one-line input errors."""

from __future__ import annotations

import csv
import io
import json
import random
import time

import pytest

from radialog.cli import main
from radialog.labeler import iter_iu_reports
from radialog.labeler.rules import label_sentence
from radialog.labels import CHEXPERT_LABELS

# Our own reports; together they state each of the 14 observations as present at least once.
REPORTS = {
    "r1": "FINDINGS: The heart is normal in size. The lungs are clear. IMPRESSION: No acute disease.",
    "r2": "Moderate cardiomegaly. Widened mediastinum. Small bilateral pleural effusions.",
    "r3": "Right lower lobe consolidation with pneumonia. Patchy opacity at the left base.",
    "r4": "Mild pulmonary edema. Right internal jugular catheter tip in the SVC.",
    "r5": "Small left apical pneumothorax. Healed left rib fractures.",
    "r6": "A 2 cm nodule in the right upper lobe. Biapical pleural thickening.",
    "r7": "Bibasilar atelectasis. No pneumothorax.",
    "r8": "No pleural effusion. Heart size is within normal limits.",
}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_label_jsonl_to_stdout(tmp_path, capsys):
    source = write_jsonl(tmp_path / "reports.jsonl", [{"id": k, "report": v} for k, v in REPORTS.items()])
    code, out, _ = run_cli(capsys, "label", source)
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == list(REPORTS)
    assert all(list(r["labels"]) == list(CHEXPERT_LABELS) for r in records)
    by_id = {r["id"]: r["labels"] for r in records}
    assert by_id["r1"]["No Finding"] == 1 and by_id["r1"]["Cardiomegaly"] == 0 and by_id["r1"]["Edema"] is None
    assert by_id["r2"]["Cardiomegaly"] == 1 and by_id["r2"]["No Finding"] is None


def test_label_csv_to_csv(tmp_path, capsys):
    source = tmp_path / "reports.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "report", "other"])
        writer.writerows([[k, v, "x"] for k, v in REPORTS.items()])
    output = tmp_path / "out" / "labels.csv"
    code, out, _ = run_cli(capsys, "label", str(source), "--output", str(output))
    assert code == 0 and out == ""
    rows = list(csv.DictReader(output.open()))
    assert list(rows[0]) == ["id", *CHEXPERT_LABELS]
    assert rows[6]["id"] == "r7" and rows[6]["Atelectasis"] == "1" and rows[6]["Pneumothorax"] == "0"
    assert rows[6]["Edema"] == ""  # not mentioned: blank, as in CheXpert's CSVs


def test_label_with_the_chexbert_backend(tmp_path, capsys):
    from test_chexbert import random_checkpoint

    random_checkpoint(tmp_path / "chexbert.pth")
    source = write_jsonl(tmp_path / "reports.jsonl", [{"id": 1, "report": "No effusion."}])
    code, out, _ = run_cli(
        capsys, "label", source, "--backend", "chexbert", "--chexbert-checkpoint", str(tmp_path / "chexbert.pth")
    )
    assert code == 0
    record = json.loads(out)
    assert record["id"] == 1 and set(record["labels"]) == set(CHEXPERT_LABELS)


def test_label_runs_the_3955_iu_reports_in_seconds_with_stable_output(tmp_path, capsys):
    source = write_jsonl(tmp_path / "iu.jsonl", [{"id": r.id, "report": r.text} for r in iter_iu_reports()])
    outputs = []
    for run in range(2):
        label_sentence.cache_clear()
        start = time.perf_counter()
        code, _, _ = run_cli(capsys, "label", source, "--output", str(tmp_path / f"labels{run}.jsonl"))
        seconds = time.perf_counter() - start
        assert code == 0 and seconds < 10, f"{seconds:.1f} s"
        outputs.append((tmp_path / f"labels{run}.jsonl").read_text())
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 3955


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no records"),
        ('{"id": 1, "report": "ok"}\n{"id": 2, "report": \n', "reports.jsonl:2: invalid JSON"),
        ('{"id": 1, "text": "ok"}\n', "reports.jsonl:1: missing 'report'"),
        ('{"id": 1, "report": null}\n', "'report' must be text"),
        ('{"id": 1, "report": "a"}\n{"id": 1, "report": "b"}\n', "id '1' appears more than once"),
        ("[1, 2]\n", "expected a JSON object per line"),
    ],
)
def test_label_bad_jsonl_is_one_line_error(tmp_path, capsys, content, message):
    (tmp_path / "reports.jsonl").write_text(content)
    code, out, err = run_cli(capsys, "label", str(tmp_path / "reports.jsonl"))
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_label_bad_csv_and_paths_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "reports.csv").write_text("id,text\n1,No effusion.\n")
    code, _, err = run_cli(capsys, "label", str(tmp_path / "reports.csv"))
    assert code == 2 and "missing column(s) report" in err
    code, _, err = run_cli(capsys, "label", str(tmp_path / "absent.jsonl"))
    assert code == 2 and "file not found" in err
    code, _, err = run_cli(capsys, "label", str(tmp_path / "reports.txt"))
    assert code == 2 and "expected a .csv or .jsonl file" in err
    valid = write_jsonl(tmp_path / "valid.jsonl", [{"id": 1, "report": "No effusion."}])
    code, _, err = run_cli(
        capsys, "label", valid, "--backend", "chexbert", "--chexbert-checkpoint", str(tmp_path / "none.pth")
    )
    assert code == 2 and "CheXbert checkpoint not found" in err


def evaluate(capsys, tmp_path, predictions: str, *extra: str) -> tuple[dict, str]:
    out_dir = tmp_path / "eval"
    code, out, _ = run_cli(capsys, "evaluate", predictions, "--output-dir", str(out_dir), *extra)
    assert code == 0
    return json.loads((out_dir / "metrics.json").read_text()), out


def test_evaluate_identical_reports_score_perfectly(tmp_path, capsys):
    records = [{"id": k, "prediction": v, "reference": v} for k, v in REPORTS.items()]
    metrics, out = evaluate(capsys, tmp_path, write_jsonl(tmp_path / "pred.jsonl", records), "--plot")
    ce = metrics["clinical_efficacy"]
    assert ce["macro_14"]["f1"] == 1.0 and ce["micro_14"]["f1"] == 1.0 and ce["macro_5"]["f1"] == 1.0
    assert all(ce["per_label"][name]["support"] > 0 for name in CHEXPERT_LABELS)
    assert metrics["nlg"]["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["nlg"]["METEOR"] == pytest.approx(1.0) and metrics["nlg"]["ROUGE-L"] == pytest.approx(1.0)
    assert metrics["bertscore"]["f1"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["n_reports"] == 8 and metrics["labeler"] == "rules"
    assert "macro, 14 labels" in out and "BLEU-4" in out and "BERTScore" in out
    assert (tmp_path / "eval" / "per_label_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [json.loads(line) for line in (tmp_path / "eval" / "labels.jsonl").read_text().splitlines()]
    assert [r["id"] for r in labels] == list(REPORTS) and all(r["prediction"] == r["reference"] for r in labels)


def test_evaluate_against_shuffled_references_scores_lower(tmp_path, capsys):
    ids = list(REPORTS)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    predictions = write_jsonl(tmp_path / "pred.jsonl", [{"id": k, "prediction": REPORTS[k]} for k in ids])
    # The reference file, in another order, gives each id another report's text.
    references = write_jsonl(
        tmp_path / "ref.jsonl",
        [{"id": k, "reference": REPORTS[s]} for k, s in reversed(list(zip(ids, shuffled, strict=True)))],
    )
    metrics, _ = evaluate(
        capsys, tmp_path, predictions, "--references", references, "--no-meteor", "--no-bertscore",
        "--uncertain-policy", "rrg",
    )  # fmt: skip
    assert metrics["clinical_efficacy"]["macro_14"]["f1"] < 0.5
    assert metrics["clinical_efficacy"]["policy"] == "rrg"
    assert metrics["nlg"]["BLEU-4"] < 0.2
    assert "METEOR" not in metrics["nlg"] and metrics["bertscore"] is None


def test_evaluate_input_errors(tmp_path, capsys):
    predictions = write_jsonl(tmp_path / "pred.jsonl", [{"id": "a", "prediction": "x"}, {"id": "b", "prediction": "y"}])
    references = write_jsonl(tmp_path / "ref.jsonl", [{"id": "a", "reference": "x"}, {"id": "c", "reference": "z"}])
    code, _, err = run_cli(capsys, "evaluate", predictions, "--references", references)
    assert code == 2 and "do not match" in err and "e.g. b" in err and "e.g. c" in err
    code, _, err = run_cli(capsys, "evaluate", predictions)  # no reference column and no --references
    assert code == 2 and "missing 'reference'" in err
    empty_reference = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "prediction": "x", "reference": ""}])
    code, _, err = run_cli(capsys, "evaluate", empty_reference, "--no-meteor", "--no-bertscore")
    assert code == 2 and "1 reference(s) are empty (e.g. id 1)" in err


def test_label_output_is_parseable_csv_on_stdout(tmp_path, capsys):
    source = write_jsonl(tmp_path / "reports.jsonl", [{"id": "x,1", "report": "No effusion."}])
    code, out, _ = run_cli(capsys, "label", source, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["id"] == "x,1" and rows[0]["Pleural Effusion"] == "0" and rows[0]["No Finding"] == "1"

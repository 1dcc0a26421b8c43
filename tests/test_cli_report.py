"""`radialog report`: JSON output on real images, one-line errors with exit code 2 on bad files."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from radialog.cli import main
from radialog.labels import CHEXPERT_LABELS


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_report_json(out: str) -> None:
    record = json.loads(out)
    assert set(record) == {"findings", "report"}
    assert list(record["findings"]) == list(CHEXPERT_LABELS)
    assert all(0.0 <= p <= 1.0 for p in record["findings"].values())
    assert isinstance(record["report"], str)


def test_report_json_on_a_real_png(capsys, shared_cxr):
    code, out, _ = run_cli(capsys, "report", str(shared_cxr / "iu_CXR7_IM-2263-1001.png"), "--preset", "tiny", "--json")
    assert code == 0
    check_report_json(out)


def test_report_json_on_a_real_dicom(capsys, chest_dicom):
    code, out, _ = run_cli(capsys, "report", str(chest_dicom), "--preset", "tiny", "--json")
    assert code == 0
    check_report_json(out)


def test_report_text_lists_findings_and_report(capsys, chest_dicom):
    code, out, _ = run_cli(capsys, "report", str(chest_dicom), "--preset", "tiny")
    assert code == 0
    assert "Predicted findings" in out and "Report:" in out and "Cardiomegaly" in out


def write_dicom_without_pixels(path, chest_dicom) -> None:
    dataset = pydicom.dcmread(chest_dicom)
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("kind", ["corrupt", "text", "no-pixels", "missing"])
def test_bad_files_give_one_line_error_and_exit_code_2(capsys, tmp_path, chest_dicom, kind):
    path = tmp_path / f"{kind}.dcm"
    if kind == "corrupt":
        path.write_bytes(chest_dicom.read_bytes()[:2000])
    elif kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("Heart size normal. No effusion.\n")
    elif kind == "no-pixels":
        write_dicom_without_pixels(path, chest_dicom)
    code, out, err = run_cli(capsys, "report", str(path), "--preset", "tiny", "--json")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("radialog report: error: ")

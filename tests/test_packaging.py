"""`pip install radialog` puts one top-level package into site-packages, with the app and the instruct
builder inside it, and the library imports the app only when a command serves it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("radialog", "app", "instruct_data", "pyproject.toml", "README.md")


def build_wheel(tmp_path: Path) -> zipfile.ZipFile:
    # A copy of the sources: an in-tree build would leave build/ and egg-info behind in the checkout.
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, source]
    subprocess.run(command, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("radialog-*.whl")
    return zipfile.ZipFile(wheel)


def test_the_wheel_holds_one_top_level_package_with_app_and_instruct_data_inside(tmp_path):
    names = build_wheel(tmp_path).namelist()
    assert {name.split("/")[0] for name in names} == {"radialog", "radialog-0.1.0.dist-info"}
    # Every package of the source tree lands in the wheel, under the radialog namespace.
    for init in sorted((ROOT / "radialog").rglob("__init__.py")):
        assert init.relative_to(ROOT).as_posix() in names
    for folder, package in (("app", "radialog/app"), ("instruct_data", "radialog/instruct_data")):
        for module in (ROOT / folder).glob("*.py"):
            assert f"{package}/{module.name}" in names
    assert "radialog/app/examples/synthetic_cardiomegaly_effusion.png" in names
    assert "radialog/demo_checkpoint/model.safetensors" in names


def test_the_library_and_its_cli_import_without_the_app():
    code = (
        "import sys, radialog.cli, radialog.model, radialog.chat; radialog.cli.build_parser([]);"
        "print(sorted(m for m in sys.modules if m.startswith(('radialog.app', 'gradio', 'fastapi'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert result.stdout.strip() == "[]"

"""`radialog download`: fails fast offline; resumes with HTTP Range; verifies sizes and sha256 (no network)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile

import pytest

from radialog import download as dl
from radialog.cli import main


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int = 200) -> None:
        super().__init__(body)
        self.status = status
        self.headers = {"Content-Length": str(len(body))}


def serve(files: dict[str, bytes], requests: list | None = None):
    """An opener answering from `files`, honouring `Range: bytes=N-` like a CDN does."""

    def opener(request, timeout):
        if requests is not None:
            requests.append((request.full_url, request.get_header("Range")))
        body = files[request.full_url]
        if isinstance(body, (dict, list)):
            return FakeResponse(json.dumps(body).encode())
        range_header = request.get_header("Range")
        if range_header:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            return FakeResponse(body[start:], status=206)
        return FakeResponse(body)

    return opener


def test_offline_cli_fails_fast_with_one_clear_line(monkeypatch, tmp_path, capsys):
    def unreachable(address, timeout=None):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(dl.socket, "create_connection", unreachable)
    monkeypatch.setattr(dl, "plan", lambda *a: pytest.fail("no request may follow a failed reachability check"))
    code = main(["download", "--to", str(tmp_path / "weights")])
    err = capsys.readouterr().err
    assert code != 0 and not (tmp_path / "weights").exists()
    assert "cannot reach huggingface.co" in err and "needs internet access" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_interrupted_download_resumes_with_range_and_verifies_sha256(tmp_path):
    body = bytes(range(256)) * 1000
    url = "https://example.test/weights.bin"
    file = dl.RemoteFile(url=url, path="x/weights.bin", size=len(body), sha256=hashlib.sha256(body).hexdigest())
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "weights.bin.part").write_bytes(body[:1234])
    requests: list = []
    entry = dl.fetch(file, tmp_path, serve({url: body}, requests))
    assert requests == [(url, "bytes=1234-")]
    assert (tmp_path / "x" / "weights.bin").read_bytes() == body
    assert entry["checked"] == "sha256" and entry["size"] == len(body)


def test_checksum_mismatch_moves_the_file_aside(tmp_path):
    url = "https://example.test/w.bin"
    file = dl.RemoteFile(url=url, path="w.bin", size=3, sha256="0" * 64)
    with pytest.raises(dl.DownloadError, match="sha256"):
        dl.fetch(file, tmp_path, serve({url: b"abc"}))
    assert (tmp_path / "w.bin.bad").exists() and not (tmp_path / "w.bin").exists()


def test_md5_mismatch_moves_the_file_aside(tmp_path):
    url = "https://example.test/biovil.pt"
    good = dl.RemoteFile(url=url, path="ok.pt", size=3, md5="900150983cd24fb0d6963f7d28e17f72")  # md5("abc")
    assert dl.fetch(good, tmp_path, serve({url: b"abc"}))["checked"] == "md5"
    bad = dl.RemoteFile(url=url, path="bad.pt", size=3, md5="0" * 32)
    with pytest.raises(dl.DownloadError, match="md5"):
        dl.fetch(bad, tmp_path, serve({url: b"abc"}))
    assert (tmp_path / "bad.pt.bad").exists() and not (tmp_path / "bad.pt").exists()


def test_plan_takes_sizes_and_checksums_from_host_metadata_and_unpacks_zips(tmp_path):
    lfs = {"oid": "a" * 64, "size": 10}
    tree = [{"path": name, "size": 5, "lfs": lfs if name.endswith(".bin") else None} for name in dl.VICUNA_FILES]
    biovil_tree = [{"path": dl.BIOVIL_FILE, "size": 9, "lfs": {"oid": "b" * 64, "size": 9}}]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("vicuna-7b-img-report/checkpoint-11200/adapter_config.json", "{}")
    assets = [
        {"name": f"{stem}.zip", "size": 1, "browser_download_url": f"https://gh.test/{stem}.zip", "digest": None}
        for stem in dl.RELEASE_ASSETS
    ]
    assets[0] = {**assets[0], "name": "checkpoint_4.pth", "digest": "sha256:" + "c" * 64}
    opener = serve(
        {
            f"{dl.HF}/api/models/{dl.VICUNA_REPO}/tree/main": tree,
            f"{dl.HF}/api/models/{dl.BIOVIL_REPO}/tree/v1.0": biovil_tree,
            dl.RELEASE_API: {"assets": assets},
        }
    )
    files = {f.path: f for f in dl.plan(opener)}
    assert files["vicuna-7b-v1.3/pytorch_model-00001-of-00002.bin"].sha256 == "a" * 64
    assert files["vicuna-7b-v1.3/config.json"].sha256 is None  # small git files: size only
    biovil = files["biovil_t/" + dl.BIOVIL_FILE]
    # BioViL-T from the tag RaDialog and hi-ml pin, with their MD5.
    assert biovil.size == 9 and biovil.md5 == "a83080e2f23aa584a4f2b24c39b1bb64"
    assert biovil.url == f"{dl.HF}/{dl.BIOVIL_REPO}/resolve/v1.0/{dl.BIOVIL_FILE}"
    assert files["release/checkpoint_4.pth"].sha256 == "c" * 64 and not files["release/checkpoint_4.pth"].extract
    assert files["release/vicuna-7b-img-report.zip"].extract

    zip_path = tmp_path / "release" / "vicuna-7b-img-report.zip"
    zip_path.parent.mkdir()
    zip_path.write_bytes(archive.getvalue())
    dl.extract(zip_path)
    assert (tmp_path / "release" / "vicuna-7b-img-report" / "checkpoint-11200" / "adapter_config.json").is_file()

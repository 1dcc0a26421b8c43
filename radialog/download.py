"""Fetching RaDialog v1's official weights (for a machine with internet access).

Layout written under the target directory (then `radialog convert --source DIR --to DIR`):

    vicuna-7b-v1.3/                                 lmsys/vicuna-7b-v1.3 (Hugging Face)
    biovil_t/biovil_t_image_model_proj_size_128.pt  microsoft/BiomedVLP-BioViL-T (Hugging Face)
    release/                                        ChantalMP/RaDialog GitHub release `weights`, zips unpacked
    manifest.json                                   url, size and sha256 of every file, and how it was checked

Checksums: this code pins none, because none are published with the release and we could not
fetch the files when writing it. Expected sha256 values come at run time from the hosts' metadata:
Hugging Face's tree API gives the sha256 of every LFS file (the weights; small text files have only a
git blob id and are checked by size), GitHub's release API gives a `digest` per asset where GitHub
has computed one. A file without a published sha256 is checked by size, and its computed sha256 is
recorded in manifest.json so later copies can be compared.

Only urllib is used, with a short connect timeout; interrupted downloads resume with HTTP Range.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from radialog.errors import RaDialogError
from radialog.release import BIOVIL_FILE, BIOVIL_MD5, BIOVIL_REPO, BIOVIL_REVISION

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
CHUNK = 1 << 20
USER_AGENT = "radialog-download/0.1"

HF = "https://huggingface.co"
VICUNA_REPO, VICUNA_REVISION, VICUNA_DIR = "lmsys/vicuna-7b-v1.3", "main", "vicuna-7b-v1.3"
VICUNA_FILES = (  # the PyTorch weights and the slow (sentencepiece) tokenizer, ~13.5 GB
    "config.json",
    "generation_config.json",
    "pytorch_model-00001-of-00002.bin",
    "pytorch_model-00002-of-00002.bin",
    "pytorch_model.bin.index.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "tokenizer_config.json",
)
RELEASE_API = "https://api.github.com/repos/ChantalMP/RaDialog/releases/tags/weights"
# Release assets we need, by name stem (the exact file names, e.g. with or without .zip, come from the API).
# `embs` (precomputed training embeddings) is not needed for inference.
RELEASE_ASSETS = ("checkpoint_4", "vicuna-7b-img-report", "vicuna-7b-img-instruct", "chexpert_train", "chexbert")
HOSTS = ("huggingface.co", "api.github.com", "github.com")


class DownloadError(RaDialogError):
    """A download could not start or finish (no network, bad checksum, missing asset)."""


@dataclass
class RemoteFile:
    url: str
    path: str  # relative to the target directory
    size: int | None = None  # bytes, when the host publishes it
    sha256: str | None = None  # None: unknown (no host publishes it); checked by size only
    md5: str | None = None  # pinned by the upstream project where it publishes one
    extract: bool = False


Opener = Callable[[urllib.request.Request, float], Any]


def _open(request: urllib.request.Request, timeout: float) -> Any:
    return urllib.request.urlopen(request, timeout=timeout)


def check_online(hosts: tuple[str, ...] = HOSTS, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with one clear sentence, when a host cannot be reached."""
    for host in hosts:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError as err:
            raise DownloadError(
                f"cannot reach {host} ({err.__class__.__name__}: {err}); `radialog download` needs internet "
                "access. On an offline machine, copy the files listed in checkpoints/README.md by hand."
            ) from None


def _get_json(url: str, opener: Opener) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with opener(request, CONNECT_TIMEOUT_S) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as err:
        raise DownloadError(f"could not read {url}: {err}") from None


def hf_files(repo: str, revision: str, names: tuple[str, ...], directory: str, opener: Opener) -> list[RemoteFile]:
    """Files of a Hugging Face repository, with sizes and (for LFS files) sha256 from its tree API."""
    tree = {item["path"]: item for item in _get_json(f"{HF}/api/models/{repo}/tree/{revision}", opener)}
    files = []
    for name in names:
        if name not in tree:
            raise DownloadError(f"{repo}@{revision} has no file {name}")
        lfs = tree[name].get("lfs") or {}
        files.append(
            RemoteFile(
                url=f"{HF}/{repo}/resolve/{revision}/{name}",
                path=f"{directory}/{name}",
                size=lfs.get("size", tree[name].get("size")),
                sha256=lfs.get("oid"),
            )
        )
    return files


def release_files(opener: Opener) -> list[RemoteFile]:
    assets = _get_json(RELEASE_API, opener).get("assets", [])
    files = []
    for stem in RELEASE_ASSETS:
        matches = [a for a in assets if a["name"] == stem or a["name"].startswith(stem + ".")]
        if not matches:
            raise DownloadError(f"the RaDialog release has no asset {stem!r} (assets: {[a['name'] for a in assets]})")
        asset = matches[0]
        digest = asset.get("digest") or ""
        files.append(
            RemoteFile(
                url=asset["browser_download_url"],
                path=f"release/{asset['name']}",
                size=asset.get("size"),
                sha256=digest.removeprefix("sha256:") if digest.startswith("sha256:") else None,
                extract=asset["name"].endswith(".zip") or "." not in asset["name"],
            )
        )
    return files


def plan(opener: Opener = _open) -> list[RemoteFile]:
    (biovil,) = hf_files(BIOVIL_REPO, BIOVIL_REVISION, (BIOVIL_FILE,), "biovil_t", opener)
    return [
        *hf_files(VICUNA_REPO, VICUNA_REVISION, VICUNA_FILES, VICUNA_DIR, opener),
        replace(biovil, md5=BIOVIL_MD5),
        *release_files(opener),
    ]


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(file: RemoteFile, target: Path, opener: Opener = _open) -> dict[str, Any]:
    """Download one file into `target / file.path`, resuming a `.part`; verify; return its manifest entry."""
    final = target / file.path
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".part")
    if not final.exists():
        offset = partial.stat().st_size if partial.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with opener(urllib.request.Request(file.url, headers=headers), CONNECT_TIMEOUT_S) as response:
                if offset and response.status != 206:  # the server ignored Range: start over
                    offset = 0
                mode = "ab" if offset else "wb"
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length else file.size
                with (
                    partial.open(mode) as out,
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=file.path) as bar,
                ):
                    while block := response.read(CHUNK):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(f"downloading {file.url} failed ({err}); run the command again to resume") from None
        partial.rename(final)
    return verify(file, final)


def verify(file: RemoteFile, path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        path.rename(path.with_name(path.name + ".bad"))
        raise DownloadError(f"{path}: {size} bytes, expected {file.size}; moved aside, run again to refetch")
    digest = file_digest(path)
    if file.sha256 is not None and digest != file.sha256:
        path.rename(path.with_name(path.name + ".bad"))
        raise DownloadError(f"{path}: sha256 {digest}, expected {file.sha256}; moved aside, run again to refetch")
    if file.md5 is not None and (md5 := file_digest(path, "md5")) != file.md5:
        path.rename(path.with_name(path.name + ".bad"))
        raise DownloadError(f"{path}: md5 {md5}, expected {file.md5}; moved aside, run again to refetch")
    checked = "+".join(name for name, value in (("sha256", file.sha256), ("md5", file.md5)) if value)
    checked = checked or ("size" if file.size is not None else "unchecked")
    return {**asdict(file), "size": size, "sha256": digest, "checked": checked}


def extract(path: Path) -> None:
    """Unpack a zip asset beside itself (skipped when already unpacked)."""
    if not zipfile.is_zipfile(path):
        return
    marker = path.with_name(path.name + ".extracted")
    if marker.exists():
        return
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():  # refuse paths escaping the folder
            if member.startswith("/") or ".." in Path(member).parts:
                raise DownloadError(f"{path} holds an unsafe path {member!r}")
        archive.extractall(path.parent)
    marker.touch()


def download(target: str | Path, opener: Opener = _open, online_check: bool = True) -> Path:
    """Fetch everything into `target`; returns the manifest path."""
    target = Path(target)
    if online_check:
        check_online()
    files = plan(opener)
    total = sum(f.size or 0 for f in files)
    logger.info("downloading %d files (%.1f GB) into %s", len(files), total / 1e9, target)
    entries = []
    for file in files:
        entries.append(fetch(file, target, opener))
        if file.extract:
            extract(target / file.path)
    manifest = target / "manifest.json"
    manifest.write_text(json.dumps(entries, indent=2) + "\n")
    return manifest

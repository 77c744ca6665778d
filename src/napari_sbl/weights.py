"""Model weights: a manifest entry, a user cache, a checksummed download, a clear error offline.

One home for every model's weights (SAM2 checkpoints, VideoPrism checkpoints). Manifests live in
``napari_sbl/manifests/*.json`` (mirrored in ``third_party/``) so users can see exactly what is fetched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from napari_sbl.errors import ChecksumError, WeightsMissingError
from napari_sbl.progress import Reporter, silent

CACHE_ENV = "NAPARI_SBL_CACHE"


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weight file. ``sha256`` may be None where upstream publishes none
    (then the hash of the first download is recorded and checked on every later use)."""

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    size_bytes: int | None
    env_var: str | None = None
    licence: str = ""


def cache_dir() -> Path:
    """``$NAPARI_SBL_CACHE`` or ``~/.cache/napari-sbl/weights``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "napari-sbl"
    return base / "weights"


def load_manifest(family: str) -> dict[str, WeightSpec]:
    """Weight specs of one model family (``sam2``, ``videoprism``) from the packaged manifest."""
    text = resources.files("napari_sbl").joinpath("manifests", f"{family}.json").read_text()
    entries = json.loads(text)["weights"]
    return {
        e["name"]: WeightSpec(
            name=e["name"],
            filename=e["filename"],
            urls=tuple(e["urls"]),
            sha256=e.get("sha256"),
            size_bytes=e.get("size_bytes"),
            env_var=e.get("env_var"),
            licence=e.get("licence", ""),
        )
        for e in entries
    }


def sha256_of(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _recorded_hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify(path: Path, spec: WeightSpec) -> str:
    """Check ``path`` against the spec's sha256 (or the hash recorded at first download)."""
    actual = sha256_of(path)
    expected = spec.sha256
    recorded = _recorded_hash_path(path)
    if expected is None and recorded.exists():
        expected = recorded.read_text().strip()
    if expected is not None and actual != expected:
        raise ChecksumError(
            f"{path} has sha256 {actual[:12]}… but {spec.name} should be {expected[:12]}…; "
            "the file is corrupt or a different model. Delete it and download again"
        )
    return actual


def resolve_weights(
    spec: WeightSpec,
    checkpoint: str | Path | None = None,
    download: bool = True,
    reporter: Reporter | None = None,
) -> Path:
    """Path to a verified weight file: explicit path, then env var, then cache, then download."""
    for candidate, source in ((checkpoint, "--checkpoint"), (os.environ.get(spec.env_var or ""), spec.env_var)):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise WeightsMissingError(f"{source} points to {path}, which is not a file")
            if path.name == spec.filename:
                verify(path, spec)
            return path
    cached = cache_dir() / spec.filename
    if cached.is_file():
        verify(cached, spec)
        return cached
    if download:
        return _download(spec, cached, reporter or silent())
    raise WeightsMissingError(_missing_message(spec, cached, "downloads are switched off"))


def _missing_message(spec: WeightSpec, cached: Path, why: str) -> str:
    hint = f", or set {spec.env_var}" if spec.env_var else ""
    return (
        f"weights for {spec.name} are not available ({why}). Download {spec.filename} from "
        f"{spec.urls[0]} and put it at {cached}, or pass --checkpoint PATH{hint}"
    )


def _download(spec: WeightSpec, target: Path, reporter: Reporter) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    errors = []
    for url in spec.urls:
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
                total = int(response.headers.get("Content-Length") or spec.size_bytes or 0) or None
                reporter.start(total, f"downloading {spec.filename}")
                while block := response.read(1 << 20):
                    out.write(block)
                    reporter.advance(len(block))
                    reporter.check()
            break
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            errors.append(f"{url}: {err}")
    else:
        partial.unlink(missing_ok=True)
        raise WeightsMissingError(_missing_message(spec, target, "; ".join(errors) or "no URL"))
    actual = sha256_of(partial)
    if spec.sha256 is not None and actual != spec.sha256:
        partial.unlink(missing_ok=True)
        raise ChecksumError(f"download of {spec.filename} has sha256 {actual}, expected {spec.sha256}")
    shutil.move(partial, target)
    if spec.sha256 is None:
        _recorded_hash_path(target).write_text(actual + "\n")
    return target

"""Real animal videos shipped with the package, for napari's File ▸ Open Sample and the demo.

Their origin and licences are recorded in ``third_party/sample_data.json`` (mirrored in
``napari_sbl/manifests/sample_data.json``) with a sha256 per file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from napari_sbl.errors import ChecksumError, SblError


@dataclass(frozen=True)
class SampleVideo:
    name: str
    filename: str
    description: str
    sha256: str
    licence: str
    source: str
    n_animals: int


def sample_videos() -> dict[str, SampleVideo]:
    text = resources.files("napari_sbl").joinpath("manifests", "sample_data.json").read_text()
    return {e["name"]: SampleVideo(**e) for e in json.loads(text)["samples"]}


def sample_path(name: str, verify: bool = False) -> Path:
    """Path of a bundled sample video (optionally checked against its recorded sha256)."""
    samples = sample_videos()
    if name not in samples:
        raise SblError(f"unknown sample '{name}'; choose one of {', '.join(samples)}")
    sample = samples[name]
    path = Path(str(resources.files("napari_sbl").joinpath("samples", "data", sample.filename)))
    if not path.is_file():
        raise SblError(f"sample video {sample.filename} is missing from the installation; reinstall napari-sbl")
    if verify:
        from napari_sbl.weights import sha256_of

        if sha256_of(path) != sample.sha256:
            raise ChecksumError(f"bundled sample {path} does not match its recorded sha256; reinstall napari-sbl")
    return path

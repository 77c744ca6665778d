"""Checksummed manifests: packaged copies equal third_party/, samples match their recorded sha256."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from napari_sbl.samples import sample_path, sample_videos
from napari_sbl.weights import load_manifest, sha256_of

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("packaged", "third_party"),
    [("sample_data.json", "sample_data.json"), ("sam2.json", "weights/sam2.json"),
     ("videoprism.json", "weights/videoprism.json")],
)
def test_packaged_manifests_mirror_third_party(packaged, third_party):
    inside = json.loads(resources.files("napari_sbl").joinpath("manifests", packaged).read_text())
    outside = json.loads((REPO / "third_party" / third_party).read_text())
    assert inside == outside


def test_sample_videos_match_their_checksums():
    samples = sample_videos()
    assert set(samples) == {"flies_pair", "mouse_openfield"}
    for name, sample in samples.items():
        path = sample_path(name, verify=True)
        assert sha256_of(path) == sample.sha256
        assert sample.licence and sample.source


def test_weight_manifests_name_files_urls_and_hashes():
    sam2 = load_manifest("sam2")
    assert set(sam2) >= {"sam2.1_hiera_tiny", "sam2.1_hiera_large"}
    assert all(len(spec.sha256 or "") == 64 and spec.urls and spec.env_var for spec in sam2.values())
    videoprism = load_manifest("videoprism")
    assert {spec.filename for spec in videoprism.values()} >= {"flax_base_f16r288_repeated.npz",
                                                              "flax_large_f8r288_repeated.npz"}


def test_installed_manifest_is_the_repository_one():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-sbl")
    assert manifest.name == "napari-sbl"
    on_disk = (REPO / "napari.yaml").read_text()
    assert manifest.display_name in on_disk
    assert {w.display_name for w in manifest.contributions.widgets} >= {"Session", "Track animals"}

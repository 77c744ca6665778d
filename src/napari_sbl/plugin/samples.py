"""napari sample data: the real videos bundled with the package, as lazy video layers."""

from __future__ import annotations

from napari_sbl.io.video import VideoReader
from napari_sbl.plugin.layers import LayerData, video_layer
from napari_sbl.samples import sample_path


def _sample_layer(name: str) -> list[LayerData]:
    return [video_layer(VideoReader(sample_path(name)))]


def flies_pair() -> list[LayerData]:
    return _sample_layer("flies_pair")


def mouse_openfield() -> list[LayerData]:
    return _sample_layer("mouse_openfield")

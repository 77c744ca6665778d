"""napari reader: videos open as lazy layers, session stores restore their layers."""

from __future__ import annotations

from pathlib import Path

from napari_sbl.io.video import VIDEO_SUFFIXES
from napari_sbl.plugin.layers import LayerData, is_store_path, session_layers, video_layer


def get_reader(path: str | list[str]):
    """Return a reader for a video file or a ``*.sbl.zarr`` folder, else None (another plugin's turn)."""
    if isinstance(path, list):
        if not path:
            return None
        path = path[0]
    path = Path(path)
    if is_store_path(path):
        return read_store
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        return read_video
    return None


def read_video(path: str | list[str]) -> list[LayerData]:
    """A video as a lazy layer; its session store's layers too when one sits beside it."""
    from napari_sbl.pipeline.session import open_session
    from napari_sbl.store.session import default_store_path

    paths = path if isinstance(path, list) else [path]
    layers: list[LayerData] = []
    for one in paths:
        if (default_store_path(one) / "zarr.json").is_file():
            video, store = open_session(one)
            layers.extend(session_layers(video, store))
        else:
            from napari_sbl.io.video import VideoReader

            layers.append(video_layer(VideoReader(one)))
    return layers


def read_store(path: str | list[str]) -> list[LayerData]:
    from napari_sbl.pipeline.session import open_store_session

    paths = path if isinstance(path, list) else [path]
    layers: list[LayerData] = []
    for one in paths:
        video, store = open_store_session(one)
        layers.extend(session_layers(video, store))
    return layers

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
    if path.suffix.lower() in (".h5", ".hdf5"):
        from napari_sbl.segment.import_sbl import is_seed_mask_file

        return read_seed_masks if is_seed_mask_file(path) else None
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


def read_seed_masks(path: str | list[str]) -> list[LayerData]:
    """A SingleBehaviorLab mask file: imported into the session store of its video, then shown."""
    from napari_sbl.errors import VideoError
    from napari_sbl.pipeline.session import open_session
    from napari_sbl.segment.import_sbl import import_seed_masks, read_header

    paths = path if isinstance(path, list) else [path]
    layers: list[LayerData] = []
    for one in paths:
        header = read_header(one)
        candidates = [Path(header.video_path), Path(one).parent / Path(header.video_path).name]
        video_path = next((c for c in candidates if c.is_file()), None)
        if video_path is None:
            raise VideoError(f"{one} refers to video {header.video_path}, which cannot be found; "
                             "put the video next to the mask file")
        video, store = open_session(video_path)
        import_seed_masks(one, video, store, overwrite=True)
        layers.extend(session_layers(video, store))
    return layers

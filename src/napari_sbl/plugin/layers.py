"""Layer data tuples for napari, built from a video and its session store.

Every layer carries ``metadata["napari_sbl"]`` naming its store, video and role, so widgets find
the session behind whatever layer the user picked.
"""

from __future__ import annotations

from pathlib import Path

from napari_sbl.io.lazy import video_as_dask
from napari_sbl.io.video import VideoReader
from napari_sbl.segment.prompts import points_from_prompts, prompts_from_json
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore

LayerData = tuple[object, dict, str]
ANIMAL_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990")


def sbl_metadata(role: str, video: VideoReader, store: SessionStore | None) -> dict:
    return {"napari_sbl": {"role": role, "video": str(video.path), "store": str(store.path) if store else None}}


def video_layer(video: VideoReader, store: SessionStore | None = None) -> LayerData:
    kwargs = {
        "name": video.path.stem,
        "rgb": True,
        "metadata": {**sbl_metadata("video", video, store), "fps": video.info.fps,
                     "frame_times": video.frame_times()},
        "multiscale": False,
    }
    return video_as_dask(video), kwargs, "image"


def masks_layer(video: VideoReader, store: SessionStore) -> LayerData | None:
    if not store.has(layout.TRACKS_MASKS):
        return None
    masks = store.array(layout.TRACKS_MASKS)
    return masks, {"name": "masks", "metadata": sbl_metadata("masks", video, store), "opacity": 0.5}, "labels"


def prompts_layer(video: VideoReader, store: SessionStore) -> LayerData | None:
    """The user's clicks, as a Points layer with ``animal_id`` and ``positive`` features."""
    if not store.has(layout.TRACKS_MASKS):
        return None
    prompts = prompts_from_json(store.attrs(layout.TRACKS_MASKS).get("prompts") or [])
    data, ids, positive = points_from_prompts(prompts)
    if not len(data):
        return None
    features = {"animal_id": ids, "positive": positive}
    kwargs = {"name": "prompts", "features": features, "metadata": sbl_metadata("prompts", video, store),
              "face_color": [animal_color(i) for i in ids], "border_color": "white",
              "symbol": ["disc" if p else "x" for p in positive], "size": 10}
    return data, kwargs, "points"


def animal_color(animal_id: int) -> str:
    return ANIMAL_COLORS[(int(animal_id) - 1) % len(ANIMAL_COLORS)]


def session_layers(video: VideoReader, store: SessionStore) -> list[LayerData]:
    from napari_sbl.plugin.behaviour_layer import behaviour_layer

    layers = [video_layer(video, store), masks_layer(video, store), behaviour_layer(video, store),
              prompts_layer(video, store)]
    return [layer for layer in layers if layer is not None]


def is_store_path(path: str | Path) -> bool:
    path = Path(path)
    return path.name.endswith(layout.STORE_SUFFIX) and (path / "zarr.json").is_file()

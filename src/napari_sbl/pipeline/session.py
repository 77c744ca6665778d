"""A video and its session store, opened together."""

from __future__ import annotations

from pathlib import Path

from napari_sbl.errors import VideoError
from napari_sbl.io.video import VideoReader
from napari_sbl.store.session import SessionStore, default_store_path


def open_session(video_path: str | Path, store_path: str | Path | None = None) -> tuple[VideoReader, SessionStore]:
    """Open a video and its store (created on first use), reusing the store's cached frame index."""
    path = Path(store_path) if store_path else default_store_path(video_path)
    index = None
    if (path / "zarr.json").is_file():
        index = SessionStore.open(path, mode="r").load_frame_index()
    video = VideoReader(video_path, frame_index=index)
    return video, SessionStore.for_video(video, path)


def open_store_session(store_path: str | Path) -> tuple[VideoReader, SessionStore]:
    """Open a store and the video it was made from (found next to the store first)."""
    store = SessionStore.open(store_path)
    video_path = store.video_path()
    if not video_path.is_file():
        raise VideoError(
            f"{store.path} was made from {video_path}, which cannot be found; put the video next to the store "
            "(or at that path) and open the store again"
        )
    video = VideoReader(video_path, frame_index=store.load_frame_index())
    store.check_video(video.info.to_json())
    return video, store

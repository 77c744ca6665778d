"""What a session store holds, in lines a person reads (widget and CLI share it)."""

from __future__ import annotations

from napari_sbl.store import layout
from napari_sbl.store.intervals import missing
from napari_sbl.store.session import SessionStore


def session_summary(store: SessionStore) -> list[str]:
    video = store.video
    lines = [
        f"video: {video.get('path')}",
        f"  {video.get('n_frames')} frames, {video.get('width')}x{video.get('height')}, "
        f"{video.get('fps')} fps, {video.get('codec')}",
    ]
    lines.extend(_tracks_lines(store))
    lines.append(_annotations_line(store))
    for group, label in ((layout.EMBEDDINGS, "embeddings"), (layout.CLUSTERS, "clusterings"),
                         (layout.PREDICTIONS, "predictions")):
        names = store.children(group)
        lines.append(f"{label}: {', '.join(names) if names else 'none yet'}")
    return lines


def _tracks_lines(store: SessionStore) -> list[str]:
    if not store.has(layout.TRACKS_MASKS):
        return ["tracks: none yet"]
    attrs = store.attrs(layout.TRACKS_MASKS)
    n_frames = int(store.video.get("n_frames", 0))
    gaps = missing(attrs.get("frames_done", []), 0, n_frames)
    left = sum(b - a for a, b in gaps)
    state = "complete" if not left else f"{n_frames - left}/{n_frames} frames done"
    return [f"tracks: {attrs.get('backend', '?')} ({state}), animals {attrs.get('animal_ids', [])}"]


def _annotations_line(store: SessionStore) -> str:
    key = f"{layout.ANNOTATIONS}/class_id"
    if not store.has(key):
        return "annotations: none yet"
    classes = store.attrs(key).get("classes", [])
    names = ", ".join(c.get("name", "?") for c in classes)
    return f"annotations: {store.array(key).shape[0]} segments ({names or 'no classes'})"

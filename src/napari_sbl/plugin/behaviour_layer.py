"""Each animal's mask coloured by its behaviour on that frame (annotations or predictions), lazily.

The colouring is a per-frame lookup (animal id → class) applied to ``tracks/masks`` chunk by chunk
through dask, so opening a long video costs nothing until a frame is shown.
"""

from __future__ import annotations

import numpy as np

from napari_sbl.io.video import VideoReader
from napari_sbl.plugin.layers import LayerData, sbl_metadata
from napari_sbl.store import layout
from napari_sbl.store.session import SessionStore


def class_lookup(labels: np.ndarray, animal_ids: np.ndarray) -> np.ndarray:
    """(T, max_id + 1) int32 table: value ``class + 1`` for each animal id on each frame, 0 = none.

    ``labels`` (T, A) int with -1 = unlabelled; ``animal_ids`` (A,) the ids those columns belong to.
    """
    table = np.zeros((labels.shape[0], int(animal_ids.max(initial=0)) + 1), dtype=np.int32)
    table[:, animal_ids.astype(int)] = np.where(labels >= 0, labels + 1, 0)
    return table


def colour_masks(masks: np.ndarray, lookup: np.ndarray, first_frame: int) -> np.ndarray:
    """Masks (t, H, W) of frames ``first_frame …`` recoloured by ``lookup`` (ids beyond the table → 0)."""
    out = np.zeros(masks.shape, dtype=np.int32)
    for k, frame in enumerate(masks):
        row = lookup[first_frame + k]
        ids = np.minimum(frame, row.size - 1)
        out[k] = np.where(frame < row.size, row[ids], 0)
    return out


def behaviour_layer(video: VideoReader, store: SessionStore) -> LayerData | None:
    """A Labels layer over the masks, coloured by behaviour; None without masks or labels."""
    import dask.array as da

    from napari_sbl.analysis.sequences import available_sources, load_sequences
    from napari_sbl.errors import SblError

    found = available_sources(store)
    if not store.has(layout.TRACKS_MASKS) or not (found["annotations"] or found["predictions"]):
        return None
    try:
        sequences = load_sequences(store)
    except SblError:
        return None
    part = class_lookup(sequences.labels, sequences.animal_ids)
    lookup = np.zeros((video.n_frames, part.shape[1]), dtype=np.int32)
    lookup[sequences.first_frame:sequences.first_frame + part.shape[0]] = part
    masks = da.from_zarr(store.array(layout.TRACKS_MASKS))
    coloured = masks.map_blocks(
        lambda block, block_info=None: colour_masks(block, lookup, block_info[0]["array-location"][0][0]),
        dtype=np.int32,
    )
    colors = {None: "transparent", 0: "transparent"}
    colors.update({k + 1: c.color for k, c in enumerate(sequences.classes)})
    kwargs = {
        "name": f"behaviour ({sequences.source})",
        "opacity": 0.6,
        "colormap": colors,
        "metadata": {**sbl_metadata("behaviour", video, store), "classes": sequences.class_names},
        "features": {"index": list(range(len(sequences.classes) + 1)),
                     "class": ["none", *sequences.class_names]},
    }
    return coloured, kwargs, "labels"

"""Names of everything in a session store (a user-facing contract, documented in docs/store.md).

Keys may be added; existing ones are never renamed.
"""

STORE_SUFFIX = ".sbl.zarr"
ROOT_ATTR = "napari_sbl"

VIDEO_FRAME_TIMES = "video/frame_times"  # (T,) float64 seconds
VIDEO_PTS = "video/pts"  # (T,) int64 presentation timestamps (frame index cache)
VIDEO_KEYFRAMES = "video/keyframes"  # (K,) int64 frame indices where decoding can start

TRACKS = "tracks"
TRACKS_MASKS = "tracks/masks"  # (T, H, W) uint16, 0 = background, value = animal id
TRACKS_CENTROID = "tracks/centroid"  # (T, A, 2) float32 (x, y), NaN where absent
TRACKS_BBOX = "tracks/bbox"  # (T, A, 4) float32 (x0, y0, x1, y1)
TRACKS_AREA = "tracks/area"  # (T, A) float32 pixels
TRACKS_ANIMAL_IDS = "tracks/animal_ids"  # (A,) int32
TRACKS_QUALITY = "tracks/quality"  # (T, A) float32 in [0, 1]

EMBEDDINGS = "embeddings"
CLUSTERS = "clusters"
ANNOTATIONS = "annotations"
CANDIDATES = "annotations/candidates"  # label candidates from clustering and review (see docs/store.md)
PREDICTIONS = "predictions"


def embedding_key(encoder: str, part: str) -> str:
    """``embeddings/<encoder>/<part>``: clips, frames, tokens, animal_id, start_frame, stop_frame."""
    return f"{EMBEDDINGS}/{encoder}/{part}"


def cluster_key(name: str, part: str) -> str:
    """``clusters/<name>/<part>``: embedding_2d, labels."""
    return f"{CLUSTERS}/{name}/{part}"


def prediction_key(model: str, part: str) -> str:
    """``predictions/<model>/<part>``: probs, labels."""
    return f"{PREDICTIONS}/{model}/{part}"

"""Registration: cut each animal out of its frames as a square, centred, optionally body-aligned crop.

Pure functions over arrays. The body axis comes from the mask's second moments; its head-tail
ambiguity is settled by a two-state Viterbi pass that prefers a heading agreeing with the direction of
motion and turning as little as possible between frames (animals mostly walk forwards, and do not flip
end over end between two samples). A crop is an affine warp of the frame: the box (``box_px`` source
pixels) around the centre, rotated so the heading points up when aligning, resampled to ``size_px``.

Conventions: images are (H, W, 3) uint8 RGB; points are (x, y) px; angles are radians in image
coordinates (x right, y down), so heading 0 faces right and pi/2 faces down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from napari_sbl.errors import SblError

ALIGNMENTS = ("body", "none")
ANCHORS = ("first", "every")
BACKGROUNDS = ("keep", "black", "white", "grey", "blur")
NORMALIZATIONS = ("none", "clahe", "histeq", "zscore")
_FILL = {"black": 0, "white": 255, "grey": 128}
MIN_BOX_PX = 16
MOVING_BODY_LENGTHS_PER_S = 0.2
"""Below this speed the direction of motion is noise and does not vote on the heading."""


class RegistrationError(SblError):
    """Registration parameters or inputs that cannot make a crop."""


@dataclass(frozen=True)
class RegistrationParams:
    """How a clip is cut out of its frames (recorded with the embeddings).

    ``box_px``: side of the square cut from the frame; None = ``box_scale`` × the animal's median
    body length. ``size_px``: side of the registered crop; None = the encoder's input size.
    ``anchor``: 'first' keeps the clip's first centre (and heading) for all its frames, so motion
    stays visible; 'every' re-centres (and re-aligns) every frame. ``feather_px`` softens the mask
    edge (in crop pixels) when the background is replaced. ``normalize`` acts on each crop before the
    background is replaced: 'clahe' and 'histeq' per frame, 'zscore' per clip and channel (mapped
    back to uint8 as 128 + 42.5·z, so ±3 standard deviations span 0..255).
    """

    box_px: int | None = None
    box_scale: float = 2.0
    size_px: int | None = None
    align: str = "body"
    anchor: str = "first"
    background: str = "black"
    feather_px: float = 2.0
    grey: bool = False
    normalize: str = "none"

    def __post_init__(self) -> None:
        for name, value, allowed in (("align", self.align, ALIGNMENTS), ("anchor", self.anchor, ANCHORS),
                                     ("background", self.background, BACKGROUNDS),
                                     ("normalize", self.normalize, NORMALIZATIONS)):
            if value not in allowed:
                raise RegistrationError(f"{name} '{value}' is not one of {', '.join(allowed)}")
        if self.box_px is not None and self.box_px < MIN_BOX_PX:
            raise RegistrationError(f"box_px must be at least {MIN_BOX_PX} px (or None: automatic), got {self.box_px}")
        if self.size_px is not None and self.size_px < 4:
            raise RegistrationError(f"size_px must be at least 4 px, got {self.size_px}")
        if self.box_scale <= 0 or self.feather_px < 0:
            raise RegistrationError("box_scale must be positive and feather_px not negative")

    @property
    def channels(self) -> int:
        return 1 if self.grey else 3


@dataclass(frozen=True)
class Jitter:
    """A random but label-preserving change of one registered clip (for cached augmented copies)."""

    rotation_rad: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    mirror: bool = False
    brightness: float = 0.0
    contrast: float = 1.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Jitter:
        """±15° rotation, ±10 % scale, ±5 % shift (of the box), a coin-flip mirror, mild photometry."""
        return cls(rotation_rad=float(rng.uniform(-1, 1) * np.deg2rad(15)), scale=float(rng.uniform(0.9, 1.1)),
                   shift=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
                   mirror=bool(rng.integers(2)), brightness=float(rng.uniform(-12, 12)),
                   contrast=float(rng.uniform(0.85, 1.15)))


# -- body geometry ---------------------------------------------------------------------------------
def mask_moments(labels: np.ndarray, animal_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Area, centre and body axis of each animal in one label image.

    ``labels``: (H, W) integer image, value = animal id. Returns a dict of arrays over the
    (A,) ``animal_ids``: ``area`` px, ``centre`` (A, 2) (x, y), ``axis`` radians in (-pi/2, pi/2]
    (the major axis, undirected), ``major`` and ``minor`` axis lengths (4·sqrt of the eigenvalues:
    the full length of a uniform ellipse); NaN where absent.
    """
    ids = np.asarray(animal_ids, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels)
    return stack_bodies([body_moments(labels == animal_id) for animal_id in ids])


ABSENT_BODY = {"area": 0.0, "centre": (np.nan, np.nan), "axis": np.nan, "major": np.nan, "minor": np.nan}


def body_moments(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> dict[str, float]:
    """One animal's area, centre (x, y), axis, major and minor length (see :func:`mask_moments`) from its
    (h, w) bool ``mask``, a cut whose top-left pixel is ``origin`` (x, y) of the frame."""
    if not mask.size:
        return dict(ABSENT_BODY)
    moments = cv2.moments(np.ascontiguousarray(mask).view(np.uint8), binaryImage=True)
    area = moments["m00"]
    if area <= 0:
        return dict(ABSENT_BODY)
    cxx, cyy, cxy = moments["mu20"] / area, moments["mu02"] / area, moments["mu11"] / area
    spread = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    return {"area": area, "centre": (moments["m10"] / area + origin[0], moments["m01"] / area + origin[1]),
            "axis": 0.5 * np.arctan2(2 * cxy, cxx - cyy), "major": 4 * np.sqrt((cxx + cyy) / 2 + spread + 1 / 12),
            "minor": 4 * np.sqrt(max((cxx + cyy) / 2 - spread, 0) + 1 / 12)}


def stack_bodies(bodies: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """The :func:`body_moments` of A animals as :func:`mask_moments` returns them (arrays over A)."""
    out = {key: np.array([body[key] for body in bodies], dtype=float) for key in ("area", "axis", "major", "minor")}
    out["centre"] = np.array([body["centre"] for body in bodies], dtype=float).reshape(len(bodies), 2)
    return out


def motion_direction(centre: np.ndarray, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direction (radians) and speed (px/s) of (M, 2) centres by central differences (NaN-safe)."""
    filled = fill_gaps(centre)
    if len(filled) < 2:
        return np.zeros(len(filled)), np.zeros(len(filled))
    velocity = np.gradient(filled, times_s, axis=0)
    return np.arctan2(velocity[:, 1], velocity[:, 0]), np.hypot(velocity[:, 0], velocity[:, 1])


def orient_headings(axis: np.ndarray, centre: np.ndarray, times_s: np.ndarray, body_length_px: float,
                    motion_weight: float = 1.0) -> np.ndarray:
    """Directed headings (M,) from undirected body axes (M,): the head is the end the animal moves to.

    Viterbi over two states per frame (``axis`` or ``axis + pi``): a turn between consecutive
    present frames costs its angle, and a heading costs ``-motion_weight·v·cos(heading - motion)``
    where v is the speed in body lengths per second (capped at 2; ignored below 0.2). Still
    stretches keep the orientation they were entered with. NaN where ``axis`` is NaN.
    """
    present = np.flatnonzero(~np.isnan(axis))
    heading = np.full(len(axis), np.nan)
    if not len(present):
        return heading
    direction, speed_px = motion_direction(centre, times_s)
    speed = np.clip(speed_px / max(body_length_px, 1e-6), 0, 2)
    speed[speed < MOVING_BODY_LENGTHS_PER_S] = 0
    options = axis[present, None] + np.array([0.0, np.pi])[None, :]
    emission = -motion_weight * speed[present, None] * np.cos(options - direction[present, None])
    cost = emission[0].copy()
    back = np.zeros((len(present), 2), dtype=np.int64)
    for k in range(1, len(present)):
        turn = np.abs(wrap_angle(options[k][None, :] - options[k - 1][:, None]))  # (previous, current)
        total = cost[:, None] + turn
        back[k] = np.argmin(total, axis=0)
        cost = total[back[k], [0, 1]] + emission[k]
    state = int(np.argmin(cost))
    for k in range(len(present) - 1, -1, -1):
        heading[present[k]] = wrap_angle(options[k, state])
        state = back[k, state]
    return heading


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles wrapped to (-pi, pi]."""
    return -(np.mod(-np.asarray(angle) + np.pi, 2 * np.pi) - np.pi)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """(M, ...) values with NaN rows linearly interpolated in time (edges hold); all-NaN stays NaN."""
    values = np.asarray(values, dtype=float)
    flat = values.reshape(len(values), -1).copy()
    rows = np.arange(len(values))
    for column in range(flat.shape[1]):
        known = ~np.isnan(flat[:, column])
        if known.any() and not known.all():
            flat[:, column] = np.interp(rows, rows[known], flat[known, column])
    return flat.reshape(values.shape)


def fill_heading_gaps(heading: np.ndarray) -> np.ndarray:
    """Headings (M,) with NaN gaps interpolated along the shorter way round."""
    known = ~np.isnan(heading)
    if not known.any():
        return heading.copy()
    unwrapped = heading.copy()
    unwrapped[known] = np.unwrap(heading[known])
    return wrap_angle(fill_gaps(unwrapped))


def box_size_px(params: RegistrationParams, body_length_px: float) -> int:
    """The side of the box cut from the frame: ``box_px``, else ``box_scale`` × body length (even)."""
    if params.box_px is not None:
        return int(params.box_px)
    if not np.isfinite(body_length_px) or body_length_px <= 0:
        return MIN_BOX_PX * 4
    return max(MIN_BOX_PX, 2 * round(float(params.box_scale * body_length_px) / 2))


# -- cropping --------------------------------------------------------------------------------------
def crop_transform(centre: tuple[float, float], heading: float, box_px: float, size_px: int, align: bool,
                   jitter: Jitter | None = None) -> np.ndarray:
    """(2, 3) affine map from crop pixel (u, v) to frame pixel (x, y).

    The crop's centre lands on ``centre``; with ``align`` the crop's "up" is ``heading``.
    """
    jitter = jitter or Jitter()
    angle = (heading + np.pi / 2 if align else 0.0) + jitter.rotation_rad
    step = box_px / size_px / jitter.scale
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * step
    middle = (size_px - 1) / 2.0
    shift = rotation @ (np.array(jitter.shift) * size_px)
    origin = np.asarray(centre, dtype=float) + shift - rotation @ np.array([middle, middle])
    return np.hstack([rotation, origin[:, None]])


def register_clip(frames: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | None, centres: np.ndarray,
                  headings: np.ndarray, box_px: float, size_px: int, params: RegistrationParams,
                  jitter: Jitter | None = None) -> np.ndarray:
    """One animal's registered clip.

    ``frames``: (T, H, W, 3) uint8 RGB (or T such images); ``masks``: (T, H, W) bool, the animal's pixels,
    or None when each frame is (H, W, 4) with the mask (0/255) as its fourth channel (warped with the
    colours in one pass); ``centres``: (T, 2) (x, y) and ``headings``: (T,) radians, finite (fill gaps
    first). Returns (T, size_px, size_px, C) uint8 with C = 1 for ``params.grey``, else 3.
    """
    channels = 4 if masks is None else 3
    if any(np.ndim(frame) != 3 or np.shape(frame)[-1] != channels for frame in frames) or (
            masks is not None and [np.shape(m) for m in masks] != [np.shape(f)[:2] for f in frames]):
        raise RegistrationError(f"frames must be (T, H, W, {channels}){'' if masks is None else ', masks (T, H, W)'};"
                                f" got {[np.shape(f) for f in frames[:1]]}, {np.shape(masks)}")
    if len(centres) != len(frames) or len(headings) != len(frames):
        raise RegistrationError(f"{len(frames)} frames but {len(centres)} centres and {len(headings)} headings")
    if not (np.isfinite(centres).all() and np.isfinite(headings).all()):
        raise RegistrationError("centres and headings must be finite; fill the animal's gaps first")
    crops, alphas = [], []
    for t in range(len(frames)):
        k = 0 if params.anchor == "first" else t
        matrix = crop_transform(centres[k], headings[k], box_px, size_px, params.align == "body", jitter)
        crop, alpha = warp_crop(frames[t], None if masks is None else masks[t], matrix, size_px, params.background)
        crops.append(crop)
        alphas.append(alpha)
    clip = normalize_clip(to_channels(np.stack(crops), params.grey), params.normalize)
    clip = replace_background(clip, np.stack(alphas), params.background, params.feather_px)
    if jitter is not None:
        clip = apply_photometry(clip[:, :, ::-1] if jitter.mirror else clip, jitter)
    return np.ascontiguousarray(clip)


def fill_value(background: str) -> int:
    """The grey level a constant ``background`` fills the crop with (0 for the others)."""
    return _FILL.get(background, 0)


def warp_crop(frame: np.ndarray, mask: np.ndarray | None, matrix: np.ndarray, size_px: int,
              background: str) -> tuple[np.ndarray, np.ndarray]:
    """The crop (S, S, 3) uint8 and the animal's coverage (S, S) float32 in [0, 1] under ``matrix``;
    ``mask`` None: ``frame`` is (H, W, 4) RGB plus the mask (0/255)."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    size = (size_px, size_px)
    if mask is None and background not in ("keep", "blur"):  # both borders constant: one warp of all four
        value = (_FILL.get(background, 0),) * 3 + (0,)
        both = cv2.warpAffine(frame, matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=value)
        return both[..., :3], both[..., 3].astype(np.float32) / 255
    if mask is None:
        frame, mask = cv2.cvtColor(frame, cv2.COLOR_RGBA2RGB), cv2.extractChannel(frame, 3) > 127
    border = cv2.BORDER_REPLICATE if background in ("keep", "blur") else cv2.BORDER_CONSTANT
    value = (_FILL.get(background, 0),) * 3
    crop = cv2.warpAffine(frame, matrix, size, flags=flags, borderMode=border, borderValue=value)
    coverage = cv2.warpAffine(mask.astype(np.uint8) * np.uint8(255), matrix, size, flags=flags,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, coverage.astype(np.float32) / 255


def to_channels(clip: np.ndarray, grey: bool) -> np.ndarray:
    """(T, S, S, 3) RGB → (T, S, S, 1) grey when ``grey``; unchanged otherwise."""
    if not grey:
        return clip
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in clip])[..., None]


def normalize_clip(clip: np.ndarray, method: str) -> np.ndarray:
    """Contrast normalisation of a (T, S, S, C) uint8 clip (see :class:`RegistrationParams`)."""
    if method == "none":
        return clip
    if method == "zscore":
        values = clip.astype(np.float32)
        mean = values.mean(axis=(0, 1, 2), keepdims=True)
        std = values.std(axis=(0, 1, 2), keepdims=True)
        return np.clip(128 + 42.5 * (values - mean) / np.maximum(std, 1.0), 0, 255).round().astype(np.uint8)
    out = np.empty_like(clip)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)) if method == "clahe" else None
    equalize = clahe.apply if clahe is not None else cv2.equalizeHist
    for t, frame in enumerate(clip):
        if frame.shape[-1] == 1:
            out[t, ..., 0] = equalize(np.ascontiguousarray(frame[..., 0]))
        else:
            ycc = cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb)
            ycc[..., 0] = equalize(np.ascontiguousarray(ycc[..., 0]))
            out[t] = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    return out


def replace_background(clip: np.ndarray, alpha: np.ndarray, background: str, feather_px: float) -> np.ndarray:
    """Blend the animal over a constant or blurred background; ``alpha``: (T, S, S) coverage."""
    if background == "keep":
        return clip
    weights = feathered(alpha, feather_px)
    out = np.empty_like(clip)
    constant = np.full(clip.shape[1:], _FILL.get(background, 0), dtype=np.uint8)
    sigma = max(clip.shape[1] / 16, 1.0)
    for t, frame in enumerate(clip):  # OpenCV's per-pixel blend: one pass, no float copies of the clip
        behind = cv2.GaussianBlur(frame, (0, 0), sigma).reshape(frame.shape) if background == "blur" else constant
        out[t] = cv2.blendLinear(frame, behind, weights[t], 1 - weights[t]).reshape(frame.shape)
    return out


def feathered(alpha: np.ndarray, feather_px: float) -> np.ndarray:
    """Hard coverage → (T, S, S) weights; with ``feather_px`` the edge fades outwards over that width."""
    hard = (alpha >= 0.5).astype(np.float32)
    if feather_px <= 0:
        return hard
    radius = max(1, round(float(feather_px)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    soft = [cv2.GaussianBlur(cv2.dilate(frame, kernel), (0, 0), feather_px / 2) for frame in hard]
    return np.clip(np.maximum(np.stack(soft), hard), 0, 1)


def apply_photometry(clip: np.ndarray, jitter: Jitter) -> np.ndarray:
    values = (clip.astype(np.float32) - 128) * jitter.contrast + 128 + jitter.brightness
    return np.clip(values.round(), 0, 255).astype(np.uint8)

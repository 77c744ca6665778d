"""The motion encoder: weight-free features of posture and movement, per animal and sampled frame.

Per frame it measures (1) egocentric posture: the first principal components of grey, body-aligned,
black-background crops, the PCA fitted once per store and saved at ``embeddings/motion/posture_pca``
(reused on resume, so a resumed run computes the same numbers); (2) kinematics from the track: speed
and acceleration in body lengths per second, angular velocity of the heading, area relative to the
animal's median, elongation (major / minor axis) and distance to the nearest other animal in body
lengths; (3) Morlet wavelet amplitudes of the posture components, speed and angular velocity at
log-spaced frequencies, as MotionMapper does, so rhythmic local movement (grooming) separates from
stillness and from steady turning. Features are z-scored over the store (statistics saved with the
embeddings) and pooled to clips as the mean over the clip's frames, exactly like the VideoPrism path.

The time series cover every sample of the plan, so wavelets see context beyond one clip; the whole
table is computed in :meth:`MotionEncoder.prepare` and :meth:`MotionEncoder.encode` only looks rows up.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
from scipy.ndimage import gaussian_filter1d

from napari_sbl.embed.clips import EmbedParams, MotionParams, TrackGeometry
from napari_sbl.embed.encoder import ClipBatch, EmbeddingLayout, EncodedBatch, EncoderContext
from napari_sbl.embed.registration import (
    Jitter,
    RegistrationParams,
    box_size_px,
    fill_gaps,
    fill_heading_gaps,
    register_clip,
)
from napari_sbl.embed.wavelets import log_frequencies, morlet_amplitudes
from napari_sbl.store import layout
from napari_sbl.store.session import store_ready

KINEMATICS = ("speed", "acceleration", "angular_velocity", "area", "elongation", "nearest_distance")
WAVELET_KINEMATICS = ("speed", "angular_velocity")
NO_NEIGHBOUR_BODY_LENGTHS = 10.0
"""Distance given to an animal with no other animal in view (and the cap for far neighbours)."""
PCA_KEY = layout.embedding_key("motion", "posture_pca")


class MotionEncoder:
    """Posture, kinematics and their wavelet spectra per frame; clip = mean over its frames."""

    name = "motion"
    needs_crops = False

    def __init__(self, params: EmbedParams) -> None:
        self.params = params
        self.motion: MotionParams = params.motion
        self.tables: dict[int, np.ndarray] = {}
        self._record: dict = {}

    def registration(self) -> RegistrationParams:
        return posture_registration(self.params.registration, self.motion)

    def feature_names(self) -> tuple[str, ...]:
        posture = [f"posture_pc{i + 1}" for i in range(self.motion.posture_components)]
        channels = [*posture, *WAVELET_KINEMATICS]
        bands = [f"{channel}@band{k + 1}" for channel in channels for k in range(self.motion.n_freqs)]
        return (*posture, *KINEMATICS, *bands)

    def layout(self) -> EmbeddingLayout:
        names = self.feature_names()
        return EmbeddingLayout(dim=len(names), grid_cells=0, feature_names=names)

    def provenance(self) -> dict:
        return {"encoder": self.name, "model": "motion-features-v1", "weights": None,
                "checkpoint_sha256": self._record.get("posture_pca_sha256"), **self._record}

    def prepare(self, context: EncoderContext) -> None:
        """Posture crops of every sample, the store's posture PCA, then the feature table per copy."""
        registration = self.registration()
        jitters = self._jitters(context.params)
        crops = posture_crops(context, registration, jitters)
        mirrored = context.params.flip_average  # then fit on both views, so a mirrored video gives the same
        pca = load_or_fit_pca(context, crops[:2] if mirrored else crops[:1], registration, self.motion)
        rate = context.plan.sample_fps
        top = max(self.motion.max_freq_fraction * rate, 1e-3)
        frequencies = log_frequencies(min(self.motion.min_freq_hz, top / 4), top, self.motion.n_freqs)
        series = [time_series(context.geometry, project(crop, pca), bool(jitter and jitter.mirror))
                  for crop, jitter in zip(crops, jitters, strict=True)]
        scales = channel_scales(series[:2] if mirrored else series[:1], context.geometry.present)
        raw = [frame_features(s, rate, frequencies, self.motion.omega0, scales) for s in series]
        main = (raw[0] + raw[1]) / 2 if context.params.flip_average else raw[0]
        copies = raw[2:] if context.params.flip_average else raw[1:]
        mean, std = feature_statistics(main, context.geometry.present)
        self.tables = {k: ((table - mean) / std).astype(np.float32) for k, table in enumerate([main, *copies])}
        self._record = {"frequencies_hz": frequencies.round(4).tolist(), "feature_mean": mean.tolist(),
                        "feature_std": std.tolist(), "posture_pca": PCA_KEY, "posture_pca_sha256": pca.sha256,
                        "feature_names": list(self.feature_names())}

    def encode(self, batch: ClipBatch) -> EncodedBatch:
        if batch.copy not in self.tables:
            raise RuntimeError("MotionEncoder.encode called before prepare (or for a copy it did not prepare)")
        frames = self.tables[batch.copy][batch.rows, np.asarray(batch.columns)[:, None]]
        return EncodedBatch(clips=frames.mean(axis=1), frames=frames, tokens=None)

    def _jitters(self, params: EmbedParams) -> list[Jitter | None]:
        """Copy 0 (plain), its mirror when flip-averaging, then one constant jitter per augmented copy."""
        jitters: list[Jitter | None] = [None]
        if params.flip_average:
            jitters.append(Jitter(mirror=True))
        for copy in range(1, params.augment_copies + 1):
            jitters.append(Jitter.draw(np.random.default_rng([params.seed, copy])))
        return jitters


# -- posture -----------------------------------------------------------------------------------------
class PosturePca:
    """Mean (K,) and components (P, K) of flattened posture crops, with the file's sha256."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, explained: np.ndarray) -> None:
        self.mean, self.components, self.explained = mean, components, explained

    def as_array(self) -> np.ndarray:
        return np.vstack([self.mean[None, :], self.components]).astype(np.float32)

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.as_array().tobytes()).hexdigest()


def posture_registration(registration: RegistrationParams, motion: MotionParams) -> RegistrationParams:
    """The user's box and contrast settings, but egocentric: aligned, re-centred, grey, black background."""
    return replace(registration, size_px=motion.posture_size_px, align="body", anchor="every",
                   background="black", feather_px=1.0, grey=True)


def posture_crops(context: EncoderContext, registration: RegistrationParams,
                  jitters: list[Jitter | None]) -> list[np.ndarray]:
    """(M, A, S·S) float32 crops in [0, 1] per jitter, NaN where the animal is absent."""
    geometry = context.geometry
    size = int(registration.size_px)
    count, animals = geometry.area.shape
    boxes = [box_size_px(registration, length) for length in geometry.body_length_px()]
    filled = [geometry.filled(column) for column in range(animals)]
    crops = [np.full((count, animals, size * size), np.nan, dtype=np.float32) for _ in jitters]
    context.reporter.start(count, "motion features: posture")
    for row, frame, labels in context.read_samples():
        context.reporter.check()
        for column in np.flatnonzero(geometry.present[row]):
            mask = (labels == geometry.animal_ids[column])[None]
            centre, heading = filled[column][0][row : row + 1], filled[column][1][row : row + 1]
            for k, jitter in enumerate(jitters):
                crop = register_clip(frame[None], mask, centre, heading, boxes[column], size, registration, jitter)
                crops[k][row, column] = crop.reshape(-1) / np.float32(255)
        context.reporter.advance()
    return crops


def fit_posture_pca(vectors: np.ndarray, n_components: int, max_samples: int) -> PosturePca:
    """PCA of (n, K) vectors on at most ``max_samples`` evenly spaced ones; signs made deterministic."""
    if len(vectors) > max_samples:
        vectors = vectors[np.linspace(0, len(vectors) - 1, max_samples).round().astype(int)]
    mean = vectors.mean(axis=0) if len(vectors) else np.zeros(vectors.shape[1])
    _, singular, basis = np.linalg.svd(vectors - mean, full_matrices=False)
    components = np.zeros((n_components, vectors.shape[1]))
    kept = min(n_components, len(basis))
    components[:kept] = basis[:kept]
    signs = np.sign(components[np.arange(n_components), np.argmax(np.abs(components), axis=1)])
    components *= np.where(signs == 0, 1, signs)[:, None]
    variance = singular**2
    explained = np.zeros(n_components)
    explained[:kept] = variance[:kept] / max(variance.sum(), 1e-12)
    return PosturePca(mean, components, explained)


def load_or_fit_pca(context: EncoderContext, views: list[np.ndarray], registration: RegistrationParams,
                    motion: MotionParams) -> PosturePca:
    """The store's posture PCA when it was made with these settings (and no overwrite), else a new fit
    on the present crops of ``views`` ((M, A, K) each: the crops, and their mirror when flip-averaging)."""
    settings = store_ready({"size_px": motion.posture_size_px, "n_components": motion.posture_components,
                            "pca_samples": motion.pca_samples, "registration": asdict(registration),
                            "views": len(views), "sample_frames": len(context.plan.sample_frames)})
    store = context.store
    if store.has(PCA_KEY) and not context.overwrite and store.attrs(PCA_KEY).get("settings") == settings:
        stored = store.read(PCA_KEY).astype(np.float64)
        return PosturePca(stored[0], stored[1:], np.asarray(store.attrs(PCA_KEY).get("explained_variance", [])))
    present = context.geometry.present
    vectors = np.concatenate([view[present] for view in views]).astype(np.float64)
    pca = fit_posture_pca(vectors, motion.posture_components, motion.pca_samples)
    store.write_array(PCA_KEY, pca.as_array(), attrs={"settings": settings, "rows": "mean, then components",
                                                      "explained_variance": pca.explained.tolist(),
                                                      "fitted_on": int(min(len(vectors), motion.pca_samples))})
    stored = pca.as_array().astype(np.float64)  # what a resumed run reads back, to the last bit
    return PosturePca(stored[0], stored[1:], pca.explained)


def project(crops: np.ndarray, pca: PosturePca) -> np.ndarray:
    """(M, A, K) crops → (M, A, P) posture scores, gaps (absent rows) interpolated per animal."""
    scores = (crops.astype(np.float64) - pca.mean) @ pca.components.T
    return np.stack([fill_gaps(scores[:, column]) for column in range(scores.shape[1])], axis=1)


# -- kinematics and features -------------------------------------------------------------------------
def kinematics(geometry: TrackGeometry, column: int) -> np.ndarray:
    """(M, 6) speed, acceleration, angular velocity, relative area, elongation, nearest distance."""
    times = geometry.times_s
    length = float(np.nan_to_num(geometry.body_length_px()[column], nan=1.0)) or 1.0
    centre = np.nan_to_num(fill_gaps(geometry.centre[:, column]))
    velocity = np.gradient(gaussian_filter1d(centre, 1.0, axis=0, mode="nearest"), times, axis=0) / length
    speed = np.hypot(velocity[:, 0], velocity[:, 1])
    acceleration = np.gradient(gaussian_filter1d(speed, 1.0, mode="nearest"), times)
    heading = np.unwrap(np.nan_to_num(fill_heading_gaps(geometry.heading[:, column])))
    angular = np.gradient(gaussian_filter1d(heading, 1.0, mode="nearest"), times)
    present = geometry.present[:, column]
    area = fill_gaps(np.where(present, geometry.area[:, column], np.nan))
    area = np.nan_to_num(area / max(float(np.nanmedian(area)) if present.any() else 1.0, 1e-6), nan=1.0)
    ratio = np.where(present, geometry.major[:, column] / np.maximum(geometry.minor[:, column], 1e-6), np.nan)
    elongation = np.nan_to_num(fill_gaps(ratio), nan=1.0)
    return np.stack([speed, acceleration, angular, area, elongation, nearest_distance(geometry, column, length)], 1)


def nearest_distance(geometry: TrackGeometry, column: int, body_length_px: float) -> np.ndarray:
    """(M,) distance to the nearest other present animal in body lengths, capped; gaps interpolated."""
    others = [b for b in range(geometry.centre.shape[1]) if b != column]
    cap = NO_NEIGHBOUR_BODY_LENGTHS
    if not others:
        return np.full(len(geometry.times_s), cap)
    gaps = geometry.centre[:, others] - geometry.centre[:, column : column + 1]
    distance = np.hypot(gaps[..., 0], gaps[..., 1]) / body_length_px
    known = ~np.all(np.isnan(distance), axis=1)
    nearest = np.full(len(distance), np.nan)
    nearest[known] = np.nanmin(distance[known], axis=1)
    return np.clip(np.nan_to_num(fill_gaps(nearest), nan=cap), 0, cap)


def time_series(geometry: TrackGeometry, posture: np.ndarray, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """Posture (M, A, P) and kinematics (M, A, 6); a mirrored copy turns the other way."""
    moves = np.stack([kinematics(geometry, column) for column in range(posture.shape[1])], axis=1)
    if mirrored:
        moves[..., KINEMATICS.index("angular_velocity")] *= -1
    return posture, moves


def _wavelet_channels(series: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    posture, moves = series
    picks = [KINEMATICS.index(name) for name in WAVELET_KINEMATICS]
    return np.concatenate([posture, moves[..., picks]], axis=-1)


def channel_scales(views: list[tuple[np.ndarray, np.ndarray]], present: np.ndarray) -> np.ndarray:
    """Per wavelet channel, its standard deviation over the store's present frames of all ``views`` (one
    scale for all animals, so a still animal's noise is not blown up to look like movement)."""
    channels = np.concatenate([_wavelet_channels(series)[present] for series in views])
    return np.maximum(channels.std(axis=0) if len(channels) else np.ones(channels.shape[-1]), 1e-6)


def frame_features(series: tuple[np.ndarray, np.ndarray], rate_hz: float, frequencies: np.ndarray, omega0: float,
                   scales: np.ndarray) -> np.ndarray:
    """(M, A, D) raw features: posture, kinematics, then log(1 + amplitude / scale) per channel and band."""
    posture, moves = series
    channels = _wavelet_channels(series) / scales
    spectra = [morlet_amplitudes(channels[:, column], rate_hz, frequencies, omega0)
               for column in range(posture.shape[1])]
    bands = np.log1p(np.stack(spectra, axis=1)).reshape(*posture.shape[:2], -1)
    return np.concatenate([posture, moves, bands], axis=-1)


def feature_statistics(table: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (floored) of each feature over present frames."""
    values = table[present]
    if not len(values):
        return np.zeros(table.shape[-1]), np.ones(table.shape[-1])
    return values.mean(axis=0), np.maximum(values.std(axis=0), 1e-6)

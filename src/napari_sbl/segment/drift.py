"""Drift detection for memory-based trackers: quality per mask, and when and how to re-prompt.

A tracker that follows an animal through its own memory (SAM2) can drift onto a neighbour or the
floor, or lose the animal after an occlusion for good. :class:`DriftMonitor` checks each frame's
masks against a constant-velocity Kalman prediction of each animal's box, scores them (area change
and agreement with the prediction, in [0, 1]) and asks for a recovery when a mask jumps, changes
area abruptly or vanishes where the animal should be: a box prompt at the predicted position, or,
after an empty stretch, one of the animal's earlier good masks moved there. Pure numpy and
backend-independent; the SAM2 backend (:mod:`.sam2_propagation`) applies the decisions. The box
geometry and the Kalman filter are in :mod:`.box_motion`.
"""

from __future__ import annotations

import copy
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_sbl.segment.box_motion import (
    BoxKalman,
    body_length,
    box_area,
    box_centre,
    box_from_state,
    box_iou,
    box_overlap,
)
from napari_sbl.segment.measure import LabelMeasurements

REASONS = ("jump", "area", "empty", "reseed")  # far from the prediction, area out of range, gone, gone for long


@dataclass(frozen=True)
class DriftParams:
    """When a mask counts as drifted and how recovery behaves; lengths are in body lengths.

    A body length is the long side of the animal's predicted box. ``recover=False`` keeps the
    quality scores but never re-prompts.
    """

    recover: bool = True
    jump_body_lengths: float = 1.0  # centroid this far from the prediction = drift
    area_ratio: float = 2.0  # area outside [reference / r, reference * r] = drift
    empty_stretch_frames: int = 5  # frames gone before re-seeding from the mask bank
    max_missing_frames: int = 60  # gone longer than this: the prediction is stale, never recover
    cooldown_frames: int = 10  # frames between two recovery attempts for one animal
    bank_size: int = 8  # good masks kept per animal for re-seeding
    bank_quality: float = 0.6  # quality a mask needs to enter the bank
    max_recovery_cond_frames: int = 2  # conditioning frames made by recoveries kept per animal (SAM2)
    max_recovery_cond_age: int = 30  # frames a recovery stays a conditioning frame (SAM2: then batches re-form)
    recovered_quality: float = 0.25  # quality cap of a recovered frame, so it is listed for review
    box_margin: float = 0.1  # the prompted box is the predicted one grown by this share of its size
    occluded_fraction: float = 0.5  # predicted box this much covered by other animals = occluded: wait
    area_rate: float = 0.1  # per-frame weight of a new mask in the reference area

    def __post_init__(self) -> None:
        if self.area_ratio <= 1.0:
            raise ValueError(f"area_ratio must be above 1, got {self.area_ratio}")
        if self.jump_body_lengths <= 0:
            raise ValueError(f"jump_body_lengths must be positive, got {self.jump_body_lengths}")
        for name in ("empty_stretch_frames", "max_missing_frames", "cooldown_frames", "bank_size",
                     "max_recovery_cond_frames", "max_recovery_cond_age"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class AnimalObservation:
    """One animal's mask on one frame: ``area_px``; ``centroid`` (2,) and ``box`` (4,) (x0, y0, x1, y1)
    px, x1/y1 exclusive, NaN when absent."""

    area_px: float
    centroid: np.ndarray
    box: np.ndarray

    @property
    def present(self) -> bool:
        return self.area_px > 0


ABSENT = AnimalObservation(0.0, np.full(2, np.nan), np.full(4, np.nan))


def observe_labels(labels: np.ndarray, animal_ids: Sequence[int]) -> dict[int, AnimalObservation]:
    """Measure each animal of an (H, W) label image (see :func:`~.measure.measure_labels`)."""
    return observations_from(LabelMeasurements.of(labels, np.asarray(animal_ids)))


def observations_from(measurements: LabelMeasurements) -> dict[int, AnimalObservation]:
    """Each measured animal as an observation, keyed by its id."""
    m = measurements
    return {int(i): AnimalObservation(float(m.area[k]), m.centroid[k].astype(np.float64), m.bbox[k].astype(np.float64))
            for k, i in enumerate(m.animal_ids)}


@dataclass(frozen=True)
class Recovery:
    """A request to re-prompt one animal on the current frame: with ``box`` (4,) (x0, y0, x1, y1)
    px, or with ``mask`` (H, W) bool (a banked mask placed at the predicted position)."""

    animal_id: int
    reason: str
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def prompt(self) -> str:
        return "mask" if self.mask is not None else "box"


@dataclass(frozen=True)
class RecoveryRecord:
    """One recovery; ``accepted`` is False when the new mask scored no better and the old one was kept."""

    frame_index: int
    animal_id: int
    reason: str
    prompt: str
    accepted: bool
    quality_before: float
    quality_after: float


def recovery_counts(records: Iterable[RecoveryRecord]) -> dict:
    """Counts for provenance: attempts, accepted ones, and attempts by reason and by prompt."""
    records = list(records)
    return {
        "attempted": len(records),
        "accepted": sum(r.accepted for r in records),
        "by_reason": dict(Counter(r.reason for r in records)),
        "by_prompt": dict(Counter(r.prompt for r in records)),
    }


# ---------------------------------------------------------------------------- quality
def mask_quality(observation: AnimalObservation, predicted_box: np.ndarray | None, reference_area_px: float) -> float:
    """(0, 1] for a present mask, 0 for an absent one; 1 when there is nothing to compare with yet.

    Area score ``exp(-2 |ln(area / reference)|)`` (as the classical tracker scores) times motion
    agreement: half the IoU with the predicted box, half ``exp(-distance / body length)`` between
    the centroid and the predicted centre. Never exactly 0 when present (0 means absent).
    """
    if not observation.present:
        return 0.0
    if predicted_box is None:
        return 1.0
    area_score = np.exp(-2.0 * abs(np.log(observation.area_px / max(reference_area_px, 1.0))))
    distance = float(np.hypot(*(_position(observation) - box_centre(predicted_box))))
    motion = 0.5 * box_iou(observation.box, predicted_box) + 0.5 * np.exp(-distance / body_length(predicted_box))
    return float(np.clip(area_score * motion, 1e-3, 1.0))


def _position(observation: AnimalObservation) -> np.ndarray:
    """The centroid where boxes measure it: pixel i spans [i, i + 1), so its centre is i + 0.5."""
    return observation.centroid + 0.5


def _measurement(observation: AnimalObservation) -> np.ndarray:
    box = observation.box
    return np.array([*_position(observation), box[2] - box[0], box[3] - box[1]])


# ---------------------------------------------------------------------------- mask bank
@dataclass(frozen=True)
class BankedMask:
    """A good mask cropped to its box: ``mask`` (h, w) bool, ``centroid_in_crop`` (2,) (x, y) px."""

    frame_index: int
    mask: np.ndarray
    centroid_in_crop: np.ndarray


class MaskBank:
    """The last ``size`` good masks of one animal, to re-seed it after an occlusion."""

    def __init__(self, size: int) -> None:
        self.masks: deque[BankedMask] = deque(maxlen=max(int(size), 0))

    def add(self, frame_index: int, labels: np.ndarray, animal_id: int, observation: AnimalObservation) -> None:
        x0, y0, x1, y1 = (int(v) for v in observation.box)
        crop = labels[y0:y1, x0:x1] == animal_id
        self.masks.append(BankedMask(frame_index, crop, _position(observation) - (x0, y0)))

    def best_at(self, predicted_box: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray | None:
        """The banked mask that, moved so its centroid sits on the predicted centre, best fills the
        predicted box (highest IoU; the newest wins ties), pasted into an (H, W) bool frame.

        None when the bank is empty or the moved mask falls outside the frame.
        """
        centre = box_centre(predicted_box)
        best, best_iou = None, -1.0
        for banked in reversed(self.masks):
            height, width = banked.mask.shape
            origin = centre - banked.centroid_in_crop
            iou = box_iou(np.array([origin[0], origin[1], origin[0] + width, origin[1] + height]), predicted_box)
            if iou > best_iou:
                best, best_iou = (banked.mask, origin), iou
        return None if best is None else paste_mask(best[0], best[1], frame_shape)


def paste_mask(crop: np.ndarray, origin_xy: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray | None:
    """(H, W) bool frame with ``crop`` placed at (rounded) ``origin_xy``; None if nothing lands inside."""
    height, width = frame_shape
    x0, y0 = (round(float(v)) for v in origin_xy)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + crop.shape[1], width), min(y0 + crop.shape[0], height)
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    frame = np.zeros((height, width), dtype=bool)
    frame[sy0:sy1, sx0:sx1] = crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return frame if frame.any() else None


# ---------------------------------------------------------------------------- the monitor
class AnimalMotion:
    """One animal as the monitor follows it: box filter, reference area, frames unseen, cool-down, bank."""

    def __init__(self, bank_size: int) -> None:
        self.filter: BoxKalman | None = None
        self.reference_area_px = 0.0
        self.missing = 0
        self.cooldown = 0
        self.bank = MaskBank(bank_size)

    def predicted_box(self) -> np.ndarray | None:
        """(x0, y0, x1, y1) expected on the coming frame; None before the animal was first seen."""
        return None if self.filter is None else box_from_state(self.filter.predicted_state())

    def observe(self, observation: AnimalObservation, area_rate: float, restart: bool = False) -> None:
        measurement = _measurement(observation)
        if self.filter is None or restart:
            self.filter, self.reference_area_px = BoxKalman(measurement), observation.area_px
        else:
            self.filter.predict()
            self.filter.update(measurement)
            self.reference_area_px += area_rate * (observation.area_px - self.reference_area_px)
        self.missing = 0

    def miss(self) -> None:
        if self.filter is not None:
            self.filter.predict()
            self.filter.damp_velocity(0.8)
        self.missing += 1


class DriftMonitor:
    """Scores each frame's masks and decides recoveries, for every animal of one tracking pass.

    Per frame the tracker calls :meth:`assess` (what to re-prompt, at most one request per animal),
    applies the requests it can, then :meth:`commit` with the masks it keeps (which advances the
    predictions and returns the quality per animal). Frames must come in tracking order; a pass in
    the other direction starts from a :meth:`copy` taken on its first frame.
    """

    def __init__(self, params: DriftParams, animal_ids: Sequence[int], frame_shape: tuple[int, int]) -> None:
        self.params = params
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.animals = {int(i): AnimalMotion(params.bank_size) for i in animal_ids}

    def predicted_box(self, animal_id: int) -> np.ndarray | None:
        return self.animals[animal_id].predicted_box()

    def score(self, animal_id: int, observation: AnimalObservation) -> float:
        """Quality of ``observation`` against the animal's prediction (see :func:`mask_quality`)."""
        motion = self.animals[animal_id]
        return mask_quality(observation, motion.predicted_box(), motion.reference_area_px)

    def assess(self, observations: Mapping[int, AnimalObservation], prompted: Collection[int] = ()) -> list[Recovery]:
        """Recoveries to try on this frame; never for animals the user prompted on it."""
        if not self.params.recover:
            return []
        requests = [self._assess_animal(i, observations) for i in self.animals if i not in prompted]
        return [r for r in requests if r is not None]

    def commit(self, frame_index: int, observations: Mapping[int, AnimalObservation], labels: np.ndarray | None = None,
               prompted: Collection[int] = (), attempts: Mapping[int, bool] | None = None) -> dict[int, float]:
        """Take the frame's final masks; return quality per animal id (0 = absent).

        ``labels`` (H, W), when given, feeds the mask bank. ``attempts`` maps each animal a recovery
        was tried for to whether it was kept: both start the cool-down; a kept one's quality is
        capped at ``recovered_quality`` and never banked. Prompted animals score 1; they, and animals
        back after an empty stretch, restart their motion model where they are now.
        """
        attempts = attempts or {}
        quality = {}
        for animal_id, motion in self.animals.items():
            observation = observations.get(animal_id, ABSENT)
            recovered = attempts.get(animal_id, False)
            is_prompted = animal_id in prompted
            score = float(observation.present) if is_prompted else self.score(animal_id, observation)
            if recovered:
                score = min(score, self.params.recovered_quality)
            if observation.present:
                restart = is_prompted or motion.missing > self.params.empty_stretch_frames
                motion.observe(observation, self.params.area_rate, restart=restart)
                if labels is not None and score >= self.params.bank_quality and not recovered:
                    motion.bank.add(frame_index, labels, animal_id, observation)
            else:
                motion.miss()
            motion.cooldown = self.params.cooldown_frames if animal_id in attempts else max(motion.cooldown - 1, 0)
            quality[animal_id] = score
        return quality

    def copy(self) -> DriftMonitor:
        return copy.deepcopy(self)

    def _assess_animal(self, animal_id: int, observations: Mapping[int, AnimalObservation]) -> Recovery | None:
        params, motion = self.params, self.animals[animal_id]
        predicted = motion.predicted_box()
        if predicted is None or motion.cooldown > 0 or motion.missing > params.max_missing_frames:
            return None
        if self._visible_fraction(predicted) < 0.5:  # leaving the frame: absence is expected
            return None
        observation = observations.get(animal_id, ABSENT)
        if observation.present:
            reason = self.drift_reason(observation, predicted, motion.reference_area_px)
            return None if reason is None else Recovery(animal_id, reason, box=self._prompt_box(predicted))
        if self._covered_by_others(animal_id, predicted, observations) >= params.occluded_fraction:
            return None  # hidden under another animal: a box there would segment that one
        if motion.missing == 0:
            return Recovery(animal_id, "empty", box=self._prompt_box(predicted))
        if motion.missing >= params.empty_stretch_frames:
            mask = motion.bank.best_at(predicted, self.frame_shape)
            box = None if mask is not None else self._prompt_box(predicted)
            return Recovery(animal_id, "reseed", box=box, mask=mask)
        return None

    def drift_reason(self, observation: AnimalObservation, predicted_box: np.ndarray,
                     reference_area_px: float) -> str | None:
        """Why a present mask counts as drifted from the prediction ("jump", "area"), or None."""
        distance = float(np.hypot(*(_position(observation) - box_centre(predicted_box))))
        if distance > self.params.jump_body_lengths * body_length(predicted_box):
            return "jump"
        ratio = observation.area_px / max(reference_area_px, 1.0)
        if not 1.0 / self.params.area_ratio <= ratio <= self.params.area_ratio:
            return "area"
        return None

    def _prompt_box(self, predicted_box: np.ndarray) -> np.ndarray:
        height, width = self.frame_shape
        grow = self.params.box_margin / 2 * np.array([-1, -1, 1, 1]) * body_length(predicted_box)
        box = predicted_box + grow
        return np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])

    def _visible_fraction(self, box: np.ndarray) -> float:
        height, width = self.frame_shape
        return box_overlap(box, np.array([0, 0, width, height])) / max(box_area(box), 1e-9)

    def _covered_by_others(self, animal_id: int, box: np.ndarray,
                           observations: Mapping[int, AnimalObservation]) -> float:
        covered = sum(box_overlap(box, o.box) for i, o in observations.items() if i != animal_id and o.present)
        return min(covered / max(box_area(box), 1e-9), 1.0)

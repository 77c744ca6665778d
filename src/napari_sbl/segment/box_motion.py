"""Box geometry and the constant-velocity Kalman filter that predicts where an animal's box goes next.

Boxes are (x0, y0, x1, y1) px with x1/y1 exclusive. Pure numpy and independent of masks and
trackers: :mod:`.drift` builds its quality scores, drift tests and recovery prompts on these.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 when either is empty or NaN."""
    inter = box_overlap(a, b)
    return inter / (box_area(a) + box_area(b) - inter) if inter > 0 else 0.0


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return float(width * height) if width > 0 and height > 0 else 0.0


def box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def box_centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def body_length(box: np.ndarray) -> float:
    return max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0)


class BoxKalman:
    """Constant-velocity Kalman filter of one animal's box: state (cx, cy, w, h, vx, vy) px, px/frame.

    The position is the mask centroid (steadier than the box centre when legs or a tail move), the
    size the box's width and height. Noise scales with the animal's size, as in SORT-style
    trackers, so the same settings fit a fly and a rat.
    """

    POSITION_NOISE, VELOCITY_NOISE, MEASUREMENT_NOISE = 1 / 20, 1 / 25, 1 / 20
    TRANSITION = np.eye(6) + np.eye(6, k=4)
    MEASURE = np.eye(4, 6)

    def __init__(self, measurement: np.ndarray) -> None:
        self.x = np.concatenate([np.asarray(measurement, dtype=np.float64), [0.0, 0.0]])
        size = self._size()
        position, velocity = 2 * self.POSITION_NOISE * size, 10 * self.VELOCITY_NOISE * size
        self.p = np.diag(np.array([position] * 4 + [velocity] * 2) ** 2)

    def _size(self) -> float:
        return max(float(self.x[2]), float(self.x[3]), 1.0)

    def predicted_state(self) -> np.ndarray:
        """(cx, cy, w, h) expected on the next frame."""
        return (self.TRANSITION @ self.x)[:4]

    def predict(self) -> None:
        size = self._size()
        std = np.array([self.POSITION_NOISE * size] * 4 + [self.VELOCITY_NOISE * size] * 2)
        self.x = self.TRANSITION @ self.x
        self.p = self.TRANSITION @ self.p @ self.TRANSITION.T + np.diag(std**2)

    def update(self, measurement: np.ndarray) -> None:
        noise = np.diag((self.MEASUREMENT_NOISE * self._size() * np.ones(4)) ** 2)
        innovation = np.asarray(measurement, dtype=np.float64) - self.MEASURE @ self.x
        covariance = self.MEASURE @ self.p @ self.MEASURE.T + noise
        gain = self.p @ self.MEASURE.T @ np.linalg.inv(covariance)
        self.x = self.x + gain @ innovation
        self.p = (np.eye(6) - gain @ self.MEASURE) @ self.p

    def damp_velocity(self, factor: float) -> None:
        """Slow down while the animal is unseen, so a long gap does not fling the prediction away."""
        self.x[4:] *= factor


def box_from_state(state: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) → (x0, y0, x1, y1)."""
    return np.concatenate([state[:2] - state[2:] / 2, state[:2] + state[2:] / 2])

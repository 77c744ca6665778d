"""Morlet wavelet amplitudes of time series, as MotionMapper (Berman et al. 2014) uses for posture.

For each frequency f the Morlet wavelet with non-dimensional frequency ``omega0`` has the scale
``s = (omega0 + sqrt(2 + omega0²)) / (4·pi·f)`` seconds (Torrence & Compo's Fourier factor), so its
response peaks at f. Amplitudes are normalised so that a sinusoid of amplitude A at a frequency of the
bank reads A there: the numbers are in the signal's own units, whatever the scale.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

KERNEL_HALF_WIDTH_SCALES = 4.0
"""The Gaussian envelope is cut at this many scales either side (exp(-8) ≈ 3e-4)."""


def log_frequencies(min_hz: float, max_hz: float, count: int) -> np.ndarray:
    """``count`` frequencies spaced evenly on a log axis from ``min_hz`` to ``max_hz`` (Hz)."""
    if count < 1 or min_hz <= 0 or max_hz < min_hz:
        raise ValueError(f"need count >= 1 and 0 < min_hz <= max_hz; got {count}, {min_hz}, {max_hz}")
    return np.geomspace(min_hz, max_hz, count) if count > 1 else np.array([float(min_hz)])


def morlet_scale_s(frequency_hz: float, omega0: float = 5.0) -> float:
    """Wavelet scale (seconds) whose response peaks at ``frequency_hz``."""
    return (omega0 + np.sqrt(2 + omega0**2)) / (4 * np.pi * frequency_hz)


def morlet_kernel(frequency_hz: float, rate_hz: float, omega0: float = 5.0) -> np.ndarray:
    """The complex Morlet wavelet sampled at ``rate_hz``, normalised to unit gain at ``frequency_hz``."""
    scale = morlet_scale_s(frequency_hz, omega0)
    half = max(1, int(np.ceil(KERNEL_HALF_WIDTH_SCALES * scale * rate_hz)))
    tau = np.arange(-half, half + 1) / rate_hz
    kernel = np.exp(1j * omega0 * tau / scale) * np.exp(-0.5 * (tau / scale) ** 2)
    gain = np.abs(np.sum(kernel * np.exp(-2j * np.pi * frequency_hz * tau))) / 2
    return kernel / gain


def morlet_amplitudes(signals: np.ndarray, rate_hz: float, frequencies_hz: np.ndarray,
                      omega0: float = 5.0) -> np.ndarray:
    """Wavelet amplitudes of ``signals`` (M, C) sampled at ``rate_hz``: (M, C, F) float64.

    Each channel's mean is removed first; edges are mirrored so the ends are not read as steps.
    """
    signals = np.asarray(signals, dtype=float)
    if signals.ndim == 1:
        signals = signals[:, None]
    count, channels = signals.shape
    out = np.zeros((count, channels, len(frequencies_hz)))
    if count == 0:
        return out
    centred = signals - signals.mean(axis=0, keepdims=True)
    for k, frequency in enumerate(frequencies_hz):
        kernel = morlet_kernel(float(frequency), rate_hz, omega0)
        half = len(kernel) // 2
        padded = np.pad(centred, ((half, half), (0, 0)), mode="symmetric") if count > 1 else \
            np.pad(centred, ((half, half), (0, 0)), mode="edge")
        response = fftconvolve(padded, kernel[::-1, None].conj(), mode="same", axes=0)
        out[:, :, k] = np.abs(response[half:half + count])
    return out

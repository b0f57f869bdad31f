"""T2-prepared single-shot images for T2 mapping.

A T2-preparation module (90° – composite 180° refocusing train – −90°) of
duration τ leaves ``M·exp(−τ/T2)`` along z, which the following single-shot
bSSFP readout turns into the image (Giri et al. 2009). Recovery periods of a
few heartbeats between images are assumed long enough that every image starts
from the same magnetisation, so the series is mono-exponential in τ; τ = 0
means no preparation. Typical clinical durations: 0, 25, 55 ms (1.5 T and 3 T).
"""

from __future__ import annotations

import numpy as np

DEFAULT_T2PREP_MS = (0.0, 25.0, 55.0)


def t2prep_signal(
    t2_ms: np.ndarray | float,
    m0: np.ndarray | float,
    prep_durations_ms: np.ndarray | tuple[float, ...] = DEFAULT_T2PREP_MS,
) -> np.ndarray:
    """Signal ``m0·exp(−τ/T2)`` of every prep duration, shape ``(n_frames, *t2.shape)``."""
    t2 = np.asarray(t2_ms, dtype=np.float64)
    if np.any(t2 <= 0):
        raise ValueError("t2_ms: every T2 must be > 0")
    durations = np.asarray(prep_durations_ms, dtype=np.float64)
    if durations.ndim != 1 or durations.size < 2 or np.any(durations < 0) or not np.all(np.isfinite(durations)):
        raise ValueError(f"prep_durations_ms: expected ≥ 2 finite durations ≥ 0, got {durations!r}")
    m0_array = np.broadcast_to(np.asarray(m0, dtype=np.float64), t2.shape)
    return m0_array[None] * np.exp(-durations.reshape(-1, *([1] * t2.ndim)) / t2[None])

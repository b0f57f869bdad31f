"""Mono-exponential T2 fit ``S(τ) = M0·exp(−τ/T2)`` of T2-prepared series, vectorised.

Same approach as the T1 fit: for a fixed T2, M0 is linear, so a log grid of T2
is searched with one matrix product (variable projection), refined by a parabola
in log T2 and a few damped Gauss–Newton steps on (M0, T2) for all pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

T2_GRID_MS = (5.0, 1000.0)
GRID_POINTS = 96
GAUSS_NEWTON_STEPS = 4


@dataclass(frozen=True)
class T2Fit:
    t2_ms: np.ndarray
    m0: np.ndarray
    r_squared: np.ndarray
    residual_rms: np.ndarray
    valid: np.ndarray  # finite, M0 > 0, T2 within (0, 2000 ms)


def _cost(data: np.ndarray, durations: np.ndarray, m0: np.ndarray, t2: np.ndarray) -> np.ndarray:
    return ((data - m0[None] * np.exp(-durations[:, None] / t2[None])) ** 2).sum(axis=0)


def _best_m0(data: np.ndarray, durations: np.ndarray, t2: np.ndarray) -> np.ndarray:
    e = np.exp(-durations[:, None] / t2[None])
    return (data * e).sum(axis=0) / (e * e).sum(axis=0)


def fit_t2(
    series: np.ndarray,
    prep_durations_ms: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    grid_points: int = GRID_POINTS,
    gauss_newton_steps: int = GAUSS_NEWTON_STEPS,
) -> T2Fit:
    """Fit every pixel of ``series`` (frames first); ``mask`` limits the work (others NaN)."""
    series = np.asarray(series, dtype=np.float64)
    durations = np.asarray(prep_durations_ms, dtype=np.float64)
    if durations.ndim != 1 or series.shape[0] != durations.size:
        raise ValueError(f"series has {series.shape[0]} frames but {durations.size} prep durations were given")
    if durations.size < 2 or np.unique(durations).size != durations.size:
        raise ValueError(f"a T2 fit needs at least 2 different prep durations, got {durations.tolist()}")
    if not np.all(np.isfinite(durations)) or np.any(durations < 0):
        raise ValueError(f"prep durations must be finite and ≥ 0, got {durations.tolist()}")
    spatial = series.shape[1:]
    data_all = np.abs(series.reshape(durations.size, -1))
    selected = np.ones(data_all.shape[1], dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if selected.size != data_all.shape[1]:
        raise ValueError(f"mask shape {np.asarray(mask).shape} does not match the series' frames {spatial}")
    data = data_all[:, selected]

    grid = np.geomspace(*T2_GRID_MS, grid_points)
    basis = np.exp(-durations[None, :] / grid[:, None])
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    index = (np.einsum("gk,kp->gp", basis, data) ** 2).argmax(axis=0)  # no BLAS threads (see t1)
    log_grid = np.log(grid)
    left, right = np.clip(index - 1, 0, grid.size - 1), np.clip(index + 1, 0, grid.size - 1)
    costs = [_cost(data, durations, _best_m0(data, durations, grid[i]), grid[i]) for i in (left, index, right)]
    curvature = costs[0] - 2 * costs[1] + costs[2]
    ok = (curvature > 0) & (left != index) & (right != index)
    shift = np.where(ok, 0.5 * (costs[0] - costs[2]) / np.where(ok, curvature, 1.0), 0.0)
    t2 = np.exp(log_grid[index] + np.clip(shift, -1.0, 1.0) * (log_grid[1] - log_grid[0]))
    m0 = _best_m0(data, durations, t2)

    cost = _cost(data, durations, m0, t2)
    damping = np.full(m0.shape, 1e-3)
    for _ in range(gauss_newton_steps):
        e = np.exp(-durations[:, None] / t2[None])
        residual = data - m0[None] * e
        jacobian = np.stack([e, m0[None] * e * durations[:, None] / t2[None] ** 2], axis=-1)
        jtj = np.einsum("npi,npj->pij", jacobian, jacobian)
        jtj = (
            jtj
            + damping[:, None, None]
            * np.eye(2)[None]
            * np.maximum(np.diagonal(jtj, axis1=1, axis2=2), 1e-12)[:, :, None]
        )
        jtr = np.einsum("npi,np->pi", jacobian, residual)
        delta = np.linalg.solve(jtj, jtr[..., None])[..., 0]
        trial_m0, trial_t2 = m0 + delta[:, 0], np.clip(t2 + delta[:, 1], 0.5, 5000.0)
        trial_cost = _cost(data, durations, trial_m0, trial_t2)
        better = np.isfinite(trial_cost) & (trial_cost < cost)
        m0, t2 = np.where(better, trial_m0, m0), np.where(better, trial_t2, t2)
        cost = np.where(better, trial_cost, cost)
        damping = np.where(better, damping * 0.3, damping * 10.0)

    total = ((data - data.mean(axis=0)) ** 2).sum(axis=0)
    r_squared = 1.0 - cost / np.where(total > 0, total, np.nan)
    valid = np.isfinite(t2) & (m0 > 0) & (t2 > 0) & (t2 < 2000.0)

    def full(values: np.ndarray, fill=np.nan, dtype=np.float64) -> np.ndarray:
        out = np.full(data_all.shape[1], fill, dtype=dtype)
        out[selected] = values
        return out.reshape(spatial)

    return T2Fit(
        t2_ms=full(t2),
        m0=full(m0),
        r_squared=full(r_squared),
        residual_rms=full(np.sqrt(cost / durations.size)),
        valid=full(valid, False, bool),
    )

"""Three-parameter inversion-recovery T1 fit of MOLLI series, vectorised over all pixels.

Model ``S(TI) = A − B·exp(−TI/T1*)`` on the signed signal; T1 follows from the
Look-Locker correction ``T1 = T1*·(B/A − 1)`` (Messroghli 2004). Magnitude images
lose the sign of frames read before the null point, so polarity is restored the
usual way (Xue et al. 2012): with frames sorted by TI, the first ``p`` are
negated for every ``p`` in 0…n and the ``p`` with the smallest residual wins.

How, without a per-pixel loop: for a fixed T1*, A and B are a linear least
squares problem, so the residual of every (polarity, T1*) pair on a log grid
is one matrix product with an orthonormal basis of ``[1, −exp(−TI/T1*)]``
(variable projection). The best grid point is refined by a parabola in
log T1* and a few damped Gauss–Newton steps on (A, B, T1*) for all pixels at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

T1_STAR_GRID_MS = (20.0, 4000.0)
GRID_POINTS = 96
GAUSS_NEWTON_STEPS = 4
_CHUNK = 8192  # pixels per matrix product (bounds memory at ~GRID·(n+1)·2·CHUNK floats)


@dataclass(frozen=True)
class T1Fit:
    """Per-pixel results, each shaped like one frame of the series."""

    t1_ms: np.ndarray  # Look-Locker corrected (or T1* when the correction was off)
    a: np.ndarray
    b: np.ndarray
    t1_star_ms: np.ndarray
    r_squared: np.ndarray  # of the signed fit, against the signed data's mean
    residual_rms: np.ndarray  # in signal units
    null_index: np.ndarray  # number of TI-sorted frames taken as negative
    valid: np.ndarray  # finite, A > 0, B > A, T1 within (0, 10 s)


def _validate(series: np.ndarray, inversion_times_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    series = np.asarray(series, dtype=np.float64)
    times = np.asarray(inversion_times_ms, dtype=np.float64)
    if times.ndim != 1 or series.shape[0] != times.size:
        raise ValueError(f"series has {series.shape[0]} frames but {times.size} inversion times were given")
    if times.size < 4:
        raise ValueError(f"a three-parameter T1 fit needs at least 4 frames, got {times.size}")
    if not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise ValueError(f"inversion times must be finite and > 0, got {times.tolist()}")
    if np.unique(times).size != times.size:
        raise ValueError(f"inversion times must differ from each other, got {times.tolist()}")
    return series, times


def _grid_search(
    magnitude: np.ndarray, times: np.ndarray, grid: np.ndarray, all_polarities: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Best (null index, grid index) per pixel; ``magnitude`` is (frames, pixels), TI-sorted.

    Null index ``p``: the first ``p`` frames are negative. Unless ``all_polarities``,
    only placements within one frame of the darkest frame are tried for each pixel
    (MOLLI's TIs come in near pairs, so noise can make either of two frames near the
    null the darkest).
    """
    n = times.size
    basis = np.empty((grid.size, 2, n), dtype=np.float32)
    for index, t1_star in enumerate(grid):
        q, _ = np.linalg.qr(np.stack([np.ones(n), -np.exp(-times / t1_star)], axis=1))
        basis[index] = q.T
    flat_basis = basis.reshape(-1, n)
    darkest = magnitude.argmin(axis=0)
    best_explained = np.full(magnitude.shape[1], -np.inf, dtype=np.float32)
    best_polarity = np.zeros(magnitude.shape[1], dtype=np.int64)
    best_grid = np.zeros(magnitude.shape[1], dtype=np.int64)
    values = magnitude.astype(np.float32)
    for null_index in range(n + 1):
        pixels = (
            np.arange(values.shape[1]) if all_polarities else np.flatnonzero(np.abs(darkest + 0.5 - null_index) <= 1.5)
        )
        if pixels.size == 0:
            continue
        signs = np.where(np.arange(n) < null_index, -1.0, 1.0).astype(np.float32)
        operator = flat_basis * signs[None, :]  # signs on the basis, not on the data
        for start in range(0, pixels.size, _CHUNK):
            chosen = pixels[start : start + _CHUNK]
            # einsum, not @: BLAS threads on small inner dimensions stall on busy machines
            projected = np.einsum("gk,kp->gp", operator, values[:, chosen]).reshape(grid.size, 2, -1)
            explained = (projected * projected).sum(axis=1)  # (grid, pixels): least residual = most explained
            index = explained.argmax(axis=0)
            top = explained[index, np.arange(chosen.size)]
            better = top > best_explained[chosen]
            best_explained[chosen[better]] = top[better]
            best_polarity[chosen[better]] = null_index
            best_grid[chosen[better]] = index[better]
    return best_polarity, best_grid


def _linear_ab(signed: np.ndarray, times: np.ndarray, t1_star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares A, B for given T1* per pixel (closed form, 2×2 normal equations)."""
    e = np.exp(-times[:, None] / t1_star[None, :])  # (n, pixels)
    n = times.size
    se, see = e.sum(axis=0), (e * e).sum(axis=0)
    sy, sye = signed.sum(axis=0), (signed * e).sum(axis=0)
    det = n * see - se * se
    det = np.where(np.abs(det) < 1e-12, np.nan, det)
    a = (see * sy - se * sye) / det
    minus_b = (n * sye - se * sy) / det
    return a, -minus_b


def _residual(signed: np.ndarray, times: np.ndarray, a, b, t1_star) -> np.ndarray:
    model = a[None] - b[None] * np.exp(-times[:, None] / t1_star[None])
    return ((signed - model) ** 2).sum(axis=0)


def _gauss_newton(signed: np.ndarray, times: np.ndarray, a, b, t1_star, steps: int):
    """Damped Gauss–Newton on (A, B, T1*) for all pixels; a step is kept only where it helps."""
    cost = _residual(signed, times, a, b, t1_star)
    damping = np.full(a.shape, 1e-3)
    for _ in range(steps):
        e = np.exp(-times[:, None] / t1_star[None])
        residual = signed - (a[None] - b[None] * e)
        jacobian = np.stack([np.ones_like(e), -e, -b[None] * e * times[:, None] / t1_star[None] ** 2], axis=-1)
        jtj = np.einsum("npi,npj->pij", jacobian, jacobian)
        jtr = np.einsum("npi,np->pi", jacobian, residual)
        jtj = (
            jtj
            + damping[:, None, None]
            * np.eye(3)[None]
            * np.maximum(np.diagonal(jtj, axis1=1, axis2=2), 1e-12)[:, :, None]
        )
        try:
            delta = np.linalg.solve(jtj, jtr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            break
        trial = (a + delta[:, 0], b + delta[:, 1], np.clip(t1_star + delta[:, 2], 1.0, 2e4))
        trial_cost = _residual(signed, times, *trial)
        better = np.isfinite(trial_cost) & (trial_cost < cost)
        a = np.where(better, trial[0], a)
        b = np.where(better, trial[1], b)
        t1_star = np.where(better, trial[2], t1_star)
        cost = np.where(better, trial_cost, cost)
        damping = np.where(better, damping * 0.3, damping * 10.0)
    return a, b, t1_star, cost


def fit_t1(
    series: np.ndarray,
    inversion_times_ms: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    look_locker: bool = True,
    magnitude: bool = True,
    grid_points: int = GRID_POINTS,
    gauss_newton_steps: int = GAUSS_NEWTON_STEPS,
    all_polarities: bool = False,
) -> T1Fit:
    """Fit every pixel of ``series`` (frames first, any order of TIs).

    ``magnitude=True`` restores polarity; with ``False`` the series is taken as
    signed (phase-sensitive) data. ``mask`` limits the work to its pixels
    (others come back NaN). ``look_locker=False`` reports T1* as T1.
    ``all_polarities`` tries every null position instead of those within one
    frame of the darkest frame (slower).
    """
    series, times = _validate(series, inversion_times_ms)
    spatial = series.shape[1:]
    order = np.argsort(times)
    times = times[order]
    data = series[order].reshape(times.size, -1)
    selected = np.ones(data.shape[1], dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if selected.size != data.shape[1]:
        raise ValueError(f"mask shape {np.asarray(mask).shape} does not match the series' frames {spatial}")
    values = data[:, selected]
    grid = np.geomspace(*T1_STAR_GRID_MS, grid_points)

    if magnitude:
        values = np.abs(values)
        null_index, grid_index = _grid_search(values, times, grid, all_polarities)
        signs = np.where(np.arange(times.size)[:, None] < null_index[None, :], -1.0, 1.0)
        signed = values * signs
    else:
        signed = values
        null_index = np.zeros(values.shape[1], dtype=np.int64)
        grid_index = _grid_search_signed(values, times, grid)

    # Parabola through the neighbouring grid residuals, in log T1*.
    log_grid = np.log(grid)
    left, right = np.clip(grid_index - 1, 0, grid.size - 1), np.clip(grid_index + 1, 0, grid.size - 1)
    costs = [
        _residual(signed, times, *_linear_ab(signed, times, grid[index]), grid[index])
        for index in (left, grid_index, right)
    ]
    curvature = costs[0] - 2 * costs[1] + costs[2]
    shift = np.where(
        (curvature > 0) & (left != grid_index) & (right != grid_index),
        0.5 * (costs[0] - costs[2]) / np.where(curvature > 0, curvature, 1.0),
        0.0,
    )
    step = log_grid[1] - log_grid[0]
    t1_star = np.exp(log_grid[grid_index] + np.clip(shift, -1.0, 1.0) * step)
    a, b = _linear_ab(signed, times, t1_star)
    a, b, t1_star, cost = _gauss_newton(signed, times, a, b, t1_star, gauss_newton_steps)

    with np.errstate(divide="ignore", invalid="ignore"):  # a = 0 where a pixel holds no signal
        t1 = t1_star * (b / a - 1.0) if look_locker else t1_star
        total = ((signed - signed.mean(axis=0)) ** 2).sum(axis=0)
        r_squared = 1.0 - cost / np.where(total > 0, total, np.nan)
    valid = np.isfinite(t1) & (a > 0) & (b > a) & (t1 > 0) & (t1 < 1e4)

    def full(values_selected: np.ndarray, fill: float = np.nan, dtype=np.float64) -> np.ndarray:
        out = np.full(data.shape[1], fill, dtype=dtype)
        out[selected] = values_selected
        return out.reshape(spatial)

    return T1Fit(
        t1_ms=full(t1),
        a=full(a),
        b=full(b),
        t1_star_ms=full(t1_star),
        r_squared=full(r_squared),
        residual_rms=full(np.sqrt(cost / times.size)),
        null_index=full(null_index, -1, np.int64),
        valid=full(valid, False, bool),
    )


def _grid_search_signed(signed: np.ndarray, times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Best grid index per pixel for signed data (no polarity choice)."""
    bases = []
    for t1_star in grid:
        q, _ = np.linalg.qr(np.stack([np.ones(times.size), -np.exp(-times / t1_star)], axis=1))
        bases.append(q.T)
    operator = np.asarray(bases).reshape(-1, times.size)
    best = np.empty(signed.shape[1], dtype=np.int64)
    for start in range(0, signed.shape[1], _CHUNK):
        projected = np.einsum("gk,kp->gp", operator, signed[:, start : start + _CHUNK]).reshape(grid.size, 2, -1)
        best[start : start + _CHUNK] = (projected**2).sum(axis=1).argmax(axis=0)
    return best

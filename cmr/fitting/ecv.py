"""Extracellular volume fraction from native and post-contrast T1 and haematocrit.

``ECV = (1 − Hct) · (1/T1_post − 1/T1_native)_myocardium / (1/T1_post − 1/T1_native)_blood``
(Messroghli et al. 2017 consensus). The map uses each pixel's T1s against the
blood pool's; the scalar uses the myocardial ROI's mean T1s, as reported
clinically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EcvResult:
    ecv_map: np.ndarray  # fraction; NaN where T1s are missing or not positive
    myocardial_ecv: float | None  # from ROI means; None without a myocardial mask
    blood_t1_native_ms: float
    blood_t1_post_ms: float


def _check_haematocrit(haematocrit: float) -> None:
    if not 0.0 < haematocrit < 1.0:
        raise ValueError(f"haematocrit: expected a fraction between 0 and 1 (e.g. 0.42), got {haematocrit}")


def ecv_map(
    t1_native_ms: np.ndarray,
    t1_post_ms: np.ndarray,
    blood_t1_native_ms: float,
    blood_t1_post_ms: float,
    haematocrit: float,
) -> np.ndarray:
    """Per-pixel ECV against the given blood T1s."""
    _check_haematocrit(haematocrit)
    if not blood_t1_post_ms < blood_t1_native_ms:
        raise ValueError(
            f"blood T1 after contrast ({blood_t1_post_ms:.0f} ms) must be shorter than before"
            f" ({blood_t1_native_ms:.0f} ms): are the native and post-contrast series swapped?"
        )
    native = np.asarray(t1_native_ms, dtype=np.float64)
    post = np.asarray(t1_post_ms, dtype=np.float64)
    if native.shape != post.shape:
        raise ValueError(f"native {native.shape} and post-contrast {post.shape} T1 maps differ in shape")
    ok = np.isfinite(native) & np.isfinite(post) & (native > 0) & (post > 0)
    delta_blood = 1.0 / blood_t1_post_ms - 1.0 / blood_t1_native_ms
    with np.errstate(divide="ignore", invalid="ignore"):
        ecv = (1.0 - haematocrit) * (1.0 / post - 1.0 / native) / delta_blood
    return np.where(ok, ecv, np.nan)


def myocardial_ecv(
    myocardium_t1_native_ms: float,
    myocardium_t1_post_ms: float,
    blood_t1_native_ms: float,
    blood_t1_post_ms: float,
    haematocrit: float,
) -> float:
    """Scalar ECV from ROI mean T1s."""
    return float(
        ecv_map(
            np.array(myocardium_t1_native_ms),
            np.array(myocardium_t1_post_ms),
            blood_t1_native_ms,
            blood_t1_post_ms,
            haematocrit,
        )
    )


def ecv_from_maps(
    t1_native_ms: np.ndarray,
    t1_post_ms: np.ndarray,
    blood_mask: np.ndarray,
    haematocrit: float,
    myocardium_mask: np.ndarray | None = None,
) -> EcvResult:
    """ECV map (and myocardial ECV when a mask is given), blood T1 from ``blood_mask`` medians."""
    native = np.asarray(t1_native_ms, dtype=np.float64)
    post = np.asarray(t1_post_ms, dtype=np.float64)
    blood = np.asarray(blood_mask, dtype=bool)
    if blood.shape != native.shape:
        raise ValueError(f"blood mask {blood.shape} does not match the T1 maps {native.shape}")
    usable = blood & np.isfinite(native) & np.isfinite(post)
    if usable.sum() < 3:
        raise ValueError("the blood pool mask holds fewer than 3 pixels with both T1s; cannot reference ECV")
    blood_native, blood_post = float(np.median(native[usable])), float(np.median(post[usable]))
    result_map = ecv_map(native, post, blood_native, blood_post, haematocrit)
    scalar = None
    if myocardium_mask is not None:
        myo = np.asarray(myocardium_mask, dtype=bool) & np.isfinite(native) & np.isfinite(post)
        if not myo.any():
            raise ValueError("the myocardium mask holds no pixel with both T1s")
        scalar = myocardial_ecv(
            float(native[myo].mean()), float(post[myo].mean()), blood_native, blood_post, haematocrit
        )
    return EcvResult(
        ecv_map=result_map, myocardial_ecv=scalar, blood_t1_native_ms=blood_native, blood_t1_post_ms=blood_post
    )

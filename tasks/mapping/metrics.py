"""Per-study T1 and ECV errors of a predicted map against the reference.

A record is one examination (study): its native MOLLI series and, when the study
has one, its post-contrast series. Measures (NaN where undefined):

* ``myocardial_t1_bias_ms``: mean of (predicted − reference) native T1 over the
  myocardium (healthy and scar), i.e. the error of the myocardial ROI mean that a
  report would quote; its sign says over- or under-estimation;
* ``myocardial_t1_abs_error_ms``: mean |predicted − reference| native T1 over the
  myocardial pixels, so that blurring and misplaced borders count even when they
  cancel in the mean;
* ``blood_t1_abs_error_ms``: the same over the LV blood pool (native);
* ``post_myocardial_t1_abs_error_ms``: the myocardial error of the post-contrast map;
* ``ecv_abs_error_percent``: |ECV from the predicted maps − ECV from the reference
  maps| of the healthy (remote) myocardium (ROI mean T1) against the blood pool
  (ROI median T1), in percentage points, with the case's haematocrit;
  ``ecv_reference_percent`` and ``ecv_predicted_percent`` are the two ECVs themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cmr.fitting.ecv import myocardial_ecv
from cmr.labels import MYOCARDIAL_LABELS, TissueLabel

METRIC_NAMES = (
    "myocardial_t1_bias_ms",
    "myocardial_t1_abs_error_ms",
    "blood_t1_abs_error_ms",
    "post_myocardial_t1_abs_error_ms",
    "ecv_abs_error_percent",
    "ecv_reference_percent",
    "ecv_predicted_percent",
)
SUMMARY_METRICS = (
    "myocardial_t1_bias_ms",
    "myocardial_t1_abs_error_ms",
    "blood_t1_abs_error_ms",
    "post_myocardial_t1_abs_error_ms",
    "ecv_abs_error_percent",
)


def _region(mask: np.ndarray, labels: Sequence[int], reference: np.ndarray) -> np.ndarray:
    return np.isin(mask, labels) & np.isfinite(reference) & (reference > 0)


def region_value(
    t1_ms: np.ndarray, mask: np.ndarray, labels: Sequence[int], reference: np.ndarray, statistic=np.mean
) -> float:
    region = _region(mask, labels, reference) & np.isfinite(t1_ms)
    return float(statistic(t1_ms[region])) if region.any() else math.nan


def region_errors(
    predicted_ms: np.ndarray, reference_ms: np.ndarray, mask: np.ndarray, labels: Sequence[int]
) -> tuple[float, float]:
    """(mean signed error, mean absolute error) in ms over the pixels with these labels.

    Pixels without a predicted value (NaN: a fit that failed) are left out; a network
    always gives one.
    """
    region = _region(mask, labels, reference_ms) & np.isfinite(predicted_ms)
    if not region.any():
        return math.nan, math.nan
    difference = predicted_ms[region].astype(np.float64) - reference_ms[region]
    return float(difference.mean()), float(np.abs(difference).mean())


def ecv_fraction(
    native_myocardium_ms: float,
    native_blood_ms: float,
    post_myocardium_ms: float,
    post_blood_ms: float,
    haematocrit: float,
) -> float:
    """ECV = (1 − Hct) · ΔR1(myocardium) / ΔR1(blood) (cmr.fitting.ecv); NaN where undefined."""
    values = (native_myocardium_ms, native_blood_ms, post_myocardium_ms, post_blood_ms, haematocrit)
    if not all(math.isfinite(v) for v in values) or min(values[:4]) <= 0:
        return math.nan
    try:
        return myocardial_ecv(native_myocardium_ms, post_myocardium_ms, native_blood_ms, post_blood_ms, haematocrit)
    except ValueError:  # no contrast effect in the blood, or a haematocrit outside (0, 1)
        return math.nan


def study_metrics(
    native: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    post: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    haematocrit: float,
) -> dict[str, float]:
    """Measures of one study from (predicted ms, reference ms, tissue mask) per contrast."""
    metrics = dict.fromkeys(METRIC_NAMES, math.nan)
    if native is not None:
        predicted, reference, mask = native
        metrics["myocardial_t1_bias_ms"], metrics["myocardial_t1_abs_error_ms"] = region_errors(
            predicted, reference, mask, MYOCARDIAL_LABELS
        )
        metrics["blood_t1_abs_error_ms"] = region_errors(predicted, reference, mask, (TissueLabel.LV_BLOOD_POOL,))[1]
    if post is not None:
        predicted, reference, mask = post
        metrics["post_myocardial_t1_abs_error_ms"] = region_errors(predicted, reference, mask, MYOCARDIAL_LABELS)[1]
    if native is not None and post is not None:
        ecvs = []
        for which in (1, 0):  # reference maps, then predicted maps (ROIs from the references)
            native_myocardium, native_blood, post_myocardium, post_blood = (
                region_value(series[which], series[2], labels, series[1], statistic)
                for series in (native, post)
                for labels, statistic in (
                    ((TissueLabel.MYOCARDIUM,), np.mean),
                    # The median, as cmr.fitting.ecv takes it: the blood-pool label holds the
                    # papillary muscles, whose T1 is the myocardium's.
                    ((TissueLabel.LV_BLOOD_POOL,), np.median),
                )
            )
            ecvs.append(ecv_fraction(native_myocardium, native_blood, post_myocardium, post_blood, haematocrit))
        reference_ecv, predicted_ecv = ecvs
        metrics["ecv_reference_percent"] = 100.0 * reference_ecv
        metrics["ecv_predicted_percent"] = 100.0 * predicted_ecv
        metrics["ecv_abs_error_percent"] = 100.0 * abs(predicted_ecv - reference_ecv)
    return metrics


def nan_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan

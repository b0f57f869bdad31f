"""Tissue at points of any plane: long-axis views and localizers cut across levels of the heart.

``classify_plane`` (cmr.phantom.anatomy) classifies points of one short-axis level.
Here points are grouped by level and each group is classified in one call: long-axis
rows each lie at one level, a localizer's points are binned to ``z_step``. Above the
base plane (``z < 0``), where the short-axis model would extend the ventricles as a
tube, the atria and the aortic root take their place: a simple sketch (ellipsoids of
blood in a thin wall and a rim of fat, the aortic root as a cylinder, lung around them)
that long-axis views and localizers need and the LGE stack never shows.
"""

from __future__ import annotations

import numpy as np

from cmr.phantom.anatomy import HeartPlan, MyocardialPattern, Tissue, anatomical_axes, classify_plane

ATRIAL_REACH_MM = 70.0  # nothing of the heart lies further above the base plane
ATRIAL_WALL_MM = 2.0
FAT_RIM_MM = 3.0  # epicardial fat around the atria and the aortic root
_HEART_CODES = np.array(
    [
        Tissue.EPICARDIAL_FAT,
        Tissue.RV_WALL,
        Tissue.RV_BLOOD,
        Tissue.MYOCARDIUM,
        Tissue.SCAR,
        Tissue.LV_BLOOD,
        Tissue.PAPILLARY_MUSCLE,
    ]
)


def _chambers_above_base(heart: HeartPlan) -> list[tuple[float, float, float, float, float]]:
    """Per chamber: (centre septal, centre anterior, in-plane radius, centre height, half-height), mm."""
    r = heart.epicardial_radius_mm
    left_atrium = (-0.1 * r, -0.35 * r, 0.8 * heart.cavity_radius_mm, 24.0, 30.0)
    right_atrium = (r + 0.6 * heart.rv_depth_mm, -0.15 * r, 0.7 * heart.cavity_radius_mm, 22.0, 28.0)
    return [left_atrium, right_atrium]


def _above_base(heart: HeartPlan, scar: MyocardialPattern, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
    tissue = classify_plane(heart, scar, x, y, z)
    height = -z
    anterior, septal = anatomical_axes(heart)
    p_ant = x * anterior[0] + y * anterior[1]
    p_sep = x * septal[0] + y * septal[1]
    rho = np.hypot(p_ant, p_sep)
    # Fat in the atrioventricular groove just above the base; lung elsewhere, unless a chamber lies there.
    groove = heart.epicardial_radius_mm * max(0.0, 1.0 - height / 20.0)
    was_heart = np.isin(tissue, _HEART_CODES)
    tissue[was_heart] = np.where(rho[was_heart] < groove, Tissue.EPICARDIAL_FAT, Tissue.LUNG)

    def paint(distance: np.ndarray, radius: float) -> None:
        tissue[distance < radius + ATRIAL_WALL_MM + FAT_RIM_MM] = Tissue.EPICARDIAL_FAT
        tissue[distance < radius + ATRIAL_WALL_MM] = Tissue.RV_WALL  # thin muscle (atria) or vessel wall
        tissue[distance < radius] = Tissue.AORTA  # blood outside the ventricles: label background

    for centre_sep, centre_ant, radius, centre_height, half_height in _chambers_above_base(heart):
        scale = 1.0 - ((height - centre_height) / half_height) ** 2
        if scale > 0:
            paint(np.hypot(p_sep - centre_sep, p_ant - centre_ant), radius * float(np.sqrt(scale)))
    root_radius = heart.aorta_radius_mm + 2.0
    if height < 0.85 * ATRIAL_REACH_MM:  # aortic root over the outflow tract, anteroseptal: in the 3-chamber view
        r = heart.cavity_radius_mm
        paint(np.hypot(p_sep - 0.75 * r, p_ant - 0.55 * r), root_radius)
    return tissue


def classify_points(
    heart: HeartPlan,
    scar: MyocardialPattern,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    z_step: float = 0.0,
) -> np.ndarray:
    """Tissue codes (uint8, shaped like ``x``) at points ``(x, y, z)`` of the heart's frame.

    Levels beyond the apex (and its fat) or above the atria hold only the chest, which
    does not change along the axis, so they are classified once each.
    """
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    levels = np.clip(
        np.asarray(z, dtype=np.float64), -ATRIAL_REACH_MM, heart.epicardial_apex_mm + heart.epicardial_fat_mm + 0.5
    )
    if z_step > 0:
        levels = np.round(levels / z_step) * z_step
    flat_levels = np.broadcast_to(levels, x.shape).ravel()
    flat_x, flat_y = x.ravel(), np.broadcast_to(y, x.shape).ravel()
    order = np.argsort(flat_levels, kind="stable")
    unique, starts = np.unique(flat_levels[order], return_index=True)
    out = np.empty(flat_x.size, dtype=np.uint8)
    for level, group in zip(unique, np.split(order, starts[1:])):
        classify = _above_base if level < 0 else classify_plane
        out[group] = classify(heart, scar, flat_x[group], flat_y[group], float(level))
    return out.reshape(x.shape)

"""Heart and chest anatomy of one patient, and which tissue lies at any point.

Coordinates are millimetres in the short-axis image plane, relative to the LV
long axis: ``x`` along image columns (rightwards), ``y`` along image rows
(downwards), ``z`` along the long axis from the base plane (0) towards the
apex. Anatomical directions inside the plane are given by the angle ``phi``:
0 anterior, +90° septal, ±180° inferior, −90° lateral (AHA segment naming).

The left ventricle is a truncated prolate ellipsoidal shell (blood pool inside,
myocardium between endocardium and epicardium, tapering to an apical cap); the
right ventricle is an elliptical crescent wrapped around the septum; around
them lie epicardial fat, lungs, the descending aorta, the spine, the chest wall
(muscle under subcutaneous fat) and, on apical slices, the liver.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np

from cmr.labels import TissueLabel
from cmr.phantom import knobs
from cmr.phantom.demographics import Patient


class Tissue(IntEnum):
    AIR = 0
    LUNG = 1
    SUBCUTANEOUS_FAT = 2
    CHEST_MUSCLE = 3
    LIVER = 4
    AORTA = 5
    SPINE = 6
    EPICARDIAL_FAT = 7
    RV_WALL = 8
    RV_BLOOD = 9
    MYOCARDIUM = 10
    SCAR = 11
    LV_BLOOD = 12
    PAPILLARY_MUSCLE = 13


# What each tissue is made of, for the signal model (cmr.phantom.lge_signal).
TISSUE_MATERIAL = {
    Tissue.AIR: "air",
    Tissue.LUNG: "lung",
    Tissue.SUBCUTANEOUS_FAT: "fat",
    Tissue.CHEST_MUSCLE: "muscle",
    Tissue.LIVER: "liver",
    Tissue.AORTA: "blood",
    Tissue.SPINE: "marrow",
    Tissue.EPICARDIAL_FAT: "fat",
    Tissue.RV_WALL: "myocardium",
    Tissue.RV_BLOOD: "blood",
    Tissue.MYOCARDIUM: "myocardium",
    Tissue.SCAR: "scar",
    Tissue.LV_BLOOD: "blood",
    Tissue.PAPILLARY_MUSCLE: "myocardium",
}

# Reference-mask label of each tissue. Papillary muscles belong to the blood pool
# and the thin RV free wall to the background, as in common LGE annotation practice.
TISSUE_TO_LABEL = np.zeros(len(Tissue), dtype=np.uint8)
TISSUE_TO_LABEL[Tissue.LV_BLOOD] = TissueLabel.LV_BLOOD_POOL
TISSUE_TO_LABEL[Tissue.PAPILLARY_MUSCLE] = TissueLabel.LV_BLOOD_POOL
TISSUE_TO_LABEL[Tissue.MYOCARDIUM] = TissueLabel.MYOCARDIUM
TISSUE_TO_LABEL[Tissue.SCAR] = TissueLabel.SCAR
TISSUE_TO_LABEL[Tissue.RV_BLOOD] = TissueLabel.RV_BLOOD_POOL


class MyocardialPattern(Protocol):
    """Where the myocardium is scarred (see cmr.phantom.scar)."""

    def thinning(self, phi: np.ndarray, z: float) -> np.ndarray | float:
        """Fraction of the wall lost to chronic infarct thinning (0 = none)."""
        ...

    def contains(self, phi: np.ndarray, z: float, transmural: np.ndarray) -> np.ndarray:
        """True where myocardium at (phi, z, transmural depth 0 endo..1 epi) is scar."""
        ...


@dataclass(frozen=True)
class HeartPlan:
    """One patient's end-diastolic heart and chest, in millimetres and radians."""

    cavity_radius_mm: float
    ellipticity: float
    ellipticity_angle: float
    wall_mm: float  # mean mid-ventricular wall, including any injected scaling
    septal_excess: float
    hcm_septal_extra_mm: float
    long_axis_mm: float  # base plane to endocardial apex
    apical_wall_mm: float
    rv_depth_mm: float
    rv_half_span_mm: float
    rv_wall_mm: float
    rv_end_mm: float
    epicardial_fat_mm: float  # in the interventricular grooves
    epicardial_fat_free_wall: float  # fraction of that over the LV free wall
    papillary_radius_mm: float
    papillary_z_mm: tuple[float, float]
    rotation: float  # in-plane rotation of the anatomy in the image
    body_half_width_mm: float
    body_half_depth_mm: float
    body_centre_mm: tuple[float, float]  # (septal, anterior) offset from the LV axis
    subcutaneous_fat_mm: float
    breast_mm: float
    chest_muscle_mm: float
    aorta_radius_mm: float
    liver_radius_mm: float

    @property
    def epicardial_radius_mm(self) -> float:
        return self.cavity_radius_mm + self.wall_mm

    @property
    def epicardial_apex_mm(self) -> float:
        return self.long_axis_mm + self.apical_wall_mm

    @property
    def extent_mm(self) -> float:
        """Radius around the LV axis that holds the whole heart and its fat."""
        return (
            self.epicardial_radius_mm * (1 + self.ellipticity)
            + self.hcm_septal_extra_mm
            + self.rv_depth_mm
            + self.rv_wall_mm
            + self.epicardial_fat_mm
            + self.rv_half_span_mm * 0.2
            + 6.0
        )


def sample_heart(
    rng: np.random.Generator,
    patient: Patient,
    scar_pattern: str,
    wall_scale: float = 1.0,
) -> HeartPlan:
    """Draw a heart for ``patient``; ``scar_pattern`` remodels it (dilation, hypertrophy)."""
    sex = patient.sex
    bsa_excess = patient.bsa_m2 - knobs.BSA_REFERENCE_M2
    decades = (patient.age_years - 55.0) / 10.0
    wall = rng.normal(
        knobs.WALL_MEAN_MM[sex]
        + knobs.WALL_PER_BSA_MM * bsa_excess
        + knobs.WALL_PER_DECADE_MM * decades
        + knobs.WALL_ETHNICITY_OFFSET_MM[patient.ethnicity],
        knobs.WALL_SD_MM,
    )
    wall = float(np.clip(wall, *knobs.WALL_CLIP_MM)) * wall_scale
    diameter = rng.normal(
        knobs.CAVITY_DIAMETER_MEAN_MM[sex]
        + knobs.CAVITY_DIAMETER_PER_BSA_MM * bsa_excess
        + knobs.CAVITY_DIAMETER_PER_DECADE_MM * decades,
        knobs.CAVITY_DIAMETER_SD_MM,
    )
    diameter = float(np.clip(diameter, *knobs.CAVITY_DIAMETER_CLIP_MM))
    long_axis = rng.normal(
        knobs.LONG_AXIS_MEAN_MM[sex] + knobs.LONG_AXIS_PER_BSA_MM * bsa_excess, knobs.LONG_AXIS_SD_MM
    )
    long_axis = float(np.clip(long_axis, *knobs.LONG_AXIS_CLIP_MM))

    hcm_extra = 0.0
    if scar_pattern in ("LAD", "RCA", "LCx"):
        diameter += float(rng.uniform(*knobs.ISCHAEMIC_CAVITY_DILATION_MM))
    elif scar_pattern == "dcm_midwall":
        diameter += float(rng.uniform(*knobs.DCM_CAVITY_DILATION_MM))
        long_axis += knobs.DCM_LONG_AXIS_DILATION_MM
    elif scar_pattern == "hcm":
        hcm_extra = float(rng.uniform(*knobs.HCM_SEPTAL_EXCESS_MM))
        diameter -= float(rng.uniform(*knobs.HCM_CAVITY_REDUCTION_MM))

    cavity_radius = diameter / 2.0
    epicardial_radius = cavity_radius + wall
    bmi_excess = patient.bmi - 25.0
    female = sex == "female"
    subcutaneous_fat = (
        knobs.SUBCUTANEOUS_FAT_AT_BMI_22_MM + knobs.SUBCUTANEOUS_FAT_PER_BMI_MM * (patient.bmi - 22.0)
    ) * (knobs.SUBCUTANEOUS_FAT_FEMALE_FACTOR if female else 1.0)
    subcutaneous_fat = float(np.clip(subcutaneous_fat, *knobs.SUBCUTANEOUS_FAT_CLIP_MM))
    breast = float(rng.uniform(*knobs.BREAST_MM[sex]) * max(0.5, 1.0 + knobs.BREAST_PER_BMI * bmi_excess))
    chest_muscle = float(rng.uniform(*knobs.CHEST_MUSCLE_MM))
    width_per_bmi, depth_per_bmi = knobs.BODY_SIZE_PER_BMI_MM
    width_sd, depth_sd = knobs.BODY_SIZE_SD_MM
    half_width = float(knobs.BODY_HALF_WIDTH_MM[sex] + width_per_bmi * bmi_excess + rng.normal(0.0, width_sd))
    half_depth = float(knobs.BODY_HALF_DEPTH_MM + depth_per_bmi * bmi_excess + rng.normal(0.0, depth_sd))
    # The anterior chest wall lies a little in front of the heart, the body's
    # centre behind it and towards the patient's right (septal side).
    front_gap = float(rng.uniform(*knobs.CHEST_WALL_GAP_MM))
    chest_wall_front = epicardial_radius + front_gap + subcutaneous_fat + breast + chest_muscle
    half_depth = max(half_depth, chest_wall_front + 60.0)  # room behind the heart for aorta and spine
    centre_anterior = chest_wall_front - half_depth
    centre_septal = float(rng.uniform(*knobs.BODY_CENTRE_SEPTAL_MM))

    apical_wall = max(3.0, knobs.APICAL_WALL_FRACTION * wall)
    papillary_span = knobs.PAPILLARY_LONG_AXIS_SPAN
    return HeartPlan(
        cavity_radius_mm=cavity_radius,
        ellipticity=float(rng.uniform(*knobs.CAVITY_ELLIPTICITY)),
        ellipticity_angle=float(rng.uniform(0.0, np.pi)),
        wall_mm=wall,
        septal_excess=knobs.SEPTAL_WALL_EXCESS,
        hcm_septal_extra_mm=hcm_extra,
        long_axis_mm=long_axis,
        apical_wall_mm=apical_wall,
        rv_depth_mm=epicardial_radius * float(rng.uniform(*knobs.RV_WIDTH_FRACTION)) * knobs.RV_DEPTH_FACTOR,
        rv_half_span_mm=epicardial_radius * float(rng.uniform(*knobs.RV_SPAN_FRACTION)),
        rv_wall_mm=float(rng.uniform(*knobs.RV_WALL_MM)),
        rv_end_mm=long_axis * float(rng.uniform(*knobs.RV_APICAL_END)),
        epicardial_fat_mm=float(rng.uniform(*knobs.EPICARDIAL_FAT_MM)) * (1.0 + 0.02 * max(bmi_excess, 0.0)),
        epicardial_fat_free_wall=float(rng.uniform(*knobs.EPICARDIAL_FAT_FREE_WALL_FRACTION)),
        papillary_radius_mm=float(rng.uniform(*knobs.PAPILLARY_RADIUS_MM)),
        papillary_z_mm=(papillary_span[0] * long_axis, papillary_span[1] * long_axis),
        rotation=float(np.deg2rad(rng.uniform(-knobs.IN_PLANE_ROTATION_DEG, knobs.IN_PLANE_ROTATION_DEG))),
        body_half_width_mm=half_width,
        body_half_depth_mm=half_depth,
        body_centre_mm=(centre_septal, centre_anterior),
        subcutaneous_fat_mm=subcutaneous_fat,
        breast_mm=breast,
        chest_muscle_mm=chest_muscle,
        aorta_radius_mm=float(
            rng.uniform(*knobs.AORTA_RADIUS_MM)
            + knobs.AORTA_GROWTH_MM_PER_YEAR_OVER_40 * max(patient.age_years - 40, 0)
        ),
        liver_radius_mm=float(rng.uniform(*knobs.LIVER_DOME_RADIUS_MM)),
    )


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _ellipse_inside(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float) -> np.ndarray:
    return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2 < 1.0


def _axial_scale(z: float, length: float) -> float:
    """Radius of an ellipsoid of half-length ``length`` at ``z``, relative to its equator."""
    z = max(z, 0.0)
    return float(np.sqrt(max(0.0, 1.0 - (z / length) ** 2)))


def anatomical_axes(heart: HeartPlan) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (x, y) in the image of the anterior and septal directions."""
    anterior = np.array([np.sin(heart.rotation), -np.cos(heart.rotation)])
    septal = np.array([np.cos(heart.rotation), np.sin(heart.rotation)])
    return anterior, septal


def _rv_ellipse(heart: HeartPlan, z: float) -> tuple[float, float, float, float] | None:
    """(centre septal, centre anterior, half-axis septal, half-axis anterior) of the RV cavity."""
    rv_scale = _axial_scale(z, heart.rv_end_mm)
    if rv_scale <= 0.05:
        return None
    lv_outer = heart.epicardial_radius_mm * _axial_scale(z, heart.epicardial_apex_mm) + heart.hcm_septal_extra_mm
    outer = lv_outer + heart.rv_depth_mm * rv_scale
    inner = 0.1 * lv_outer
    centre_septal = (outer + inner) / 2.0
    half_septal = (outer - inner) / 2.0
    return centre_septal, 0.12 * lv_outer, half_septal, max(heart.rv_half_span_mm * rv_scale, half_septal)


def rv_insertion_angles(heart: HeartPlan, z: float = 0.0) -> tuple[float, float]:
    """phi of the anterior and inferior RV insertion points at level ``z``."""
    ellipse = _rv_ellipse(heart, z)
    default = np.deg2rad(knobs.RV_INSERTION_ANGLE_DEG)
    if ellipse is None:
        return float(np.pi / 2 - default), float(np.pi / 2 + default)
    phi = np.deg2rad(np.arange(-10.0, 191.0, 1.0))
    radius = heart.epicardial_radius_mm * _axial_scale(z, heart.epicardial_apex_mm) + 1.0
    inside = _ellipse_inside(radius * np.sin(phi), radius * np.cos(phi), *ellipse)
    if not inside.any():
        return float(np.pi / 2 - default), float(np.pi / 2 + default)
    return float(phi[inside].min()), float(phi[inside].max())


def classify_plane(heart: HeartPlan, scar: MyocardialPattern, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
    """Tissue (``Tissue`` codes, uint8) at in-plane points ``x, y`` (mm) on level ``z`` (mm)."""
    anterior, septal = anatomical_axes(heart)
    p_ant = (x * anterior[0] + y * anterior[1]).astype(np.float32)
    p_sep = (x * septal[0] + y * septal[1]).astype(np.float32)
    tissue = np.full(p_ant.shape, Tissue.AIR, dtype=np.uint8)

    # Chest: body outline, subcutaneous fat (thicker in front for breast tissue),
    # chest-wall muscle, and the lungs filling the thorax.
    cs, ca = heart.body_centre_mm
    width, depth = heart.body_half_width_mm, heart.body_half_depth_mm
    fat, breast, muscle = heart.subcutaneous_fat_mm, heart.breast_mm, heart.chest_muscle_mm
    body = _ellipse_inside(p_sep, p_ant, cs, ca, width, depth)
    tissue[body] = Tissue.SUBCUTANEOUS_FAT
    under_fat = _ellipse_inside(p_sep, p_ant, cs, ca - breast / 2, width - fat, depth - fat - breast / 2)
    tissue[under_fat] = Tissue.CHEST_MUSCLE
    thorax = _ellipse_inside(p_sep, p_ant, cs, ca - breast / 2, width - fat - muscle, depth - fat - breast / 2 - muscle)
    tissue[thorax] = Tissue.LUNG

    epicardial_radius = heart.epicardial_radius_mm
    liver_start = 0.6 * heart.long_axis_mm
    if z > liver_start:  # the dome of the liver under the diaphragm, on apical slices
        growth = min(1.0, (z - liver_start) / (0.4 * heart.long_axis_mm))
        liver_radius = heart.liver_radius_mm * np.sqrt(growth)
        liver = thorax & _ellipse_inside(
            p_sep, p_ant, epicardial_radius + 55.0, -0.9 * epicardial_radius, liver_radius * 1.2, liver_radius
        )
        tissue[liver] = Tissue.LIVER
    aorta_radius = heart.aorta_radius_mm
    tissue[
        _ellipse_inside(
            p_sep, p_ant, -0.25 * epicardial_radius - 6.0, -(epicardial_radius + 26.0), aorta_radius, aorta_radius
        )
    ] = Tissue.AORTA
    tissue[_ellipse_inside(p_sep, p_ant, 12.0, -(epicardial_radius + 62.0), 17.0, 15.0)] = Tissue.SPINE

    # Heart: evaluated only near the LV axis.
    if z > heart.epicardial_apex_mm + heart.epicardial_fat_mm:
        return tissue
    near = (p_ant**2 + p_sep**2) < heart.extent_mm**2
    index = np.flatnonzero(near)
    if index.size == 0:
        return tissue
    u_ant = p_ant.ravel()[index]
    u_sep = p_sep.ravel()[index]
    rho = np.hypot(u_ant, u_sep)
    phi = np.arctan2(u_sep, u_ant)
    local = np.full(index.size, 255, dtype=np.uint8)  # 255: not heart, keep the chest

    shape = 1.0 + heart.ellipticity * np.cos(2.0 * (phi - heart.ellipticity_angle))
    septal_weight = np.cos(phi - np.pi / 2)
    wall = heart.wall_mm * (1.0 + heart.septal_excess * septal_weight)
    if heart.hcm_septal_extra_mm > 0:
        basal_mid = 1.0 - min(1.0, max(0.0, (z - 0.5 * heart.long_axis_mm) / (0.3 * heart.long_axis_mm)))
        wall = wall + heart.hcm_septal_extra_mm * np.clip(septal_weight, 0.0, None) ** 2 * basal_mid
    wall = wall * (1.0 - scar.thinning(phi, z))
    endo_equator = heart.cavity_radius_mm * shape
    endo = endo_equator * _axial_scale(z, heart.long_axis_mm)
    epi = (endo_equator + wall) * _axial_scale(z, heart.epicardial_apex_mm)
    # Epicardial fat gathers in the interventricular grooves (at the RV insertions)
    # and, near the base, in the lateral atrioventricular groove.
    grooves = np.maximum(
        np.exp(-((_wrap(phi - np.deg2rad(25.0)) / 0.6) ** 2)),
        np.exp(-((_wrap(phi - np.deg2rad(155.0)) / 0.6) ** 2)),
    )
    if z < 0.25 * heart.long_axis_mm:
        grooves = np.maximum(grooves, 0.7 * np.exp(-((_wrap(phi + np.pi / 2) / 0.8) ** 2)))
    fat_thickness = heart.epicardial_fat_mm * (
        heart.epicardial_fat_free_wall + (1.0 - heart.epicardial_fat_free_wall) * grooves
    )
    fat_outer = (endo_equator + wall + fat_thickness) * _axial_scale(
        z, heart.epicardial_apex_mm + heart.epicardial_fat_mm
    )
    local[rho < fat_outer] = Tissue.EPICARDIAL_FAT

    ellipse = _rv_ellipse(heart, z)
    if ellipse is not None:
        cs_rv, ca_rv, hs_rv, ha_rv = ellipse
        outside_lv = rho >= epi
        w = heart.rv_wall_mm
        f = heart.epicardial_fat_mm
        local[outside_lv & _ellipse_inside(u_sep, u_ant, cs_rv, ca_rv, hs_rv + w + f, ha_rv + w + f)] = (
            Tissue.EPICARDIAL_FAT
        )
        local[outside_lv & _ellipse_inside(u_sep, u_ant, cs_rv, ca_rv, hs_rv + w, ha_rv + w)] = Tissue.RV_WALL
        local[outside_lv & _ellipse_inside(u_sep, u_ant, cs_rv, ca_rv, hs_rv, ha_rv)] = Tissue.RV_BLOOD

    myocardium = (rho < epi) & (rho >= endo)
    local[myocardium] = Tissue.MYOCARDIUM
    if myocardium.any():
        depth = (rho[myocardium] - endo[myocardium]) / np.maximum(epi[myocardium] - endo[myocardium], 1e-3)
        scarred = scar.contains(phi[myocardium], z, depth)
        local[np.flatnonzero(myocardium)[scarred]] = Tissue.SCAR
    local[rho < endo] = Tissue.LV_BLOOD

    z_low, z_high = heart.papillary_z_mm
    if z_low <= z <= z_high:
        for papillary_phi in (np.deg2rad(-45.0), np.deg2rad(160.0)):
            radial = 0.55 * heart.cavity_radius_mm * _axial_scale(z, heart.long_axis_mm)
            centre_ant, centre_sep = radial * np.cos(papillary_phi), radial * np.sin(papillary_phi)
            in_muscle = (u_ant - centre_ant) ** 2 + (u_sep - centre_sep) ** 2 < heart.papillary_radius_mm**2
            local[in_muscle & (rho < endo)] = Tissue.PAPILLARY_MUSCLE

    flat = tissue.ravel()
    is_heart = local != 255
    flat[index[is_heart]] = local[is_heart]
    return flat.reshape(tissue.shape)

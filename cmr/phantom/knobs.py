"""The phantom's numeric defaults (docs/phantom.md lists the few that are set elsewhere).

docs/phantom.md mirrors this module knob by knob, with the realistic range and
the source of each value; change both together. Lengths in mm, times in ms,
angles in degrees.

How a value is used, unless its comment says otherwise:

* a ``(low, high)`` pair is the bounds of a uniform draw;
* a name with ``_SD`` is the spread of a normal draw, and one with ``_CLIP`` the
  hard bounds applied after a draw;
* a name ending in ``_CHOICES_MM`` lists the options of an equally weighted draw
  (a repeated option is proportionally more likely);
* a single number is a fixed value (a few, commented, are ± bounds of a draw);
* a dict is keyed by sex, ethnicity, tissue, field strength or category.

Exceptions, each commented where it is defined: ``NATIVE_T1_MS`` pairs are
(1.5 T, 3 T) values; ``ECV`` pairs are (mean, sd); ``BODY_SIZE_*`` pairs are
(width, depth); ``PAPILLARY_LONG_AXIS_SPAN`` is a fixed span; ``MATRIX`` and
``N_SLICES`` are clips; ``NON_ISCHAEMIC_PATCHES`` is an inclusive integer range;
``ISCHAEMIC_TERRITORIES`` and the patch tuples are structured records.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------
# Patients: age, body size
# --------------------------------------------------------------------------------------
AGE_CLIP_YEARS = (18.0, 90.0)
AGE_SD_YEARS = 13.0

HEIGHT_MEAN_CM = {"male": 176.0, "female": 163.0}
HEIGHT_SD_CM = {"male": 7.0, "female": 6.5}
HEIGHT_ETHNICITY_OFFSET_CM = {"White": 0.0, "Black": 0.5, "Asian": -5.0, "Mixed": -1.0, "Other": -2.5}
HEIGHT_CLIP_CM = (145.0, 205.0)

BMI_SD = 4.5
BMI_SEX_OFFSET = {"male": 0.4, "female": -0.4}
BMI_CLIP = (17.0, 48.0)

# --------------------------------------------------------------------------------------
# Left ventricle at end-diastole (the LGE trigger delay is set to diastole)
# --------------------------------------------------------------------------------------
# Mean mid-ventricular wall thickness around the circumference.
WALL_MEAN_MM = {"male": 8.0, "female": 6.8}
WALL_SD_MM = 0.8
WALL_PER_BSA_MM = 1.1  # per m² of BSA above BSA_REFERENCE_M2 (MESA: +1.1 mm per m²)
WALL_PER_DECADE_MM = 0.15  # per decade above 55 years
WALL_ETHNICITY_OFFSET_MM = {"White": 0.0, "Black": 0.4, "Asian": -0.4, "Mixed": 0.0, "Other": 0.0}
WALL_CLIP_MM = (5.5, 11.0)  # before any injected subgroup scaling (DIFFICULTY_WALL_SCALE)
# Wall = mean × (1 + this × cos(phi − 90°)): +8 % at mid-septum, −8 % at the lateral
# wall, so the septum is about 1.17 × the lateral wall.
SEPTAL_WALL_EXCESS = 0.08
APICAL_WALL_FRACTION = 0.6  # wall at the apical cap relative to the mid wall

# End-diastolic endocardial diameter at the base.
CAVITY_DIAMETER_MEAN_MM = {"male": 51.0, "female": 46.5}
CAVITY_DIAMETER_SD_MM = 2.5
CAVITY_DIAMETER_PER_BSA_MM = 6.0
CAVITY_DIAMETER_PER_DECADE_MM = -0.5
CAVITY_DIAMETER_CLIP_MM = (40.0, 58.0)
CAVITY_ELLIPTICITY = (0.0, 0.07)  # in-plane: radius varies by ± this fraction

# Endocardial long axis, base plane to endocardial apex.
LONG_AXIS_MEAN_MM = {"male": 86.0, "female": 79.0}
LONG_AXIS_SD_MM = 5.0
LONG_AXIS_PER_BSA_MM = 10.0
LONG_AXIS_CLIP_MM = (68.0, 100.0)

BSA_REFERENCE_M2 = 1.9

PAPILLARY_RADIUS_MM = (2.5, 4.5)
PAPILLARY_LONG_AXIS_SPAN = (0.25, 0.7)  # fixed: fraction of the long axis with papillary muscles

RV_WALL_MM = (2.5, 4.0)
# RV crescent depth = LV epicardial radius × U(RV_WIDTH_FRACTION) × RV_DEPTH_FACTOR,
# i.e. 0.45-0.6 of the LV epicardial radius.
RV_WIDTH_FRACTION = (0.75, 1.0)
RV_DEPTH_FACTOR = 0.6
RV_SPAN_FRACTION = (1.15, 1.45)  # RV crescent half-length relative to the LV epicardial radius
RV_APICAL_END = (0.7, 0.85)  # RV cavity ends at this fraction of the LV long axis
RV_INSERTION_ANGLE_DEG = 55.0  # RV insertion points lie ± this from mid-septum

EPICARDIAL_FAT_MM = (2.0, 6.0)  # in the interventricular grooves; thinner elsewhere
EPICARDIAL_FAT_FREE_WALL_FRACTION = (0.1, 0.4)  # fat over the LV free wall relative to the grooves
# Chest, in the oblique short-axis plane
BODY_HALF_WIDTH_MM = {"male": 160.0, "female": 150.0}  # at BMI 25
BODY_HALF_DEPTH_MM = 103.0  # at BMI 25
BODY_SIZE_PER_BMI_MM = (3.5, 3.0)  # (width, depth) per BMI unit above 25
BODY_SIZE_SD_MM = (8.0, 6.0)
SUBCUTANEOUS_FAT_AT_BMI_22_MM = 6.0
SUBCUTANEOUS_FAT_PER_BMI_MM = 2.2
SUBCUTANEOUS_FAT_FEMALE_FACTOR = 1.3
SUBCUTANEOUS_FAT_CLIP_MM = (3.0, 50.0)
BREAST_MM = {"female": (10.0, 30.0), "male": (0.0, 4.0)}  # extra anterior fat/gland
BREAST_PER_BMI = 0.04  # relative, per BMI unit above 25
CHEST_MUSCLE_MM = (9.0, 16.0)
CHEST_WALL_GAP_MM = (8.0, 18.0)  # anterior chest wall in front of the LV epicardium
BODY_CENTRE_SEPTAL_MM = (20.0, 45.0)  # body centre towards the patient's right of the LV axis
AORTA_RADIUS_MM = (10.0, 12.0)
AORTA_GROWTH_MM_PER_YEAR_OVER_40 = 0.03
LIVER_DOME_RADIUS_MM = (45.0, 70.0)  # largest liver cross-section on the apical slices
HEART_OFFSET_FROM_IMAGE_CENTRE_MM = 25.0  # ± this on each in-plane axis
IN_PLANE_ROTATION_DEG = 15.0  # ± rotation of the anatomy in the image
LONG_AXIS_TILT_DEG = 10.0  # ± variation of the LV axis direction in the scanner

# --------------------------------------------------------------------------------------
# Disease
# --------------------------------------------------------------------------------------
# Sites 5 and up (regional_NN) draw their scar-type mix from a Dirichlet with this mean
# and this concentration (alpha = concentration × fraction: 8, 7, 5). Sites 1-4 use the
# fixed archetype mixes in demographics.py.
SCAR_TYPE_FRACTIONS = {"none": 0.4, "ischaemic": 0.35, "non_ischaemic": 0.25}
REGIONAL_SCAR_TYPE_CONCENTRATION = 20.0
ISCHAEMIC_TERRITORY_WEIGHTS = {"LAD": 0.5, "RCA": 0.3, "LCx": 0.2}
ISCHAEMIC_HALF_WIDTH_DEG = (35.0, 70.0)
ISCHAEMIC_TRANSMURALITY = (0.5, 1.0)  # peak transmural extent, fraction of the wall
# Territory centre (phi, degrees: 0 anterior, 90 septal, ±180 inferior, −90 lateral) and the
# long-axis span as fractions of the LV length: (start range), (end range).
ISCHAEMIC_TERRITORIES = {
    "LAD": (30.0, (0.2, 0.45), (1.0, 1.1)),
    "RCA": (155.0, (0.0, 0.15), (0.55, 0.85)),
    "LCx": (-95.0, (0.0, 0.2), (0.5, 0.8)),
}
ISCHAEMIC_CENTRE_SD_DEG = 10.0
ISCHAEMIC_BORDER_RIPPLE = (0.0, 0.25)  # irregularity of the infarct border
LAD_APICAL_WRAP_FROM = 0.72  # fraction of the LV length where LAD scar starts to encircle the apex
ISCHAEMIC_WALL_THINNING = 0.35  # chronic infarct thinning at full transmurality
ISCHAEMIC_CAVITY_DILATION_MM = (0.0, 6.0)
ISCHAEMIC_OLDER_MALE_ODDS = 2.0  # relative weight of men over 55 when assigning MI

NON_ISCHAEMIC_PHENOTYPE_WEIGHTS = {"hcm": 0.4, "dcm_midwall": 0.35, "myocarditis": 0.25}
HCM_SEPTAL_EXCESS_MM = (3.0, 8.0)
HCM_CAVITY_REDUCTION_MM = (2.0, 6.0)
DCM_CAVITY_DILATION_MM = (4.0, 10.0)
DCM_LONG_AXIS_DILATION_MM = 4.0
NON_ISCHAEMIC_PATCHES = (2, 5)
NON_ISCHAEMIC_PATCH_HALF_WIDTH_DEG = (15.0, 40.0)
NON_ISCHAEMIC_PATCH_HALF_LENGTH_MM = (8.0, 22.0)
# Every non-ischaemic patch is an ellipsoid in (phi, z, transmural depth) with: centre phi,
# half-width (deg), centre z (fraction of the LV length), half-length (mm), transmural centre
# (0 endo .. 1 epi) and half-depth (wall fraction, capped at 0.5). Each record below gives
# only some of these; the rest are noted. A pair is a uniform range, a single number fixed.
# RV insertion (2 patches): half-width, z, half-length, depth, half-depth. The centre is each
# RV insertion point computed from the RV geometry, ± N(0, 5°).
HCM_RV_INSERTION_PATCH = ((10.0, 18.0), (0.1, 0.6), (15.0, 30.0), 0.55, (0.3, 0.4))
# HCM mid-wall: centre, centre sd, z, depth, half-depth; half-width and half-length from
# NON_ISCHAEMIC_PATCH_HALF_WIDTH_DEG and NON_ISCHAEMIC_PATCH_HALF_LENGTH_MM.
HCM_SEPTAL_PATCH = (90.0, 25.0, (0.15, 0.7), 0.5, (0.15, 0.25))
# DCM septal stripe: centre, centre sd, half-width, z, half-length, depth, half-depth.
DCM_STRIPE = (90.0, 15.0, (30.0, 55.0), (0.2, 0.65), (15.0, 30.0), 0.5, (0.12, 0.2))
# Myocarditis: centre phi range, z, depth, half-depth; half-width and half-length from the
# NON_ISCHAEMIC_PATCH_* knobs.
MYOCARDITIS_PATCH = ((-150.0, -60.0), (0.1, 0.8), 0.82, (0.22, 0.3))
MIN_SCAR_VOXELS = 20  # a scar case is redrawn until its mask holds at least this

# --------------------------------------------------------------------------------------
# Tissue relaxation ~10-20 min after 0.1-0.2 mmol/kg of an extracellular Gd agent
#   post-contrast R1 = 1/T1_native + ΔR1_blood · ECV / (1 − haematocrit)
# --------------------------------------------------------------------------------------
NATIVE_T1_MS = {  # (1.5 T, 3 T)
    "blood": (1580.0, 1930.0),
    "myocardium": (1000.0, 1180.0),
    "scar": (1100.0, 1300.0),
    "fat": (260.0, 330.0),  # apparent (IR-fitted) fat T1, unchanged by gadolinium
    "muscle": (1010.0, 1410.0),
    "liver": (590.0, 810.0),
    "lung": (1200.0, 1300.0),
    "marrow": (450.0, 550.0),
}
PROTON_DENSITY = {
    "air": 0.0,
    "blood": 1.0,
    "myocardium": 0.78,
    "scar": 0.85,
    "fat": 0.95,
    "muscle": 0.75,
    "liver": 0.75,
    "lung": 0.12,
    "marrow": 0.85,
}
BLOOD_POST_CONTRAST_T1_MS_AT_1P5T = (250.0, 350.0)  # sets ΔR1 of blood (dose, delay, renal clearance)
RELAXIVITY_RATIO_3T = 0.85  # r1 of Gd chelates at 3 T relative to 1.5 T
HAEMATOCRIT_MEAN = {"male": 0.44, "female": 0.40}
HAEMATOCRIT_SD = 0.03
HAEMATOCRIT_CLIP = (0.33, 0.50)
ECV = {  # mean, sd
    "myocardium_male": (0.25, 0.02),
    "myocardium_female": (0.27, 0.02),
    "scar_ischaemic": (0.62, 0.06),
    "scar_non_ischaemic": (0.50, 0.04),
    "muscle": (0.10, 0.02),
    "liver": (0.28, 0.03),
    "lung": (0.30, 0.05),
    "marrow": (0.12, 0.03),
}
ECV_MYOCARDIUM_CLIP = (0.20, 0.32)
SCAR_MIN_ECV_EXCESS = 0.18  # scar ECV at least this above remote myocardium

# --------------------------------------------------------------------------------------
# Scanners and sites
# --------------------------------------------------------------------------------------
TI_MISNULL_MS = (10.0, 40.0)  # site TI set this much longer than the myocardial null…
TI_TOO_SHORT_MS = (10.0, 25.0)  # …or, at some sites, this much shorter
TI_TOO_SHORT_FRACTION = 0.35  # share of sites whose habit is a too-short TI
TI_CASE_JITTER_SD_MS = 8.0
TI_OFFSET_CLIP_MS = (-30.0, 50.0)  # site offset + case jitter, never further than this
SNR_BLOOD = {1.5: (18.0, 32.0), 3.0: (28.0, 50.0)}  # blood signal / noise sd, per site
SNR_CASE_JITTER_SD = 0.12  # relative, per case (body size, coil placement)
BIAS_LOG_AMPLITUDE = {1.5: (0.06, 0.14), 3.0: (0.18, 0.32)}  # sd of log-bias over the FOV
PSF_SIGMA_PX = (0.45, 0.75)  # Gaussian point spread (k-space truncation, interpolation)
IN_PLANE_SUPERSAMPLING = 2  # sub-pixel samples per axis for partial volume
THROUGH_PLANE_SAMPLES = 3  # samples across the slice thickness for partial volume
RECEIVER_GAIN_JITTER = (0.85, 1.15)  # per-case scale of raw intensities (auto-prescan)
MAX_STORED_VALUE = 4095  # BitsStored 12

# Pixel spacing is per vendor (VendorProfile.pixel_spacing_mm in scanners.py: 1.3-1.9 mm).
MATRIX = (144, 192)  # clip for rows and columns
MIN_FIELD_OF_VIEW_MM = 240.0
SLICE_THICKNESS_CHOICES_MM = (6.0, 7.0, 8.0, 8.0, 8.0, 10.0)  # per site; 8 mm most common
SLICE_GAP_CHOICES_MM = (0.0, 0.0, 1.0, 2.0)  # per site, for slices thinner than the next knob
NO_SLICE_GAP_FROM_THICKNESS_MM = 10.0  # slices this thick or thicker are contiguous
N_SLICES = (8, 12)  # clip of the slice count
BASE_PLANE_MARGIN_MM = (2.0, 8.0)  # first slice centre below the base plane
APEX_MARGIN_MM = 2.0  # last slice centre at least this far inside the epicardial apex

CINE_PHASES = 25  # cardiac phases of every cine series (whole exams, cmr.phantom.exam)

# --------------------------------------------------------------------------------------
# Hospital records
# --------------------------------------------------------------------------------------
ETHNIC_GROUP_IN_DICOM_FRACTION = 0.4  # cases whose DICOM carries EthnicGroup
ETHNICITY_UNRECORDED_FRACTION = 0.1  # manifest ethnicity left blank
STUDY_YEARS = (2018, 2024)

# --------------------------------------------------------------------------------------
# Injected subgroup gap (fairness benchmarks); off unless asked for
# --------------------------------------------------------------------------------------
# Defaults of spec.SubgroupDifficulty (each must lie within 0.2-2.0).
DIFFICULTY_WALL_SCALE = 0.8  # harder group's wall thickness multiplied by this (after WALL_CLIP_MM)
DIFFICULTY_SNR_SCALE = 0.7  # harder group's SNR multiplied by this
DIFFICULTY_SCAR_ECV_SCALE = 1.0  # harder group's scar ECV excess over remote scaled by this

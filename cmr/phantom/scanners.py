"""Vendor and field-strength profiles, and the scanner each site gets.

Each vendor writes its own manufacturer strings, model names, series
descriptions, image types, sequence parameters and raw intensity range; each
site draws its own protocol (resolution, slice thickness), noise, bias and
inversion-time habit: pixel spacing from its vendor's range below, the rest
from ``knobs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.phantom import knobs
from cmr.phantom.spec import ScannerProfile

VENDORS = ("Siemens", "GE", "Philips", "Canon")


@dataclass(frozen=True)
class VendorProfile:
    vendor: str
    manufacturers: tuple[str, ...]  # raw strings seen in the wild, one per site
    models: dict[float, tuple[str, ...]]  # by field strength
    software_versions: tuple[str, ...]
    series_descriptions: tuple[str, ...]
    image_type: tuple[str, ...]
    scanning_sequence: str
    sequence_variant: str
    sequence_names: tuple[str, ...]
    repetition_time_ms: tuple[float, float]
    echo_time_ms: tuple[float, float]
    flip_angle_deg: tuple[float, ...]
    pixel_spacing_mm: tuple[float, float]
    raw_gain: tuple[float, float]
    rescale_slope: tuple[float, float] | None  # None: no rescale tags written
    station_prefixes: tuple[str, ...]


VENDOR_PROFILES: dict[str, VendorProfile] = {
    "Siemens": VendorProfile(
        vendor="Siemens",
        manufacturers=("SIEMENS", "Siemens Healthineers", "Siemens"),
        models={1.5: ("Aera", "Avanto_fit", "MAGNETOM Sola"), 3.0: ("Skyra", "Prisma", "MAGNETOM Vida")},
        software_versions=("syngo MR E11", "syngo MR XA20", "syngo MR XA31"),
        series_descriptions=("LGE_PSIR_SAX", "tfl_psir_SAX_MAG", "de_tfl_sax_MAG"),
        image_type=("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D", "MAGNITUDE"),
        scanning_sequence="GR\\IR",
        sequence_variant="SP\\MP\\OSP",
        sequence_names=("*tfl2d1", "*tfl2d1_16"),
        repetition_time_ms=(700.0, 900.0),  # Siemens writes the inversion repetition
        echo_time_ms=(1.9, 3.3),
        flip_angle_deg=(20.0, 25.0),
        pixel_spacing_mm=(1.3, 1.7),
        raw_gain=(1800.0, 2600.0),
        rescale_slope=None,
        station_prefixes=("AWP", "MRC"),
    ),
    "GE": VendorProfile(
        vendor="GE",
        manufacturers=("GE MEDICAL SYSTEMS", "GE Healthcare", "GE MEDICAL SYSTEMS"),
        models={
            1.5: ("SIGNA Artist", "Optima MR450w", "SIGNA Explorer"),
            3.0: ("SIGNA Premier", "DISCOVERY MR750", "SIGNA Architect"),
        },
        software_versions=(
            "27\\LX\\MR Software release:RX27.0_R04",
            "29\\LX\\MR Software release:MR29.1_EA",
            "DV26.0_R03",
        ),
        series_descriptions=("DE_SAX", "MDE SAX", "2D MDE SAX"),
        image_type=("ORIGINAL", "PRIMARY", "OTHER"),
        scanning_sequence="GR\\IR",
        sequence_variant="SK\\MP\\OSP",
        sequence_names=("fgre_mde", "mde_2d"),
        repetition_time_ms=(5.5, 7.5),
        echo_time_ms=(2.6, 3.4),
        flip_angle_deg=(20.0, 25.0),
        pixel_spacing_mm=(1.4, 1.9),
        raw_gain=(4500.0, 6500.0),
        rescale_slope=None,
        station_prefixes=("GEMR", "CMRSIGNA"),
    ),
    "Philips": VendorProfile(
        vendor="Philips",
        manufacturers=("Philips Medical Systems", "Philips", "Philips Healthcare"),
        models={
            1.5: ("Ingenia", "Achieva", "Ingenia Ambition"),
            3.0: ("Ingenia", "Achieva dStream", "Ingenia Elition X"),
        },
        software_versions=("5.4.1\\5.4.1.1", "5.7.1\\5.7.1.2", "3.2.3\\3.2.3.2"),
        series_descriptions=("LGE SAX", "SAX_IR_TFE", "PSIR_SAX_M"),
        image_type=("ORIGINAL", "PRIMARY", "M_IR", "M", "IR"),
        scanning_sequence="GR\\IR",
        sequence_variant="SK\\MP\\SS",
        sequence_names=("T1TFE", "IR_TFE"),
        repetition_time_ms=(5.5, 6.5),
        echo_time_ms=(2.7, 3.1),
        flip_angle_deg=(15.0, 25.0),
        pixel_spacing_mm=(1.3, 1.8),
        raw_gain=(900.0, 1600.0),
        rescale_slope=(0.9, 2.9),
        station_prefixes=("PHILIPS-", "MR-ING"),
    ),
    "Canon": VendorProfile(
        vendor="Canon",
        manufacturers=("TOSHIBA_MEC", "Canon Medical Systems", "CANON_MEC"),
        models={1.5: ("Vantage Orian", "Vantage Titan"), 3.0: ("Vantage Galan 3T", "Vantage Titan 3T")},
        software_versions=("V6.0*R009", "V7.0*R002", "V5.0SP0004"),
        series_descriptions=("LGE SA", "IR_LGE_SAX", "SA PSIR MAG"),
        image_type=("ORIGINAL", "PRIMARY", "MR"),
        scanning_sequence="GR\\IR",
        sequence_variant="SP\\MP",
        sequence_names=("FFE2D_IR", "SSFP_IR"),
        repetition_time_ms=(4.5, 7.0),
        echo_time_ms=(2.2, 3.2),
        flip_angle_deg=(15.0, 20.0, 25.0),
        pixel_spacing_mm=(1.4, 1.9),
        raw_gain=(1200.0, 2200.0),
        rescale_slope=None,
        station_prefixes=("TMSMR", "CANONMR"),
    ),
}


def site_vendor_and_field(
    site_index: int, rng_consortium: np.random.Generator, rng_site: np.random.Generator
) -> tuple[str, float]:
    """Sites 1-4 cover all four vendors; sites 1-2 (and so any three) cover both field strengths."""
    vendor_order = rng_consortium.permutation(len(VENDORS))
    first_field = 1.5 if rng_consortium.random() < 0.5 else 3.0
    other_field = 3.0 if first_field == 1.5 else 1.5
    field_pattern = (first_field, other_field, other_field, first_field)
    if site_index < 4:
        return VENDORS[int(vendor_order[site_index])], field_pattern[site_index]
    vendor = VENDORS[int(rng_site.integers(len(VENDORS)))]
    return vendor, (1.5 if rng_site.random() < 0.55 else 3.0)


def sample_scanner(rng: np.random.Generator, site_index: int, vendor: str, field_strength_t: float) -> ScannerProfile:
    profile = VENDOR_PROFILES[vendor]
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    pixel_spacing = round(float(rng.uniform(*profile.pixel_spacing_mm)), 4)
    # Matrix: as many pixels as the field of view needs, within the usual matrix range.
    fov_mm = max(knobs.MIN_FIELD_OF_VIEW_MM, float(rng.uniform(280.0, 340.0)))
    rows = int(np.clip(round(fov_mm / pixel_spacing / 16) * 16, *knobs.MATRIX))
    columns = int(np.clip(round(rows * float(rng.choice([1.0, 1.0, 1.125, 1.25])) / 16) * 16, *knobs.MATRIX))
    if rows * pixel_spacing < knobs.MIN_FIELD_OF_VIEW_MM:
        rows = columns = knobs.MATRIX[1]
    slice_thickness = float(rng.choice(knobs.SLICE_THICKNESS_CHOICES_MM))
    slice_gap = (
        float(rng.choice(knobs.SLICE_GAP_CHOICES_MM)) if slice_thickness < knobs.NO_SLICE_GAP_FROM_THICKNESS_MM else 0.0
    )
    if rng.random() < knobs.TI_TOO_SHORT_FRACTION:
        ti_offset = -float(rng.uniform(*knobs.TI_TOO_SHORT_MS))
    else:
        ti_offset = float(rng.uniform(*knobs.TI_MISNULL_MS))
    rescale_slope = None if profile.rescale_slope is None else round(float(rng.uniform(*profile.rescale_slope)), 6)
    station_number = int(rng.integers(10000, 99999))
    return ScannerProfile(
        vendor=vendor,
        manufacturer=profile.manufacturers[site_index % len(profile.manufacturers)],
        model=pick(profile.models[field_strength_t]),
        field_strength_t=field_strength_t,
        software_version=pick(profile.software_versions),
        station_name=f"{pick(profile.station_prefixes)}{station_number}",
        device_serial_number=str(int(rng.integers(10_000, 999_999))),
        series_description=pick(profile.series_descriptions),
        image_type=profile.image_type,
        scanning_sequence=profile.scanning_sequence,
        sequence_variant=profile.sequence_variant,
        sequence_name=pick(profile.sequence_names),
        repetition_time_ms=round(float(rng.uniform(*profile.repetition_time_ms)), 2),
        echo_time_ms=round(float(rng.uniform(*profile.echo_time_ms)), 2),
        flip_angle_deg=float(pick(profile.flip_angle_deg)),
        pixel_spacing_mm=pixel_spacing,
        rows=rows,
        columns=columns,
        slice_thickness_mm=slice_thickness,
        slice_gap_mm=slice_gap,
        ti_offset_ms=round(ti_offset, 1),
        snr_blood=round(float(rng.uniform(*knobs.SNR_BLOOD[field_strength_t])), 1),
        bias_log_amplitude=round(float(rng.uniform(*knobs.BIAS_LOG_AMPLITUDE[field_strength_t])), 3),
        psf_sigma_px=round(float(rng.uniform(*knobs.PSF_SIGMA_PX)), 3),
        raw_gain=round(float(rng.uniform(*profile.raw_gain)), 1),
        rescale_slope=rescale_slope,
        rescale_intercept=None if rescale_slope is None else 0.0,
    )

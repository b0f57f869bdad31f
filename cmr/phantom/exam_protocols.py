"""What each vendor's scanner writes for every series of a CMR exam besides the LGE stack.

Series descriptions, image types and sequence names follow what the four vendors'
cardiac protocols write (Siemens, GE, Philips, Canon); ingest recognises series by
their structure and uses these strings only as hints. The LGE short-axis stack's own
strings are the site's (``ScannerProfile``); the PSIR partner and the long-axis LGE
derive theirs from it. ``site_exam_protocol`` draws a site's acquisition settings
(matrix, timing, flip angles) once, from the site's own stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cmr.phantom.spec import ScannerProfile
from cmr.series_kinds import SeriesKind

# Every role, in acquisition order (the LGE stack, written by dicom_writer, sits between).
ROLES = (
    "localizer",
    "cine_2ch",
    "cine_3ch",
    "cine_4ch",
    "cine_sax",
    "molli_native",
    "t1map_native",
    "t2prep",
    "t2map",
    "lge_sax",
    "lge_sax_psir",
    "lge_2ch",
    "lge_4ch",
    "molli_post",
    "t1map_post",
)
FOLDERS = {role: role.upper() for role in ROLES}
KINDS = {
    "localizer": SeriesKind.LOCALIZER,
    "cine_sax": SeriesKind.CINE,
    "cine_2ch": SeriesKind.CINE_LONG_AXIS,
    "cine_3ch": SeriesKind.CINE_LONG_AXIS,
    "cine_4ch": SeriesKind.CINE_LONG_AXIS,
    "lge_sax": SeriesKind.LGE_STACK,
    "lge_sax_psir": SeriesKind.LGE_PSIR,
    "lge_2ch": SeriesKind.LGE_LONG_AXIS,
    "lge_4ch": SeriesKind.LGE_LONG_AXIS,
    "molli_native": SeriesKind.MOLLI,
    "molli_post": SeriesKind.MOLLI,
    "t1map_native": SeriesKind.T1_MAP,
    "t1map_post": SeriesKind.T1_MAP,
    "t2prep": SeriesKind.T2_PREP,
    "t2map": SeriesKind.T2_MAP,
}
PSIR_VENDORS = ("Siemens", "Philips")  # GE and Canon sites export the magnitude only
# Cine matrix: acquired resolution (reconstructed without interpolation), a rectangular field
# of view; at most 160 columns (a 250-300 mm field of view): a stack × 25 phases is most of
# an exam's files and bytes.
CINE_PIXEL_MM = (1.7, 1.9)
CINE_PHASE_FOV = (0.75, 0.8125)
CINE_MAX_COLUMNS = 160


@dataclass(frozen=True)
class SeriesStrings:
    """The header strings of one series."""

    description: str
    image_type: tuple[str, ...]
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    sequence_name: str
    scan_options: tuple[str, ...] = ()


class _Strings(NamedTuple):
    description: str  # {view}, {VIEW}: the long-axis view; {lge}, {molli}: that series' description
    image_type: tuple[str, ...] | None  # None: the LGE stack's own
    sequence_name: str | None  # None: the LGE stack's own


_ORIGINAL = ("ORIGINAL", "PRIMARY")
_SIEMENS_SOURCE = (*_ORIGINAL, "M", "NORM", "DIS2D")
_SIEMENS_T1MAP = ("DERIVED", "PRIMARY", "T1 MAP", "ND", "MOCO")
_PHILIPS_FFE = (*_ORIGINAL, "M_FFE", "M", "FFE")
# Per vendor and role ("cine_lax" and "lge_lax" stand for each long-axis view).
_VENDOR_STRINGS: dict[str, dict[str, _Strings]] = {
    "Siemens": {
        "localizer": _Strings("localizer", _SIEMENS_SOURCE, "*tfi2d1"),
        "cine_sax": _Strings("cine_tf2d_retro_sax", (*_ORIGINAL, "M", "RETRO", "DIS2D"), "*tfi2d1_12"),
        "cine_lax": _Strings("cine_tf2d_retro_{view}", (*_ORIGINAL, "M", "RETRO", "DIS2D"), "*tfi2d1_12"),
        "lge_sax_psir": _Strings("{lge}_PSIR", (*_ORIGINAL, "R", "NORM", "DIS2D"), None),
        "lge_lax": _Strings("tfl_psir_{view}_MAG", None, None),
        "molli_native": _Strings("MOLLI_5(3)3_native_sax", _SIEMENS_SOURCE, "*tfi2d1"),
        "molli_post": _Strings("MOLLI_4(1)3(1)2_post_sax", _SIEMENS_SOURCE, "*tfi2d1"),
        "t1map_native": _Strings("{molli}_T1 MAP", _SIEMENS_T1MAP, "*tfi2d1"),
        "t1map_post": _Strings("{molli}_T1 MAP", _SIEMENS_T1MAP, "*tfi2d1"),
        "t2prep": _Strings("T2prep_bSSFP_sax", _SIEMENS_SOURCE, "*tfi2d1_t2p"),
        "t2map": _Strings("T2prep_bSSFP_sax_T2 MAP", ("DERIVED", "PRIMARY", "T2 MAP", "ND", "MOCO"), "*tfi2d1_t2p"),
    },
    "GE": {
        "localizer": _Strings("3-Plane Loc", (*_ORIGINAL, "LOCALIZER"), "fiesta2d"),
        "cine_sax": _Strings("FIESTA CINE SAX", (*_ORIGINAL, "OTHER"), "fiestacine"),
        "cine_lax": _Strings("FIESTA CINE {VIEW}", (*_ORIGINAL, "OTHER"), "fiestacine"),
        "lge_lax": _Strings("MDE {VIEW}", None, None),
        "molli_native": _Strings("MOLLI T1 native", (*_ORIGINAL, "OTHER"), "molli_fiesta"),
        "molli_post": _Strings("MOLLI T1 post", (*_ORIGINAL, "OTHER"), "molli_fiesta"),
        "t1map_native": _Strings("T1 Map native", ("DERIVED", "PRIMARY", "T1MAP"), "molli_fiesta"),
        "t1map_post": _Strings("T1 Map post", ("DERIVED", "PRIMARY", "T1MAP"), "molli_fiesta"),
        "t2prep": _Strings("T2 prep FIESTA", (*_ORIGINAL, "OTHER"), "t2prep_fiesta"),
        "t2map": _Strings("T2 Map", ("DERIVED", "PRIMARY", "T2MAP"), "t2prep_fiesta"),
    },
    "Philips": {
        "localizer": _Strings("Survey", _PHILIPS_FFE, "B-TFE"),
        "cine_sax": _Strings("sBTFE_CINE_SA", _PHILIPS_FFE, "B-TFE"),
        "cine_lax": _Strings("BTFE_{VIEW}", _PHILIPS_FFE, "B-TFE"),
        "lge_sax_psir": _Strings("{lge}_PSIR", (*_ORIGINAL, "R_IR", "R", "IR"), None),
        "lge_lax": _Strings("PSIR_{VIEW}", None, None),
        "molli_native": _Strings("MOLLI_native", (*_ORIGINAL, "M_IR", "M", "IR"), "B-TFE"),
        "molli_post": _Strings("MOLLI_post", (*_ORIGINAL, "M_IR", "M", "IR"), "B-TFE"),
        "t1map_native": _Strings("T1map_native", ("DERIVED", "PRIMARY", "T1", "T1"), "B-TFE"),
        "t1map_post": _Strings("T1map_post", ("DERIVED", "PRIMARY", "T1", "T1"), "B-TFE"),
        "t2prep": _Strings("T2prep_BTFE", _PHILIPS_FFE, "B-TFE"),
        "t2map": _Strings("T2map", ("DERIVED", "PRIMARY", "T2", "T2"), "B-TFE"),
    },
    "Canon": {
        "localizer": _Strings("Locator", (*_ORIGINAL, "OTHER"), "FFE2D"),
        "cine_sax": _Strings("Cine SSFP SA", (*_ORIGINAL, "MR"), "TrueSSFP"),
        "cine_lax": _Strings("Cine SSFP {VIEW}", (*_ORIGINAL, "MR"), "TrueSSFP"),
        "lge_lax": _Strings("LGE {VIEW}", None, None),
        "molli_native": _Strings("MOLLI native", (*_ORIGINAL, "MR"), "TrueSSFP_IR"),
        "molli_post": _Strings("MOLLI post", (*_ORIGINAL, "MR"), "TrueSSFP_IR"),
        "t1map_native": _Strings("T1 Map native", ("DERIVED", "SECONDARY", "T1 MAP"), "TrueSSFP_IR"),
        "t1map_post": _Strings("T1 Map post", ("DERIVED", "SECONDARY", "T1 MAP"), "TrueSSFP_IR"),
        "t2prep": _Strings("T2prep SSFP", (*_ORIGINAL, "MR"), "TrueSSFP_T2p"),
        "t2map": _Strings("T2 Map", ("DERIVED", "SECONDARY", "T2 MAP"), "TrueSSFP_T2p"),
    },
}
# ScanningSequence, SequenceVariant, ScanOptions by kind of sequence (None: the LGE stack's own).
_BSSFP = (("GR",), ("SS",), ())
SIEMENS_BSSFP_VARIANT = ("SP",)  # as Siemens TrueFISP cines and localizers write it
_SEQUENCES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None] = {
    "localizer": _BSSFP,
    "cine": (("GR",), ("SS",), ("CG", "RETRO")),
    "lge": None,
    "molli": (("GR", "IR"), ("SK", "SS", "MP"), ("CG",)),
    "t1map": (("GR", "IR"), ("SK", "SS", "MP"), ()),
    "t2prep": (("GR",), ("SK", "SS", "MP"), ("CG",)),
    "t2map": (("GR",), ("SK", "SS", "MP"), ()),
}


def series_strings(scanner: ScannerProfile, role: str) -> SeriesStrings:
    """Header strings of ``role`` (one of ``ROLES`` but ``lge_sax``) on ``scanner``'s vendor."""
    table = _VENDOR_STRINGS[scanner.vendor]
    view = role.rsplit("_", 1)[-1]  # sax, 2ch, 3ch, 4ch …
    key = role if role in table else role.replace(view, "lax")
    if role == "lge_sax" or key not in table:
        raise ValueError(f"{scanner.vendor} scanners write no {role!r} series (roles: {ROLES})")
    entry = table[key]
    family = role.split("_", 1)[0]
    sequence = _SEQUENCES[family]
    if sequence is None:  # LGE: the stack's own sequence
        sequence = (
            tuple(scanner.scanning_sequence.split("\\")),
            tuple(scanner.sequence_variant.split("\\")),
            ("IR", "CG"),
        )
    if scanner.vendor == "Siemens" and family in ("localizer", "cine"):
        sequence = (sequence[0], SIEMENS_BSSFP_VARIANT, sequence[2])
    molli = table[role.replace("t1map", "molli")].description if family == "t1map" else ""
    return SeriesStrings(
        description=entry.description.format(view=view, VIEW=view.upper(), lge=scanner.series_description, molli=molli),
        image_type=entry.image_type if entry.image_type is not None else scanner.image_type,
        scanning_sequence=sequence[0],
        sequence_variant=sequence[1],
        sequence_name=entry.sequence_name if entry.sequence_name is not None else scanner.sequence_name,
        scan_options=sequence[2],
    )


@dataclass(frozen=True)
class SiteExamProtocol:
    """One site's settings for the series around the LGE stack (drawn once per site)."""

    cine_pixel_mm: float
    cine_phase_fov: float  # rows / columns of the cine matrix (rectangular field of view)
    cine_max_columns: int
    cine_phases: int
    cine_repetition_time_ms: float  # as written: Siemens writes the segment duration
    cine_echo_time_ms: float
    cine_flip_deg: float
    localizer_pixel_mm: float
    localizer_matrix: int
    mapping_pixel_mm: float
    mapping_matrix: tuple[int, int]  # rows, columns
    bssfp_tr_ms: float  # the readout's own TR (signal model; MOLLI and T2-prep headers)


def site_exam_protocol(rng: np.random.Generator, scanner: ScannerProfile, cine_phases: int) -> SiteExamProtocol:
    """Typical clinical values: cine 1.6-1.9 mm in-plane, flip 45-70° (lower at 3 T, SAR)."""
    high_field = scanner.field_strength_t > 2.0
    tr = round(float(rng.uniform(2.6, 3.4)), 2)
    segments = int(rng.choice((10, 12, 14)))
    localizer_matrix = int(rng.choice((128, 160)))
    mapping_pixel = round(float(rng.uniform(1.8, 2.2)), 3)
    mapping_columns = int(np.clip(round(scanner.columns * scanner.pixel_spacing_mm / mapping_pixel / 8) * 8, 128, 192))
    mapping_rows = int(round(mapping_columns * float(rng.uniform(0.75, 0.9)) / 8) * 8)
    return SiteExamProtocol(
        cine_pixel_mm=round(float(rng.uniform(*CINE_PIXEL_MM)), 4),
        cine_phase_fov=float(rng.choice(CINE_PHASE_FOV)),
        cine_max_columns=CINE_MAX_COLUMNS,
        cine_phases=cine_phases,
        cine_repetition_time_ms=round(tr * segments, 2) if scanner.vendor == "Siemens" else tr,
        cine_echo_time_ms=round(tr / 2, 2),
        cine_flip_deg=float(rng.choice((40.0, 45.0, 50.0) if high_field else (55.0, 60.0, 70.0))),
        localizer_pixel_mm=round(float(rng.uniform(360.0, 420.0)) / localizer_matrix, 4),
        localizer_matrix=localizer_matrix,
        mapping_pixel_mm=mapping_pixel,
        mapping_matrix=(mapping_rows, mapping_columns),
        bssfp_tr_ms=tr,
    )

"""Normalise subgroup attributes from DICOM headers and manifests onto ``cmr.attributes``.

Every function here maps free text or a DICOM value onto one of the value sets in
``cmr.attributes`` and returns ``"unknown"`` for anything it does not recognise: a value
is never guessed. Manifest values override DICOM values; a blank manifest cell means
"the manifest says nothing" and leaves the DICOM value in place, while a non-blank one
wins even when it normalises to ``"unknown"`` (e.g. "Not stated": the hospital record
is the authority, and a typo there must not fall back to a possibly stale header).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Protocol

from cmr.attributes import UNKNOWN, SubgroupAttributes

# Manifest columns that override the DICOM value of an attribute.
OVERRIDE_COLUMNS = ("sex", "age", "ethnicity", "vendor", "field_strength")


def _words(text: object) -> list[str]:
    """Lower-case alphanumeric words of a free-text value."""
    return re.findall(r"[a-z0-9]+", str(text or "").lower())


# ---------------------------------------------------------------- vendor

# Words that name a vendor, in any of the spellings scanners write into Manufacturer
# (SIEMENS, Siemens Healthineers, Siemens Healthcare GmbH, GE MEDICAL SYSTEMS,
# GE Healthcare, Philips Medical Systems, Philips Healthcare, TOSHIBA_MEC, Canon
# Medical Systems, ...). Other vendors (Hitachi, Fujifilm, United Imaging, Esaote)
# have no value in VENDORS and stay unknown.
_VENDOR_WORDS = {
    "siemens": "Siemens",
    "ge": "GE",
    "gems": "GE",
    "philips": "Philips",
    "toshiba": "Canon",
    "canon": "Canon",
}


def normalise_vendor(manufacturer: object) -> str:
    words = _words(str(manufacturer or "").replace("_", " "))
    if " ".join(words[:2]) == "general electric":
        return "GE"
    vendors = {_VENDOR_WORDS[w] for w in words if w in _VENDOR_WORDS}
    return vendors.pop() if len(vendors) == 1 else UNKNOWN


# ---------------------------------------------------------------- field strength


def normalise_field_strength(value: object) -> str:
    """MagneticFieldStrength (tesla; some older scanners wrote gauss) → "1.5T"/"3T".

    Nominal 1.5 T systems report 1.5 or 1.494; nominal 3 T systems 3, 3.0 or 2.89.
    Other fields (0.55 T, 1 T, 7 T) have no value in FIELD_STRENGTHS: unknown.
    """
    text = str(value if value is not None else "").replace(",", ".")  # "1,5" from a spreadsheet
    match = re.search(r"\d+(?:\.\d*)?|\.\d+", text)
    if match is None:
        return UNKNOWN
    tesla = float(match.group())
    if tesla > 100:  # gauss: 15000 G = 1.5 T
        tesla /= 10_000
    if 1.3 <= tesla <= 1.7:
        return "1.5T"
    if 2.7 <= tesla <= 3.2:
        return "3T"
    return UNKNOWN


# ---------------------------------------------------------------- age


def age_band(years: float | None) -> str:
    """Whole years of age → AGE_BANDS; implausible or missing → unknown."""
    if years is None or not math.isfinite(years) or years < 0 or years > 130:
        return UNKNOWN
    if years < 18:
        return "0-17"
    if years < 40:
        return "18-39"
    if years < 60:
        return "40-59"
    if years < 75:
        return "60-74"
    return "75+"


_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


def parse_patient_age(patient_age: object) -> float | None:
    """DICOM Age String ("058Y", "030M", "012W", "005D") → years.

    "000Y" is what several scanners write when the age is not known (a real infant's
    age is written in months, weeks or days), so it is treated as missing.
    """
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(patient_age or "").upper())
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2)
    if unit == "Y" and number == 0:
        return None
    return number * _DAYS_PER_UNIT[unit] / 365.25


def _parse_da(value: object) -> dt.date | None:
    text = str(value or "").strip().replace(".", "")  # old ACR-NEMA wrote YYYY.MM.DD
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


def age_years_between(birth_date: object, on_date: object) -> float | None:
    """Completed years between two DICOM dates (DA "YYYYMMDD"), or None."""
    born, seen = _parse_da(birth_date), _parse_da(on_date)
    if born is None or seen is None or seen < born:
        return None
    return float(seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day)))


def normalise_age(patient_age: object, birth_date: object = None, on_date: object = None) -> str:
    """PatientAge if it is a valid Age String, else BirthDate and the study date."""
    years = parse_patient_age(patient_age)
    if years is None:
        years = age_years_between(birth_date, on_date)
    return age_band(years)


def normalise_manifest_age(value: object) -> str:
    """A manifest ``age``: years ("58", "58.5"), a DICOM Age String, or a band label."""
    text = str(value or "").strip()
    if text in ("0-17", "18-39", "40-59", "60-74", "75+"):
        return text
    if re.fullmatch(r"\d{1,3}(\.\d+)?", text):
        return age_band(float(text))
    return age_band(parse_patient_age(text))


# ---------------------------------------------------------------- sex

_SEXES = {"m": "male", "male": "male", "f": "female", "female": "female"}


def normalise_sex(value: object) -> str:
    """PatientSex M/F (O and blank are unknown: SEXES records female/male only)."""
    return _SEXES.get(str(value or "").strip().lower(), UNKNOWN)


# ---------------------------------------------------------------- ethnicity

# Free text from EthnicGroup or a hospital record → UK census high-level groups.
# Phrases that say the value is not known come first; "mixed" wins over the groups it
# mixes ("White and Black Caribbean" is Mixed); then exactly one group must be named.
_NOT_STATED = (
    "not stated",
    "not known",
    "unknown",
    "refused",
    "declined",
    "prefer not",
    "not recorded",
    "not given",
    "unavailable",
    "n a",
)
_MIXED_WORDS = {"mixed", "multiple", "multiethnic", "biracial"}
_GROUP_WORDS = {
    "White": {"white", "caucasian", "irish", "gypsy", "traveller", "roma"},
    "Black": {"black", "african", "caribbean"},
    "Asian": {"asian", "indian", "pakistani", "bangladeshi", "chinese"},
}
_OTHER_WORDS = {"arab", "other"}
# Phrases whose words would otherwise point at the wrong group.
_PHRASES = {
    "american indian": UNKNOWN,
    "native american": UNKNOWN,
    "north african": UNKNOWN,
    "white and black": "Mixed",
    "white and asian": "Mixed",
    "black and white": "Mixed",
    "asian and white": "Mixed",
}


def normalise_ethnicity(text: object) -> str:
    words = _words(text)
    if not words:
        return UNKNOWN
    phrase = f" {' '.join(words)} "
    if any(f" {marker} " in phrase for marker in _NOT_STATED):
        return UNKNOWN
    for key, value in _PHRASES.items():
        if f" {key} " in phrase:
            return value
    if _MIXED_WORDS & set(words):
        return "Mixed"
    groups = [group for group, vocabulary in _GROUP_WORDS.items() if vocabulary & set(words)]
    if len(groups) == 1:
        return groups[0]
    if not groups and _OTHER_WORDS & set(words):
        return "Other"
    return UNKNOWN


# ---------------------------------------------------------------- everything together


class Header(Protocol):
    """What the attributes are read from: anything with ``.get(keyword)``, a pydicom Dataset or a dict."""

    def get(self, keyword: str, /) -> object: ...


def _study_date(header: Header) -> object:
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        if header.get(keyword):
            return header.get(keyword)
    return None


def subgroup_attributes(header: Header, overrides: Mapping[str, str] | None = None) -> SubgroupAttributes:
    """Attributes from a DICOM header (keyword → value) with manifest overrides.

    ``header`` is anything with ``.get(keyword)``: a pydicom Dataset or a dict.
    ``overrides`` holds the manifest's cells for OVERRIDE_COLUMNS; blank cells are ignored.
    """
    given = {k: str(v).strip() for k, v in (overrides or {}).items() if str(v or "").strip()}
    return SubgroupAttributes(
        sex=normalise_sex(given["sex"]) if "sex" in given else normalise_sex(header.get("PatientSex")),
        age_band=(
            normalise_manifest_age(given["age"])
            if "age" in given
            else normalise_age(header.get("PatientAge"), header.get("PatientBirthDate"), _study_date(header))
        ),
        ethnicity=normalise_ethnicity(given.get("ethnicity", header.get("EthnicGroup"))),
        vendor=normalise_vendor(given.get("vendor", header.get("Manufacturer"))),
        field_strength=normalise_field_strength(given.get("field_strength", header.get("MagneticFieldStrength"))),
    )

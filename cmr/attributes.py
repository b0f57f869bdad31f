"""Subgroup attributes of a case, as the fairness audit sees them.

Values are normalised (``cmr.normalise``) before they are stored; anything the
data does not say stays ``UNKNOWN`` and is never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

UNKNOWN = "unknown"

SEXES = ("female", "male", UNKNOWN)
AGE_BANDS = ("0-17", "18-39", "40-59", "60-74", "75+", UNKNOWN)
VENDORS = ("Siemens", "GE", "Philips", "Canon", UNKNOWN)
FIELD_STRENGTHS = ("1.5T", "3T", UNKNOWN)
# Categories follow the UK census high-level groups, which hospital records in the
# consortium already use; free text from EthnicGroup is mapped onto them.
ETHNICITIES = ("White", "Black", "Asian", "Mixed", "Other", UNKNOWN)

ATTRIBUTE_NAMES = ("sex", "age_band", "ethnicity", "vendor", "field_strength")


@dataclass(frozen=True)
class SubgroupAttributes:
    sex: str = UNKNOWN
    age_band: str = UNKNOWN
    ethnicity: str = UNKNOWN
    vendor: str = UNKNOWN
    field_strength: str = UNKNOWN

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

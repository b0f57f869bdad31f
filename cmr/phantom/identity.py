"""Fake but realistic identifiers, so that de-identification has something to remove.

Every name, number and address here is invented. UIDs are name-based UUIDs of
the seed, site, case and role under the ``2.25.`` root (ISO/IEC 9834-8), so a
re-run writes the same UIDs and another seed writes others. (pydicom's
``generate_uid(prefix=None, ...)`` ignores its entropy sources and is random.)
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np

from cmr.phantom.demographics import Patient

INSTITUTIONS = (
    ("St Aldhelm's University Hospital", "1 Infirmary Road, Northgate NG1 4XQ"),
    ("Riverside Heart Centre", "22 Quayside Walk, Eastport EP3 9ZT"),
    ("Kingsmere General Hospital", "Kingsmere Lane, Kingsmere KM7 2AB"),
    ("Royal Westbury Infirmary", "Westbury Hill, Westbury WB2 8LN"),
    ("Harbourview Medical Centre", "9 Harbour Parade, Southsea Bay SB4 1RR"),
    ("Ashdown Cardiothoracic Institute", "Ashdown Park, Ashdown AS5 6PE"),
    ("Millbrook District Hospital", "Mill Street, Millbrook MB9 3CC"),
    ("Queen Adela Hospital", "400 Crown Road, Adelaton AD1 7QA"),
)

_GIVEN = {
    ("male", "White"): ("JAMES", "DAVID", "PAUL", "ANDREW", "MICHAEL", "PETER", "GARETH", "THOMAS"),
    ("female", "White"): ("SARAH", "HELEN", "CLAIRE", "EMMA", "MARGARET", "JOANNE", "RACHEL", "SUSAN"),
    ("male", "Black"): ("KWAME", "DANIEL", "OLUWASEUN", "MARCUS", "CHINEDU", "TYRONE", "EMMANUEL", "KOFI"),
    ("female", "Black"): ("ADAEZE", "GRACE", "FUNMILAYO", "SHANICE", "ABENA", "PATIENCE", "MARCIA", "NGOZI"),
    ("male", "Asian"): ("RAJESH", "WEI", "IMRAN", "SANJAY", "HARPREET", "TARIQ", "JUN", "ARJUN"),
    ("female", "Asian"): ("PRIYA", "MEI", "AISHA", "SUNITA", "FATIMA", "LIN", "ANJALI", "NUSRAT"),
}
_FAMILY = {
    "White": ("SMITH", "JONES", "TAYLOR", "BROWN", "WILLIAMS", "WILSON", "EVANS", "THOMPSON", "HUGHES", "WALKER"),
    "Black": ("OKAFOR", "MENSAH", "ADEYEMI", "CAMPBELL", "OKONKWO", "BOATENG", "GRANT", "ASANTE", "BROWN", "OWUSU"),
    "Asian": ("PATEL", "KHAN", "SINGH", "CHEN", "AHMED", "SHARMA", "WANG", "HUSSAIN", "BEGUM", "LI"),
}
_PHYSICIANS = (
    "HARGREAVES^ALAN^^DR",
    "OKORO^NNEKA^^DR",
    "MISTRY^KIRAN^^DR",
    "FENWICK^ROSALIND^^DR",
    "LAWSON^IAN^^DR",
    "CHOUDHURY^SAMEERA^^DR",
    "BAXTER^HUGH^^DR",
    "NAKAMURA^KEN^^DR",
)
_OPERATORS = ("RADIOGRAPHER^JANE", "PRICE^L", "MORGAN^T", "SHAH^R", "OBI^C", "DUNN^K", "REEVES^M")

# Medical record number styles, one per site: (prefix, digits)
_MRN_STYLES = (("RX", 7), ("", 8), ("MRN", 6), ("H", 7), ("K", 9), ("", 10), ("WB", 6), ("Q", 8))

# Free text that scanners and RIS systems put in EthnicGroup (SH: 16 characters at most).
ETHNIC_GROUP_FREE_TEXT = {
    "White": ("White British", "WHITE", "White Other", "White Irish", "Caucasian"),
    "Black": ("Black African", "Black Caribbean", "BLACK", "Black British"),
    "Asian": ("Asian - Indian", "Chinese", "Asian Pakistani", "Bangladeshi", "ASIAN"),
    "Mixed": ("Mixed", "MIXED", "Mixed W/Asian", "Mixed W/Black"),
    "Other": ("Other", "Arab", "Any other group"),
}


def derive_uid(*entropy: object) -> str:
    """A DICOM UID that is a pure function of ``entropy`` (seed, site, case, role…)."""
    # A separator between parts, so that (1, 11) and (11, 1) give different UIDs.
    name = "\x1f".join(["cmrfl-phantom", *map(str, entropy)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


@dataclass(frozen=True)
class HospitalIdentity:
    """What the hospital's systems wrote about this patient and study."""

    patient_id: str
    patient_name: str
    birth_date: str  # YYYYMMDD
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    accession_number: str
    study_id: str
    series_number: int
    referring_physician: str
    operator: str
    ethnic_group_dicom: str | None
    ethnicity_recorded: str


def sample_identity(
    rng: np.random.Generator,
    site_index: int,
    case_index: int,
    cases_per_site: int,
    patient: Patient,
    first_study_year: int,
    last_study_year: int,
    ethnic_group_in_dicom_fraction: float,
    ethnicity_unrecorded_fraction: float,
) -> HospitalIdentity:
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    name_group = (
        patient.ethnicity if patient.ethnicity in ("White", "Black", "Asian") else pick(("White", "Black", "Asian"))
    )
    given = pick(_GIVEN[(patient.sex, name_group)])
    family = pick(_FAMILY[name_group])
    prefix, digits = _MRN_STYLES[site_index % len(_MRN_STYLES)]
    # The case index replaces the low digits of the number, so that MRNs never collide
    # within a site: the last 3 digits up to 1000 cases per site, more above that.
    block = 10 ** max(3, len(str(cases_per_site - 1)))
    number = int(rng.integers(10 ** (digits - 1), 10**digits)) // block * block + case_index
    patient_id = f"{prefix}{number:0{digits}d}"

    first = dt.date(first_study_year, 1, 1).toordinal()
    last = dt.date(last_study_year, 12, 31).toordinal()
    study_day = dt.date.fromordinal(int(rng.integers(first, last + 1)))
    birth = study_day - dt.timedelta(days=round(patient.age_years * 365.25) + int(rng.integers(1, 365)))
    study_time = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"

    ethnic_group_dicom = (
        pick(ETHNIC_GROUP_FREE_TEXT[patient.ethnicity]) if rng.random() < ethnic_group_in_dicom_fraction else None
    )
    ethnicity_recorded = "" if rng.random() < ethnicity_unrecorded_fraction else patient.ethnicity
    return HospitalIdentity(
        patient_id=patient_id,
        patient_name=f"{family}^{given}",
        birth_date=birth.strftime("%Y%m%d"),
        study_date=study_day.strftime("%Y%m%d"),
        study_time=study_time,
        accession_number=f"{'ACC' if site_index % 2 else 'A'}{int(rng.integers(10**8, 10**9))}",
        study_id=str(int(rng.integers(1000, 99999))),
        series_number=int(rng.integers(8, 40)),
        referring_physician=pick(_PHYSICIANS),
        operator=pick(_OPERATORS),
        ethnic_group_dicom=ethnic_group_dicom,
        ethnicity_recorded=ethnicity_recorded,
    )


def institution(site_index: int) -> tuple[str, str]:
    name, address = INSTITUTIONS[site_index % len(INSTITUTIONS)]
    if site_index >= len(INSTITUTIONS):
        name = f"{name} ({site_index // len(INSTITUTIONS) + 1})"
    return name, address

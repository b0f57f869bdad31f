"""Attribute normalisation: the spellings sites write, onto cmr.attributes' value sets."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from cmr.attributes import AGE_BANDS, ETHNICITIES, FIELD_STRENGTHS, SEXES, VENDORS, SubgroupAttributes
from cmr.normalise import (
    normalise_age,
    normalise_ethnicity,
    normalise_field_strength,
    normalise_manifest_age,
    normalise_sex,
    normalise_vendor,
    subgroup_attributes,
)


@pytest.mark.parametrize(
    ("manufacturer", "vendor"),
    [
        ("SIEMENS", "Siemens"),
        ("Siemens Healthineers", "Siemens"),
        ("Siemens Healthcare GmbH", "Siemens"),
        ("GE MEDICAL SYSTEMS", "GE"),
        ("GE Healthcare", "GE"),
        ("General Electric", "GE"),
        ("Philips Medical Systems", "Philips"),
        ("Philips Healthcare", "Philips"),
        ("Philips", "Philips"),
        ("TOSHIBA_MEC", "Canon"),
        ("Toshiba", "Canon"),
        ("Canon Medical Systems", "Canon"),
        ("CANON_MEC", "Canon"),
        ("Hitachi Medical Corporation", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        ("Agenda", "unknown"),  # "ge" inside a word is not GE
    ],
)
def test_vendor_spellings_map_to_one_vendor(manufacturer, vendor):
    assert normalise_vendor(manufacturer) == vendor


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (1.5, "1.5T"),
        ("1.5", "1.5T"),
        (1.494, "1.5T"),
        ("15000", "1.5T"),
        ("1,5", "1.5T"),
        (3, "3T"),
        ("3.0", "3T"),
        (2.89, "3T"),
        ("30000", "3T"),
        ("3T", "3T"),
        (0.55, "unknown"),
        (7, "unknown"),
        (1.0, "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_field_strength_in_tesla_or_gauss(value, field):
    assert normalise_field_strength(value) == field


@pytest.mark.parametrize(
    ("patient_age", "birth_date", "study_date", "band"),
    [
        ("058Y", None, None, "40-59"),
        ("017Y", None, None, "0-17"),
        ("018Y", None, None, "18-39"),
        ("060Y", None, None, "60-74"),
        ("074Y", None, None, "60-74"),
        ("075Y", None, None, "75+"),
        ("030M", None, None, "0-17"),
        ("012W", None, None, "0-17"),
        ("005D", None, None, "0-17"),
        (None, "19580412", "20240315", "60-74"),  # 65 years old
        (None, "19640316", "20240315", "40-59"),  # one day short of 60
        (None, "19640315", "20240315", "60-74"),  # 60 on the day
        ("000Y", "19800101", "20240315", "40-59"),  # 000Y is a placeholder: dates win
        ("000Y", None, None, "unknown"),
        ("58", None, None, "unknown"),  # not an Age String, and no dates
        (None, "20300101", "20240315", "unknown"),  # born after the study
        (None, None, None, "unknown"),
    ],
)
def test_age_band_from_age_string_or_dates(patient_age, birth_date, study_date, band):
    assert normalise_age(patient_age, birth_date, study_date) == band


@pytest.mark.parametrize(
    ("value", "band"), [("58", "40-59"), ("74.9", "60-74"), ("058Y", "40-59"), ("75+", "75+"), ("old", "unknown")]
)
def test_manifest_age_in_years_age_string_or_band(value, band):
    assert normalise_manifest_age(value) == band


@pytest.mark.parametrize(
    ("value", "sex"),
    [
        ("M", "male"),
        ("F", "female"),
        ("O", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        ("female", "female"),
        (" m ", "male"),
    ],
)
def test_sex(value, sex):
    assert normalise_sex(value) == sex


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("White British", "White"),
        ("WHITE", "White"),
        ("White Irish", "White"),
        ("White Other", "White"),
        ("Caucasian", "White"),
        ("Gypsy or Irish Traveller", "White"),
        ("Black African", "Black"),
        ("Black Caribbean", "Black"),
        ("Caribbean", "Black"),
        ("African", "Black"),
        ("BLACK", "Black"),
        ("Black British", "Black"),
        ("Asian - Indian", "Asian"),
        ("Chinese", "Asian"),
        ("Asian Pakistani", "Asian"),
        ("Bangladeshi", "Asian"),
        ("Indian", "Asian"),
        ("ASIAN", "Asian"),
        ("Mixed", "Mixed"),
        ("Mixed W/Asian", "Mixed"),
        ("White and Black Caribbean", "Mixed"),
        ("Mixed - White and Asian", "Mixed"),
        ("Other", "Other"),
        ("Arab", "Other"),
        ("Any other ethnic group", "Other"),
        ("Any other group", "Other"),
        ("Not stated", "unknown"),
        ("Unknown", "unknown"),
        ("Prefer not to say", "unknown"),
        ("Refused", "unknown"),
        ("American Indian", "unknown"),
        ("Hispanic", "unknown"),
        ("Martian", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        ("Black Asian", "unknown"),  # two groups named, not "mixed": not guessed
        ("Caribbean Asian", "unknown"),
    ],
)
def test_ethnicity_free_text_maps_to_census_groups_or_unknown(text, group):
    assert normalise_ethnicity(text) == group


def test_every_normalised_value_is_in_its_value_set():
    for text in ("White British", "Black African", "Asian - Indian", "Mixed", "Arab", "??"):
        assert normalise_ethnicity(text) in ETHNICITIES
    for value in ("SIEMENS", "GE Healthcare", "??"):
        assert normalise_vendor(value) in VENDORS
    for tesla in (1.5, 2.89, 9.4):
        assert normalise_field_strength(tesla) in FIELD_STRENGTHS
    for value in ("058Y", "000Y", "200Y"):
        assert normalise_age(value) in AGE_BANDS
    for value in ("M", "F", "O"):
        assert normalise_sex(value) in SEXES


def _header(**values: object) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_attributes_come_from_the_dicom_header():
    header = _header(
        PatientSex="M",
        PatientAge="067Y",
        EthnicGroup="Black African",
        Manufacturer="GE MEDICAL SYSTEMS",
        MagneticFieldStrength="15000",
    )
    assert subgroup_attributes(header) == SubgroupAttributes(
        sex="male", age_band="60-74", ethnicity="Black", vendor="GE", field_strength="1.5T"
    )


def test_manifest_values_override_dicom_and_blank_cells_do_not():
    header = _header(
        PatientSex="M", PatientAge="067Y", EthnicGroup="White", Manufacturer="Philips", MagneticFieldStrength=3
    )
    overrides = {"sex": "F", "age": "45", "ethnicity": "Asian - Indian", "vendor": "", "field_strength": " "}
    assert subgroup_attributes(header, overrides) == SubgroupAttributes(
        sex="female", age_band="40-59", ethnicity="Asian", vendor="Philips", field_strength="3T"
    )


def test_a_stated_but_unrecognised_manifest_value_overrides_to_unknown():
    header = _header(EthnicGroup="White British")
    assert subgroup_attributes(header, {"ethnicity": "Not stated"}).ethnicity == "unknown"


def test_birth_date_and_study_date_give_the_age_band_when_patient_age_is_missing():
    header = _header(PatientBirthDate="19400101", StudyDate="20240315")
    assert subgroup_attributes(header).age_band == "75+"


def test_an_empty_header_is_unknown_everywhere():
    assert subgroup_attributes(Dataset()) == SubgroupAttributes()

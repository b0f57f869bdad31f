"""De-identification: the site salt, pseudonyms and the PS3.15 basic profile."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from pydicom.datadict import keyword_for_tag
from pydicom.uid import MRImageStorage

from cmr.deid import (
    ACTION_BY_TAG,
    SALT_FILE,
    case_id_for,
    deidentify,
    load_or_create_salt,
    pseudonym,
    pseudonym_uid,
)
from ingest_fixtures import Identity, default_geometry, identifying_strings, slice_dataset, uid

SALT = bytes(range(32))


def _dataset():
    identity = Identity("D")
    pixels = np.zeros((4, 4), np.int16)
    return identity, slice_dataset(identity, 3, 0, default_geometry(1), pixels)


def test_salt_is_created_once_with_owner_only_permissions(tmp_path: Path):
    salt = load_or_create_salt(tmp_path)
    path = tmp_path / SALT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(salt) == 32
    mtime = path.stat().st_mtime_ns
    assert load_or_create_salt(tmp_path) == salt
    assert path.stat().st_mtime_ns == mtime


def test_salts_differ_between_sites(tmp_path: Path):
    assert load_or_create_salt(tmp_path / "a") != load_or_create_salt(tmp_path / "b")


def test_a_salt_readable_by_others_is_tightened(tmp_path: Path):
    salt = load_or_create_salt(tmp_path)
    (tmp_path / SALT_FILE).chmod(0o644)
    assert load_or_create_salt(tmp_path) == salt
    assert stat.S_IMODE((tmp_path / SALT_FILE).stat().st_mode) == 0o600


def test_a_damaged_salt_is_never_replaced(tmp_path: Path):
    load_or_create_salt(tmp_path)
    (tmp_path / SALT_FILE).write_text("not hex")
    with pytest.raises(ValueError, match="restore it"):
        load_or_create_salt(tmp_path)
    assert (tmp_path / SALT_FILE).read_text() == "not hex"


def test_pseudonyms_depend_on_the_salt_and_are_unambiguous():
    assert pseudonym(SALT, "MRN1") == pseudonym(SALT, "MRN1")
    assert pseudonym(SALT, "MRN1") != pseudonym(bytes(32), "MRN1")
    assert pseudonym(SALT, "ab", "c") != pseudonym(SALT, "a", "bc")
    assert len(pseudonym(SALT, "x")) == 64
    assert case_id_for(SALT, "P", "1.2", "1.3") != case_id_for(SALT, "P", "1.2", "1.4")


def test_pseudonym_uids_are_valid_uids():
    value = pseudonym_uid(SALT, "1.2.826.0.1.3680043.8.498.1")
    assert value.startswith("2.25.") and len(value) <= 64
    assert value.replace(".", "").isdigit()
    assert value == pseudonym_uid(SALT, "1.2.826.0.1.3680043.8.498.1 ")


def test_the_action_table_covers_the_identifiers_the_brief_names():
    expected = {
        "PatientName": "Z",
        "PatientBirthDate": "Z",
        "InstitutionName": "X",
        "OperatorsName": "X",
        "PerformingPhysicianName": "X",
        "ReferringPhysicianName": "Z",
        "StationName": "X",
        "DeviceSerialNumber": "X",
        "StudyInstanceUID": "U",
        "SeriesInstanceUID": "U",
        "SOPInstanceUID": "U",
        "FrameOfReferenceUID": "U",
        "PatientID": "H",
        "AccessionNumber": "H",
        "StudyID": "H",
        "PatientAge": "X",
        "EthnicGroup": "X",
        "PatientAddress": "X",
        "OtherPatientIDs": "X",
    }
    table = {keyword_for_tag(tag): action for tag, action in ACTION_BY_TAG.items()}
    assert {k: table.get(k) for k in expected} == expected
    assert len(ACTION_BY_TAG) > 550  # the whole basic profile column, not a sample


def test_deidentified_header_keeps_no_identifying_value():
    identity, dataset = _dataset()
    clean = deidentify(dataset, SALT)
    text = str(clean.to_json_dict()) + repr(clean)
    leaked = [s for s in identifying_strings([identity], (3,)) if s in text]
    assert leaked == []


def test_deidentification_leaves_the_input_untouched():
    identity, dataset = _dataset()
    deidentify(dataset, SALT)
    assert dataset.PatientName == identity.values["PatientName"]


def test_profile_actions_are_applied_at_every_level():
    identity, dataset = _dataset()
    clean = deidentify(dataset, SALT)
    assert not clean.PatientName and "PatientName" in clean  # Z: present, empty
    assert "InstitutionName" not in clean  # X/Z/D → X
    assert "PatientAge" not in clean and "EthnicGroup" not in clean  # X: kept only as normalised bands
    assert "RequestAttributesSequence" not in clean  # X, with the nested accession number
    assert "ReferencedPerformedProcedureStepSequence" not in clean
    assert clean.PatientID == pseudonym(SALT, "PatientID", identity.values["PatientID"])
    assert len(clean.AccessionNumber) == 16  # SH allows 16 characters
    assert clean.StudyInstanceUID == pseudonym_uid(SALT, identity.study_uid)
    assert clean.CreatorVersionUID == pseudonym_uid(SALT, identity.frame_of_reference_uid)  # safety net
    assert clean.FrameOfReferenceUID == clean.CreatorVersionUID  # one UID, one pseudonym
    assert not any(element.tag.is_private for element in clean.iterall())
    assert not any(element.tag.group == 0x6000 for element in clean.iterall())
    assert not hasattr(clean, "file_meta") or "MediaStorageSOPInstanceUID" not in clean.file_meta


def test_registry_uids_and_acquisition_parameters_are_kept():
    _, dataset = _dataset()
    clean = deidentify(dataset, SALT)
    assert clean.SOPClassUID == MRImageStorage
    for keyword in (
        "Manufacturer",
        "ManufacturerModelName",
        "MagneticFieldStrength",
        "RepetitionTime",
        "EchoTime",
        "InversionTime",
        "FlipAngle",
        "ImageOrientationPatient",
        "PixelSpacing",
    ):
        assert clean[keyword].value == dataset[keyword].value, keyword
    assert clean.ProcedureCodeSequence[0].CodeMeaning == "Late gadolinium enhancement"


def test_person_names_outside_the_table_are_emptied():
    _, dataset = _dataset()
    dataset.EvaluatorName = "SCREENER^NOT^LISTED"  # a person's name Table E.1-1 does not list
    assert dataset["EvaluatorName"].tag not in ACTION_BY_TAG
    clean = deidentify(dataset, SALT)
    assert not clean.EvaluatorName


def test_a_uid_in_an_unlisted_attribute_is_hashed_but_registry_uids_are_not():
    _, dataset = _dataset()
    hospital_uid = uid("unlisted")
    dataset.add_new(0x00089123, "UI", hospital_uid)  # CreatorVersionUID: not in Table E.1-1
    clean = deidentify(dataset, SALT)
    assert clean[0x00089123].value == pseudonym_uid(SALT, hospital_uid)

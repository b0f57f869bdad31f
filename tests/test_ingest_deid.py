"""De-identification: the site salt, pseudonyms, the allowlist and the PS3.15 basic profile."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import MRImageStorage

from cmr.deid import (
    ACTION_BY_TAG,
    KEPT_ATTRIBUTES,
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
    assert "PatientName" not in clean  # not kept at all, let alone emptied
    assert "InstitutionName" not in clean
    assert "PatientAge" not in clean and "EthnicGroup" not in clean  # kept only as normalised bands
    assert "RequestAttributesSequence" not in clean  # with the nested accession number
    assert "ReferencedPerformedProcedureStepSequence" not in clean
    assert clean.PatientID == pseudonym(SALT, "PatientID", identity.values["PatientID"])  # H on a kept attribute
    assert clean.StudyInstanceUID == pseudonym_uid(SALT, identity.study_uid)  # U on a kept attribute
    assert clean.FrameOfReferenceUID == pseudonym_uid(SALT, identity.frame_of_reference_uid)
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


def test_only_the_allowlisted_attributes_are_kept():
    _, dataset = _dataset()
    dataset.EvaluatorName = "SCREENER^NOT^LISTED"  # a person's name Table E.1-1 does not list
    dataset.add_new(0x00089123, "UI", uid("unlisted"))  # CreatorVersionUID: not in Table E.1-1
    dataset.PatientBirthDateInAlternativeCalendar = "1380/01/15"  # nor this
    dataset.add_new(0x00331001, "LO", "a public tag no dictionary knows")
    clean = deidentify(dataset, SALT)
    kept = {keyword_for_tag(element.tag) for element in clean.iterall()}
    assert kept <= KEPT_ATTRIBUTES
    assert {"SoftwareVersions", "ProcedureCodeSequence", "SeriesDescription", "StudyDate"}.isdisjoint(kept)
    assert {"PatientID", "SeriesInstanceUID", "Manufacturer", "InversionTime", "PixelSpacing"} <= kept


def test_no_kept_attribute_is_one_the_profile_removes():
    removed = {keyword_for_tag(tag) for tag, action in ACTION_BY_TAG.items() if action == "X"}
    assert KEPT_ATTRIBUTES.isdisjoint(removed)


def test_a_uid_nested_in_a_kept_sequence_is_hashed_but_registry_uids_are_not():
    _, dataset = _dataset()
    hospital_uid = uid("nested")
    group = Dataset()
    group.PixelMeasuresSequence = Sequence([Dataset()])
    group.PixelMeasuresSequence[0].PixelSpacing = [1.5, 1.5]
    group.PlanePositionSequence = Sequence([Dataset()])
    group.PlanePositionSequence[0].add_new(0x00081155, "UI", hospital_uid)  # ReferencedSOPInstanceUID: not kept
    dataset.SharedFunctionalGroupsSequence = Sequence([group])
    dataset.FrameOfReferenceUID = hospital_uid
    clean = deidentify(dataset, SALT)
    [shared] = clean.SharedFunctionalGroupsSequence
    assert shared.PixelMeasuresSequence[0].PixelSpacing == [1.5, 1.5]
    assert len(shared.PlanePositionSequence[0]) == 0  # the unlisted UID dropped, not merely hashed
    assert clean.FrameOfReferenceUID == pseudonym_uid(SALT, hospital_uid)
    assert clean.SOPClassUID == MRImageStorage  # a registry UID stays itself

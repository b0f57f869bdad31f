"""De-identification: an allowlist, then the DICOM PS3.15 Basic Application Level Confidentiality Profile.

Three jobs:

* **Pseudonyms.** Identifiers (PatientID, AccessionNumber, StudyID, every instance UID)
  become salted SHA-256 hashes. The salt is a per-site secret in
  ``SITE_DIR/secret/salt`` (0600, created once, never overwritten, never leaves the
  site): without it nobody can test a guessed identifier against a pseudonym, and with
  it the site gets the same pseudonym every time (which makes re-ingest idempotent).
  The store records the salt's fingerprint (:func:`salt_fingerprint`), so that a lost or
  replaced salt is refused (:class:`SaltMismatch`) instead of storing every series again
  under a second id.
* **The allowlist.** :func:`deidentify` keeps only :data:`KEPT_ATTRIBUTES`, at every
  nesting level: what the readers, the tasks and the audit read of a series. Whatever a
  table does not list (an alternative-calendar birth date, a procedure-step comment, a
  public tag no dictionary knows, every private tag) is dropped, not kept.
* **The profile.** On what the allowlist keeps, Table E.1-1 (basic profile column) still
  applies, with pydicom doing the walking (``Dataset.walk``) and the data dictionary
  (``keyword_for_tag``, the registry of well-known UIDs): PatientID becomes its
  pseudonym, every UID its pseudonym UID. Should the allowlist ever grow an identifying
  attribute, the profile still acts on it.

pydicom does not ship the profile's action table, so it is encoded once, below, in
``_BASIC_PROFILE``. On top of the table, three safety nets catch what a table cannot
list: every person name (VR PN) is emptied wherever it is; every UID that is not a
well-known UID of the DICOM registry (SOP classes, transfer syntaxes, ...) is replaced by
its pseudonym; curve (50xx) and overlay (60xx) groups are removed, as overlays can carry
burned-in text.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary
from pydicom.valuerep import MAX_VALUE_LEN

log = logging.getLogger(__name__)

SALT_FILE = Path("secret") / "salt"
_SALT_BYTES = 32

# What a stored header keeps (store/headers/<case_id>.json), by keyword, at every nesting
# level; everything else is dropped before the profile runs. Each line says who reads it.
KEPT_ATTRIBUTES: frozenset[str] = frozenset(
    " ".join(
        (
            # Which patient, study and series a case is, as pseudonyms: tasks.base.patient_keys
            # groups a patient's cases by the PatientID pseudonym (the split, DP-SGD's unit).
            "PatientID StudyInstanceUID SeriesInstanceUID SOPInstanceUID FrameOfReferenceUID",
            "SOPClassUID Modality SeriesNumber",
            # The audit's scanner subgroups (cmr.normalise: vendor, field strength).
            "Manufacturer ManufacturerModelName MagneticFieldStrength",
            # What series recognition and the readers read to tell a kind and its times
            # (cmr.series_recognition, cmr.mapping_series).
            "ImageType ScanningSequence SequenceVariant SequenceName MRAcquisitionType BodyPartExamined",
            "RepetitionTime EchoTime InversionTime FlipAngle TriggerTime CardiacNumberOfImages HeartRate",
            "DiffusionBValue",
            # Geometry and pixel encoding (cmr.dicom_files, cmr.geometry).
            "ImageOrientationPatient ImagePositionPatient PixelSpacing SliceThickness SpacingBetweenSlices",
            "Rows Columns NumberOfFrames SamplesPerPixel PhotometricInterpretation BitsAllocated BitsStored",
            "HighBit PixelRepresentation RescaleSlope RescaleIntercept",
            # The same, for enhanced (multi-frame) MR: in its functional groups.
            "SharedFunctionalGroupsSequence PerFrameFunctionalGroupsSequence PlanePositionSequence",
            "PlaneOrientationSequence PixelMeasuresSequence PixelValueTransformationSequence",
            "MREchoSequence EffectiveEchoTime MRModifierSequence InversionTimes MRDiffusionSequence",
            "CardiacSynchronizationSequence NominalCardiacTriggerDelayTime",
        )
    ).split()
)

# PS3.15 (2023) Annex E, Table E.1-1, column "Basic Profile", by attribute keyword
# (pydicom's data dictionary). Actions (Table E.1-1a):
#   D  replace with a non-zero length dummy value    Z  replace with a zero length value
#   X  remove                                        U  replace the UID, consistently
#   Z/D, X/Z, X/D, X/Z/D, X/Z/U*: the choice depends on the IOD's attribute type.
# Our output is a de-identified provenance record, not an IOD instance that must stay
# conformant, so the combined actions take their first choice: Z/D → Z, X/… → X.
# Attributes the table does not list are kept (K) if KEPT_ATTRIBUTES keeps them, after the
# safety nets above.
_BASIC_PROFILE: dict[str, str] = {
    "D": """
        AcquisitionFieldOfViewLabel AnnotationGroupLabel AnnotationGroupUID AssertionDateTime
        AttributeModificationDateTime BeamHoldTransitionDateTime CertificateOfSigner
        ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID ClinicalTrialSponsorName
        ClinicalTrialSubjectID ClinicalTrialSubjectReadingID ContainerIdentifier ContentSequence
        ContextGroupLocalVersion ContextGroupVersion Date DateTime DecayCorrectionDateTime
        DestinationAE DeviceLabel DigitalSignatureDateTime EffectiveDateTime EncapsulatedDocument
        EntityLabel EntityLongLabel ExclusionStartDateTime FlowIdentifier FlowIdentifierSequence
        FrameAcquisitionDateTime FrameOriginTimestamp FrameReferenceDateTime FunctionalSyncPulse
        GraphicAnnotationSequence HangingProtocolCreationDateTime ImpedanceMeasurementDateTime
        InformationIssueDateTime InterlockDateTime InterlockDescription InterlockOriginDescription
        ModifyingSystem OverrideDateTime PersonIdentificationCodeSequence PersonName RTPlanLabel
        RTPrescriptionLabel RTToleranceSetLabel RadiationDoseIdentificationLabel
        RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel
        ReasonForTheAttributeModification RecordedRTControlPointDateTime ReferencedDateTime
        SafePositionExitDate SafePositionExitTime SafePositionReturnDate SafePositionReturnTime
        SelectorAEValue SelectorASValue SelectorDAValue SelectorDTValue SelectorLOValue
        SelectorLTValue SelectorOBValue SelectorPNValue SelectorSHValue SelectorSTValue
        SelectorTMValue SelectorUNValue SelectorURValue SelectorUTValue SourceEndDateTime
        SourceIdentifier SourceStartDateTime SourceStrengthReferenceDate
        SourceStrengthReferenceTime SpecimenIdentifier StructureSetLabel Time
        TreatmentControlPointDate TreatmentControlPointTime TreatmentPositionGroupLabel
        TreatmentToleranceViolationDateTime TreatmentToleranceViolationDescription
        UserContentLabel UserContentLongLabel VerificationDateTime VerifyingObserverName
        VerifyingObserverSequence VerifyingOrganization XRayDetectorID XRaySourceID
    """,
    "Z": """
        AccessionNumber CalibrationDateTime ClinicalTrialCoordinatingCenterName
        ClinicalTrialProtocolName ClinicalTrialSiteID ClinicalTrialSiteName ClinicalTrialTimePointID
        ConceptualVolumeCombinationDescription ConceptualVolumeDescription ConsultingPhysicianName
        DeviceAlternateIdentifier FillerOrderNumberImagingServiceRequest FractionationNotes
        IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
        ManufacturerDeviceIdentifier ParticipationDateTime PatientID PatientBirthDate PatientName
        PatientSex PlacerOrderNumberImagingServiceRequest PrescriptionNotes
        PrescriptionNotesSequence ROIInterpreter ROIName RTAccessoryDeviceSlotID
        RTAccessoryHolderSlotID RTPhysicianIntentNarrative RadiationGenerationModeDescription
        ReasonForSuperseding ReferringPhysicianName ReviewDate ReviewTime SourceOfPreviousValues
        SpecimenPreparationSequence StructureSetDate StructureSetTime StudyDate StudyID StudyTime
        TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
    """,
    "Z/D": "ContentCreatorName ContentDate ContentTime ContrastBolusAgent InstructionPerformedDateTime",
    "X/Z": """
        AcquisitionContextSequence AcquisitionDate AcquisitionTime BarcodeValue LabelText
        PatientSexNeutered ReferencedStudySequence RequestedProcedureDescription ReviewerName
        SourceSerialNumber TreatmentMachineName
    """,
    "X/D": """
        AcquisitionDeviceProcessingDescription DateOfLastDetectorCalibration DetectorID
        EndAcquisitionDateTime FirstTreatmentDate InstanceCreationDate IntendedPhaseEndDate
        IntendedPhaseStartDate MostRecentTreatmentDate ObservationDateTime
        OperatorIdentificationSequence ProtocolName RTPlanDate RTPlanTime RTTreatmentApproachLabel
        SeriesDate SeriesTime StartAcquisitionDateTime TimeOfLastDetectorCalibration TreatmentDate
        TreatmentSite TreatmentTime
    """,
    "X/Z/D": """
        AcquisitionDateTime DeviceSerialNumber InstanceCreationTime InstitutionCodeSequence
        InstitutionName OperatorsName ReferencedPerformedProcedureStepSequence StationName
    """,
    "X/Z/U*": "ReferencedImageSequence SourceImageSequence",
    "U": """
        AcquisitionUID ConcatenationUID ConceptualVolumeUID ConstituentConceptualVolumeUID DeviceUID
        DigitalSignatureUID DimensionOrganizationUID DoseReferenceUID DosimetricObjectiveUID
        FailedSOPInstanceUIDList FiducialUID FrameOfReferenceUID InstanceCreatorUID
        IrradiationEventUID LargePaletteColorLookupTableUID ManufacturerDeviceClassUID
        MediaStorageSOPInstanceUID MultiplexGroupUID ObservationSubjectUIDTrial ObservationUID
        PaletteColorLookupTableUID PatientSetupUID PresentationDisplayCollectionUID
        PresentationSequenceCollectionUID PyramidUID RTTreatmentPhaseUID
        ReferencedConceptualVolumeUID ReferencedDoseReferenceUID ReferencedDosimetricObjectiveUID
        ReferencedFiducialsUID ReferencedFrameOfReferenceUID
        ReferencedGeneralPurposeScheduledProcedureStepTransactionUID ReferencedObservationUIDTrial
        ReferencedSOPInstanceUID ReferencedSOPInstanceUIDInFile ReferencedTreatmentPositionGroupUID
        RelatedFrameOfReferenceUID RequestedSOPInstanceUID SOPInstanceUID SeriesInstanceUID
        SourceConceptualVolumeUID SourceFrameOfReferenceUID SpecimenUID StorageMediaFileSetUID
        StudyInstanceUID SynchronizationFrameOfReferenceUID TargetUID TemplateExtensionCreatorUID
        TemplateExtensionOrganizationUID TrackingUID TransactionUID TreatmentPositionGroupUID
        TreatmentSessionUID UID
    """,
    "X": """
        AcquisitionComments AcquisitionProtocolDescription ActualHumanPerformersSequence
        AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate
        AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
        AffectedSOPInstanceUID Allergies AnnotationGroupDescription ApprovalStatusDateTime Arbitrary
        AssertionExpirationDateTime AuthorObserverSequence BeamDescription BolusDescription
        BranchOfService CalibrationDate CalibrationTime CameraOwnerName CassetteID CertifiedTimestamp
        ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialSeriesDescription
        ClinicalTrialSeriesID ClinicalTrialTimePointDescription CommentsOnRadiationDose
        CommentsOnThePerformedProcedureStep CompensatorDescription
        ConfidentialityConstraintOnPatientDataDescription ConsultingPhysicianIdentificationSequence
        ContainerComponentID ContainerDescription ContentCreatorIdentificationCodeSequence
        ContrastBolusStartTime ContrastBolusStopTime ContributionDateTime ContributionDescription
        CountryOfResidence CreationDate CreationTime CurrentObserverTrial CurrentPatientLocation
        CurveDate CurveTime CustodialOrganizationSequence DataSetTrailingPadding
        DateOfDocumentOrVerbalTransactionTrial DateOfInstallation DateOfLastCalibration
        DateOfManufacture DateOfSecondaryCapture DateTimeOfLastCalibration DecompositionDescription
        DerivationDescription DeviceDescription DeviceSettingDescription DigitalSignaturesSequence
        DischargeDate DischargeDiagnosisDescription DischargeTime DisplacementReferenceLabel
        DistributionAddress DistributionName DoseReferenceDescription EntityDescription EntityName
        EquipmentFrameOfReferenceDescription EthicsCommitteeApprovalEffectivenessEndDate
        EthicsCommitteeApprovalEffectivenessStartDate EthnicGroup ExpectedCompletionDateTime
        FilterLookupTableDescription FindingsGroupRecordingDateTrial FindingsGroupRecordingTimeTrial
        FixationDeviceDescription FractionGroupDescription FrameComments GPSAltitude GPSAltitudeRef
        GPSAreaInformation GPSDOP GPSDateStamp GPSDestBearing GPSDestBearingRef GPSDestDistance
        GPSDestDistanceRef GPSDestLatitude GPSDestLatitudeRef GPSDestLongitude GPSDestLongitudeRef
        GPSDifferential GPSImgDirection GPSImgDirectionRef GPSLatitude GPSLatitudeRef GPSLongitude
        GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites GPSSpeed
        GPSSpeedRef GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GantryID GeneratorID
        HL7DocumentEffectiveTime HumanPerformerName HumanPerformerOrganization IconImageSequence
        IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments
        Impressions InstanceCoercionDateTime InstanceOriginStatus InstitutionAddress
        InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence
        InsurancePlanIdentification IntendedFractionStartTime
        IntendedRecipientsOfResultsIdentificationSequence InterpretationApprovalDate
        InterpretationApprovalTime InterpretationApproverSequence InterpretationAuthor
        InterpretationDiagnosisDescription InterpretationID InterpretationIDIssuer
        InterpretationRecordedDate InterpretationRecordedTime InterpretationRecorder
        InterpretationText InterpretationTranscriber InterpretationTranscriptionDate
        InterpretationTranscriptionTime InterventionDrugStartTime InterventionDrugStopTime
        IssueDateOfImagingServiceRequest IssueTimeOfImagingServiceRequest IssuerOfAdmissionID
        IssuerOfAdmissionIDSequence IssuerOfPatientID IssuerOfServiceEpisodeID
        IssuerOfServiceEpisodeIDSequence LastMenstrualDate LensMake LensModel LensSerialNumber
        LensSpecification LongDeviceDescription MAC MakerNote MedicalAlerts MedicalRecordLocator
        MilitaryRank ModifiedAttributesSequence ModifiedImageDate ModifiedImageDescription
        ModifiedImageTime ModifyingDeviceID MultienergyAcquisitionDescription
        NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults NetworkID
        NonconformingDataElementValue NonconformingModifiedAttributesSequence ObservationDateTrial
        ObservationStartDateTime ObservationTimeTrial Occupation OrderCallbackPhoneNumber
        OrderCallbackTelecomInformation OrderEnteredBy OrderEntererLocation
        OriginalAttributesSequence Originator OtherPatientIDs OtherPatientIDsSequence
        OtherPatientNames OverlayDate OverlayTime ParticipantSequence PatientAddress PatientAge
        PatientBirthName PatientBirthTime PatientComments PatientInstitutionResidence
        PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
        PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference
        PatientSetupPhotoDescription PatientSize PatientState PatientTelecomInformation
        PatientTelephoneNumbers PatientTransportArrangements
        PatientTreatmentPreparationMethodDescription
        PatientTreatmentPreparationProcedureParameterDescription PatientWeight PerformedLocation
        PerformedProcedureStepDescription PerformedProcedureStepEndDate
        PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime PerformedProcedureStepID
        PerformedProcedureStepStartDate PerformedProcedureStepStartDateTime
        PerformedProcedureStepStartTime PerformedStationAETitle
        PerformedStationGeographicLocationCodeSequence PerformedStationName
        PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence
        PerformingPhysicianName PersonAddress PersonTelecomInformation PersonTelephoneNumbers
        PhysicianApprovingInterpretation PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
        PhysiciansReadingStudyIdentificationSequence PlateID PositionAcquisitionTemplateDescription
        PositionAcquisitionTemplateName PreMedication PregnancyStatus PrescriptionDescription
        PresentationCreationDate PresentationCreationTime PriorTreatmentDoseDescription
        ProcedureStepCancellationDateTime ProductExpirationDateTime PyramidDescription PyramidLabel
        ROIDescription ROIGenerationDescription ROIObservationDescription ROIObservationLabel
        RTPlanDescription RTPlanName RadiopharmaceuticalStartDateTime RadiopharmaceuticalStartTime
        RadiopharmaceuticalStopDateTime RadiopharmaceuticalStopTime ReasonForOmissionDescription
        ReasonForRequestedProcedureCodeSequence ReasonForStudy ReasonForTheImagingServiceRequest
        ReasonForTheRequestedProcedure ReasonForVisit ReasonForVisitCodeSequence ReceivingAE
        ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence
        ReferencedPatientPhotoSequence ReferencedPatientSequence ReferencedSOPInstanceMACSequence
        ReferringPhysicianAddress ReferringPhysicianIdentificationSequence
        ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence
        RequestedContrastAgent RequestedProcedureComments RequestedProcedureID
        RequestedProcedureLocation RequestedSeriesDescription RequestingAE RequestingPhysician
        RequestingService RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization
        ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsID ResultsIDIssuer
        RetrieveAETitle SOPAuthorizationDateTime ScheduledAdmissionDate ScheduledAdmissionTime
        ScheduledDischargeDate ScheduledDischargeTime ScheduledHumanPerformersSequence
        ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
        ScheduledPerformingPhysicianName ScheduledProcedureStepDescription
        ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
        ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID
        ScheduledProcedureStepLocation ScheduledProcedureStepModificationDateTime
        ScheduledProcedureStepStartDate ScheduledProcedureStepStartDateTime
        ScheduledProcedureStepStartTime ScheduledStationAETitle
        ScheduledStationGeographicLocationCodeSequence ScheduledStationName
        ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle
        ScheduledStudyStartDate ScheduledStudyStartTime ScheduledStudyStopDate ScheduledStudyStopTime
        SeriesDescription ServiceEpisodeDescription ServiceEpisodeID SetupTechniqueDescription
        ShieldingDeviceDescription SlideIdentifier SmokingStatus SourceManufacturer SpecialNeeds
        SpecimenAccessionNumber SpecimenDetailedDescription SpecimenShortDescription StationAETitle
        StructureSetDescription StructureSetName StudyArrivalDate StudyArrivalTime StudyComments
        StudyCompletionDate StudyCompletionTime StudyDescription StudyIDIssuer StudyReadDate
        StudyReadTime StudyVerifiedDate StudyVerifiedTime SubstanceAdministrationDateTime
        TelephoneNumberTrial TemplateLocalVersion TemplateVersion TextComments TextString
        TimeOfDocumentCreationOrVerbalTransactionTrial TimeOfLastCalibration TimeOfSecondaryCapture
        TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle
        TransducerIdentificationSequence TreatmentSites UDISequence UniqueDeviceIdentifier
        VerbalSourceIdentifierCodeSequenceTrial VerbalSourceTrial VisitComments
        WaveformFilterDescription XRayDetectorLabel
    """,
}
# Identifiers that become salted hashes rather than empty values (the profile's Z for
# these three), so that the provenance record still tells one study from another.
HASHED_IDENTIFIERS = ("PatientID", "AccessionNumber", "StudyID")

_RESOLVED_ACTION = {
    "D": "D",
    "Z": "Z",
    "X": "X",
    "U": "U",
    "Z/D": "Z",
    "X/Z": "X",
    "X/D": "X",
    "X/Z/D": "X",
    "X/Z/U*": "X",
}


def _tag_of(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # a typo here must fail loudly, not leave an attribute in or out
        raise KeyError(f"de-identification table: {keyword!r} is not a DICOM keyword")
    return tag


_KEPT_TAGS = frozenset(_tag_of(keyword) for keyword in KEPT_ATTRIBUTES)


def _action_by_tag() -> dict[int, str]:
    table: dict[int, str] = {}
    for action, keywords in _BASIC_PROFILE.items():
        for keyword in keywords.split():
            table[_tag_of(keyword)] = _RESOLVED_ACTION[action]
    for keyword in HASHED_IDENTIFIERS:
        table[_tag_of(keyword)] = "H"
    return table


ACTION_BY_TAG: dict[int, str] = _action_by_tag()

_DUMMY_BY_VR = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "PN": "ANONYMOUS",
    "UI": None,  # UI: pseudonym
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}


# ---------------------------------------------------------------- salt and pseudonyms


class SaltMismatch(ValueError):
    """The site's salt is damaged, lost, or not the one its store was written with; the message says what to do."""


def salt_fingerprint(salt: bytes) -> str:
    """What the store records of the salt: a hash that tells two salts apart and reveals neither."""
    return hashlib.sha256(b"cmrfl salt fingerprint\0" + salt).hexdigest()


def load_or_create_salt(site_dir: Path | str) -> bytes:
    """The site's secret salt, created on first use (``SITE_DIR/secret/salt``, 0600).

    An existing salt is never replaced: a new one would give every case a new id.
    """
    path = Path(site_dir) / SALT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); restricting it to 0600", path, mode)
            os.chmod(path, 0o600)
        text = path.read_text().strip()
        try:
            salt = bytes.fromhex(text)
        except ValueError:
            salt = b""
        if len(salt) < 16:
            raise SaltMismatch(
                f"{path}: not a usable salt (expected {2 * _SALT_BYTES} hex characters); "
                "restore it from the site's backup — replacing it would change every case id"
            ) from None
        return salt
    salt = secrets.token_bytes(_SALT_BYTES)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(salt.hex() + "\n")
    return salt


def pseudonym(salt: bytes, *identifiers: object) -> str:
    """Salted SHA-256 of one or more identifiers, as 64 hex characters."""
    digest = hashlib.sha256(salt)
    for identifier in identifiers:
        value = str(identifier if identifier is not None else "").encode("utf-8")
        digest.update(len(value).to_bytes(4, "big") + value)  # unambiguous concatenation
    return digest.hexdigest()


def pseudonym_uid(salt: bytes, uid: str) -> str:
    """A UID's salted SHA-256 as a valid UID: 2.25.<first 128 bits as a decimal>."""
    return "2.25." + str(int(pseudonym(salt, "uid", str(uid).strip())[:32], 16))


def case_id_for(salt: bytes, patient_id: str, study_instance_uid: str, series_instance_uid: str) -> str:
    """The store's key for a series: salted hash of the hospital's three identifiers."""
    return pseudonym(salt, "case", patient_id, study_instance_uid, series_instance_uid)


# ---------------------------------------------------------------- the profile


def _is_registry_uid(value: str) -> bool:
    return str(value).strip() in UID_dictionary


def _replace_uids(salt: bytes, value: object) -> object:
    if isinstance(value, list | tuple | MultiValue):
        return [pseudonym_uid(salt, v) if v and not _is_registry_uid(v) else v for v in value]
    return pseudonym_uid(salt, str(value)) if value and not _is_registry_uid(str(value)) else value


def _empty(element: DataElement) -> None:
    element.value = Sequence() if element.VR == "SQ" else None


def _keep_only_listed(dataset: Dataset) -> None:
    """Drop every attribute KEPT_ATTRIBUTES does not name (private tags included), at every level."""
    for tag in list(dataset.keys()):
        if int(tag) not in _KEPT_TAGS:
            del dataset[tag]  # by tag: the value is never decoded
        elif dataset[tag].VR == "SQ":
            for item in dataset[tag].value:
                _keep_only_listed(item)


def deidentify(dataset: Dataset, salt: bytes) -> Dataset:
    """A de-identified copy of ``dataset`` (the original is left untouched): KEPT_ATTRIBUTES only, then the profile.

    The file meta information is not carried over: it repeats the SOP Instance UID and
    names the sending application, and a provenance record does not need it.
    """
    result = copy.deepcopy(dataset)
    if hasattr(result, "file_meta"):
        del result.file_meta
    _keep_only_listed(result)

    def apply(container: Dataset, element: DataElement) -> None:
        group = element.tag.group
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            del container[element.tag]  # curves and overlays (Table E.1-1: X)
            return
        action = ACTION_BY_TAG.get(int(element.tag))
        if action == "X":
            del container[element.tag]
        elif action == "Z":
            _empty(element)
        elif action == "D":
            if element.VR == "SQ":
                element.value = Sequence()  # a dummy sequence would carry nothing
            elif element.VR == "UI":
                element.value = _replace_uids(salt, element.value)
            else:
                element.value = _DUMMY_BY_VR.get(element.VR, "ANONYMIZED")
        elif action == "H":
            if element.value not in (None, ""):
                # as long as the VR allows: 64 hex characters for LO, 16 for SH
                length = MAX_VALUE_LEN.get(element.VR, 64)
                element.value = pseudonym(salt, keyword_for_tag(element.tag), element.value)[:length]
        elif element.VR == "PN":
            _empty(element)  # safety net: any person's name the table does not list
        elif element.VR == "UI" or action == "U":
            element.value = _replace_uids(salt, element.value)

    result.walk(apply, recursive=True)
    return result

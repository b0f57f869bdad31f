"""How the exam's series are written: folders, numbers, times, headers, pixels, truth.

``ExamWriter`` holds what every series of one patient's exam shares: the study's base
header (cmr.phantom.dicom_writer.base_dataset: patient, study, scanner, frame of
reference of the LGE series), the series numbers, the stored-value scale, and the truth
of each series written. Series numbers run 1, 2, … in acquisition order, stepping over
the LGE's own number and continuing above it after the LGE; series times follow
``START_S``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cmr.phantom import knobs
from cmr.phantom.acquisition import Acquisition
from cmr.phantom.anatomy import HeartPlan, MyocardialPattern
from cmr.phantom.demographics import Patient
from cmr.phantom.dicom_writer import LGE_START_S, SeriesUids, base_dataset, decimal_string
from cmr.phantom.exam_dicom import (
    SeriesHeader,
    SeriesWriter,
    orientation_strings,
    position_strings,
    series_dataset,
    set_rescale,
    time_of_day,
)
from cmr.phantom.exam_protocols import FOLDERS, KINDS, series_strings
from cmr.phantom.identity import HospitalIdentity
from cmr.phantom.lge_signal import Relaxation
from cmr.phantom.long_axis import PlaneImage
from cmr.phantom.spec import ExamSeriesTruth, SiteSpec

# Seconds after the study's start at which each series is acquired (the LGE's are fixed).
START_S = {
    "localizer": 60,
    "cine_2ch": 240,
    "cine_3ch": 300,
    "cine_4ch": 360,
    "cine_sax": 480,
    "molli_native": 900,
    "t1map_native": 915,
    "t2prep": 1020,
    "t2map": 1030,
    "lge_sax_psir": LGE_START_S,
    "molli_post": 1980,  # ~15 min after the contrast injection
    "t1map_post": 1995,
}
HEART_RATE_BPM = (55.0, 90.0)
CINE_SNR_OVER_LGE = (1.2, 1.6)  # bSSFP blood SNR relative to the site's LGE
BSSFP_GAIN = 2.5  # stored-value scale of bSSFP relative to the LGE's (scanners scale each series)
CINE_SLICE_S = 12  # one breath-hold per cine slice
CONTRAST_AGENT = "Gadoterate meglumine"
LOCALIZER_Z_STEP_MM = 3.0  # levels the localizer's points are binned to (its slices are 8 mm thick)
_POST_CONTRAST = ("molli_post", "t1map_post", "lge_2ch", "lge_4ch")


@dataclass(frozen=True)
class LgeCase:
    """What the LGE case made that the rest of the exam shows again."""

    site: SiteSpec
    patient: Patient
    identity: HospitalIdentity
    heart: HeartPlan
    scar: MyocardialPattern
    relaxation: Relaxation
    acquisition: Acquisition
    signal: np.ndarray  # noise-free signed LGE signal of the stack
    table: np.ndarray  # LGE signal per Tissue code
    uids: SeriesUids
    dicom_dir: Path  # the LGE series' folder


def series_numbers(lge_number: int, roles: list[str]) -> dict[str, int]:
    """1, 2, … in acquisition order, stepping over the LGE's number; after it, above it."""
    numbers, next_number = {}, 1
    for role in roles:
        if role == "lge_sax":
            numbers[role] = lge_number
            next_number = max(next_number, lge_number + 1)
            continue
        if next_number == lge_number:
            next_number += 1
        numbers[role] = next_number
        next_number += 1
    return numbers


class ExamWriter:
    def __init__(self, out_dir: Path, case: LgeCase, uid: Callable[..., str], roles: list[str]):
        self.out_dir, self.case, self.uid = out_dir, case, uid
        self.base = base_dataset(case.site, case.patient, case.identity, case.uids.study, case.uids.frame_of_reference)
        self.numbers = series_numbers(case.identity.series_number, roles)
        self.truths: dict[str, ExamSeriesTruth] = {}
        self.encoded: dict = {}  # header elements' bytes, shared by the exam's series
        scanner = case.site.scanner
        self.gain = scanner.raw_gain * case.acquisition.receiver_gain
        self.slope = scanner.rescale_slope if scanner.rescale_slope is not None else 1.0

    def folder(self, role: str) -> Path:
        identity = self.case.identity
        return self.case.dicom_dir.parent / f"{identity.study_date}_{self.numbers[role]}_{FOLDERS[role]}"

    def time(self, seconds: float) -> str:
        return time_of_day(self.case.identity.study_time, seconds)

    def header(self, role: str, image_rows: int, image_columns: int, pixel: float, thickness: float, **kw) -> Dataset:
        strings = series_strings(self.case.site.scanner, role)
        header = SeriesHeader(
            strings=strings,
            series_uid=self.uid(f"{role}-series"),
            series_number=self.numbers[role],
            series_time=self.time(START_S[role]),
            rows=image_rows,
            columns=image_columns,
            pixel_spacing_mm=pixel,
            slice_thickness_mm=thickness,
            **kw,
        )
        ds = series_dataset(self.base, header)
        if role in _POST_CONTRAST:
            ds.ContrastBolusAgent = CONTRAST_AGENT
        return ds

    def stored(self, values: np.ndarray, gain: float) -> np.ndarray:
        """Unsigned 12-bit stored values of magnitudes (rescale: the site's slope, as its LGE); reuses ``values``."""
        values *= np.float32(gain / self.slope)
        values += np.float32(0.5)
        np.minimum(values, knobs.MAX_STORED_VALUE, out=values)
        return values.astype(np.uint16)

    def finish(self, role: str, ds: Dataset, n_images: int, contrast: str = "") -> None:
        self.truths[role] = ExamSeriesTruth(
            kind=KINDS[role].value,
            series_instance_uid=str(ds.SeriesInstanceUID),
            series_number=int(ds.SeriesNumber),
            dicom_dir=self.folder(role).relative_to(self.out_dir).as_posix(),
            n_images=n_images,
            series_description=str(ds.SeriesDescription),
            contrast=contrast,
        )

    def write(self, role: str, ds: Dataset, images: list[tuple[np.ndarray, dict[str, object]]]) -> None:
        """Write ``images`` (stored pixels, per-image elements) as IM_0001.dcm … of ``role``."""
        folder = self.folder(role)
        folder.mkdir(parents=True, exist_ok=True)
        keys = ["InstanceNumber", *images[0][1]]
        writer = SeriesWriter(ds, keys, self.encoded)
        for k, (pixels, values) in enumerate(images):
            uid = self.uid(f"{role}-instance", k)
            writer.write(folder / f"IM_{k + 1:04d}.dcm", uid, pixels, InstanceNumber=k + 1, **values)


def rescale_if_vendor_does(ds: Dataset, writer: ExamWriter) -> None:
    if writer.case.site.scanner.rescale_slope is not None:
        set_rescale(ds, writer.slope, 0.0)


def plane_tags(image: PlaneImage) -> dict[str, object]:
    return {
        "ImagePositionPatient": position_strings(image.position),
        "ImageOrientationPatient": orientation_strings(image.orientation),
        "SliceLocation": decimal_string(float(np.dot(image.position, image.normal)), 4),
    }

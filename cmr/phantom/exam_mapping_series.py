"""The exam's mapping series as DICOM, with their labels and manifest cells.

Source images are written as cmr.phantom.mapping_dicom writes them (one file per frame,
acquisition order, ``InversionTime`` and ``ImageComments`` per frame), each followed by
the scanner's map as its own derived series. Each MOLLI series gets the mapping
phantom's reference T1 map and tissue mask in labels/ (cmr.phantom.mapping_consortium).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from cmr.parametric_map import write_parametric_map
from cmr.phantom import knobs
from cmr.phantom.anatomy import TISSUE_TO_LABEL
from cmr.phantom.exam_dicom import set_rescale, set_window
from cmr.phantom.exam_mapping import MappingSeries, MappingSlice, mapping_slice, render_molli, render_t2prep
from cmr.phantom.exam_protocols import SiteExamProtocol
from cmr.phantom.exam_tissue import ExamTissue
from cmr.phantom.exam_writer import START_S, ExamWriter, plane_tags
from cmr.phantom.lge_signal import bias_field
from cmr.phantom.long_axis import HeartFrame, PlaneImage
from cmr.phantom.mapping import SLICE_THICKNESS_MM
from cmr.phantom.mapping_dicom import STORED_GAIN, frame_timing
from cmr.phantom.mask_writer import write_mask
from cmr.physics.molli import molli_readout_times


@dataclass(frozen=True)
class MappingLabels:
    """A manifest row's extra cells for a mapping series."""

    series_instance_uid: str
    haematocrit: str
    contrast: str


def _write_mapping_series(
    w: ExamWriter,
    role: str,
    series: MappingSeries,
    image: PlaneImage,
    protocol: SiteExamProtocol,
    heart_rate_bpm: float,
    contrast: str,
) -> None:
    """Source images as cmr.phantom.mapping_dicom writes them, then the scanner's map as its own series."""
    t2prep = role == "t2prep"
    stored = np.clip(np.rint(series.frames * STORED_GAIN), 0, knobs.MAX_STORED_VALUE).astype(np.uint16)

    def header(of_role: str) -> Dataset:  # the source images and their map share the plane and readout
        ds = w.header(
            of_role,
            image.rows,
            image.columns,
            image.pixel_mm,
            SLICE_THICKNESS_MM,
            repetition_time_ms=protocol.bssfp_tr_ms,
            echo_time_ms=None,
            flip_angle_deg=70.0 if t2prep else 35.0,
            heart_rate_bpm=heart_rate_bpm,
        )
        for keyword, value in plane_tags(image).items():
            setattr(ds, keyword, value)
        return ds

    ds = header(role)
    set_window(ds, stored)
    if t2prep:
        seconds = START_S[role] + np.arange(series.times_ms.size) * 4 * 60.0 / heart_rate_bpm
    else:
        scheme = "5(3)3" if contrast == "native" else "4(1)3(1)2"
        seconds = START_S[role] + molli_readout_times(heart_rate_bpm, scheme) / 1000.0
    w.write(
        role,
        ds,
        [
            (
                stored[k],
                {
                    "AcquisitionNumber": k + 1,
                    "AcquisitionTime": w.time(seconds[k]),
                    "ContentTime": w.time(seconds[k]),
                    **frame_timing(t2prep, float(series.times_ms[k])),
                },
            )
            for k in range(stored.shape[0])
        ],
    )
    w.finish(role, ds, stored.shape[0], contrast)

    map_role = "t2map" if t2prep else role.replace("molli", "t1map")
    values = np.clip(np.rint(series.scanner_map_ms), 0, knobs.MAX_STORED_VALUE).astype(np.uint16)
    ds_map = header(map_role)
    ds_map.AcquisitionTime = ds_map.ContentTime = w.time(START_S[map_role])
    ds_map.WindowCenter, ds_map.WindowWidth = ("1000", "1600") if not t2prep else ("50", "80")
    set_rescale(ds_map, 1.0, 0.0)
    w.write(map_role, ds_map, [(values, {})])
    w.finish(map_role, ds_map, 1, contrast)


@dataclass(frozen=True)
class MappingPlan:
    """The mapping series' one slice: its tissue, coil field and noise, shared before and after contrast."""

    slice_: MappingSlice
    coil: np.ndarray
    noise: float


def plan_mapping(w: ExamWriter, protocol: SiteExamProtocol, rng: np.random.Generator) -> MappingPlan:
    case = w.case
    rows, columns = protocol.mapping_matrix
    pixel = protocol.mapping_pixel_mm
    offset = case.acquisition.heart_offset_mm
    slice_ = mapping_slice(HeartFrame.of(case.acquisition), case.heart, case.scar, offset, pixel, rows, columns)
    centre_px = ((rows - 1) / 2 + offset[1] / pixel, (columns - 1) / 2 + offset[0] / pixel)
    coil = bias_field(rng, (1, rows, columns), case.site.scanner.bias_log_amplitude, centre_px)
    return MappingPlan(slice_=slice_, coil=coil, noise=0.25 / case.site.scanner.snr_blood)


def write_mapping(
    w: ExamWriter,
    mapping: MappingPlan,
    roles: tuple[tuple[str, str], ...],
    tissue: ExamTissue,
    protocol: SiteExamProtocol,
    heart_rate_bpm: float,
    rng: np.random.Generator,
) -> list[MappingLabels]:
    """``roles`` as (role, contrast); each MOLLI with its reference T1 map and tissue mask in labels/.

    T2-prep gets no labels: no task reads it yet, and ingest reports labels of series it does
    not store.
    """
    slice_, psf = mapping.slice_, w.case.site.scanner.psf_sigma_px
    geometry = slice_.image.geometry(SLICE_THICKNESS_MM)
    labels = w.case.dicom_dir.parents[2] / "labels"
    mask = TISSUE_TO_LABEL[slice_.tissue][None]
    written = []
    for role, contrast in roles:
        if role == "t2prep":
            series = render_t2prep(rng, slice_, tissue.t2_ms, tissue.proton_density, mapping.coil, psf, mapping.noise)
        else:
            t1 = tissue.t1_native_ms if contrast == "native" else tissue.t1_post_ms
            series = render_molli(
                rng,
                slice_,
                t1,
                tissue.t2_ms,
                tissue.proton_density,
                contrast,
                heart_rate_bpm,
                mapping.coil,
                psf,
                mapping.noise,
            )
        _write_mapping_series(w, role, series, slice_.image, protocol, heart_rate_bpm, contrast)
        if role == "t2prep":
            continue
        uid = w.truths[role].series_instance_uid
        write_mask(labels / f"{uid}.nii.gz", mask, geometry)
        write_parametric_map(labels / f"{uid}_t1.nii.gz", series.reference_ms, geometry)
        written.append(MappingLabels(uid, f"{tissue.haematocrit:.4f}", contrast))
    return written

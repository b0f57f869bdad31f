"""The exam's bSSFP series as DICOM: the 3-plane localizer and the cines (long axis, short-axis stack).

Rendering is cmr.phantom.cine (and cmr.phantom.tissue_points for the localizer); here the
images get the coil field, noise, stored values and the cine headers scanners write:
``TriggerTime`` (phase k × RR / N), ``CardiacNumberOfImages``, ``NominalInterval`` and
``HeartRate``, all phases of a slice at one ``ImagePositionPatient``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.phantom.acquisition import Acquisition
from cmr.phantom.anatomy import Tissue
from cmr.phantom.cine import Contraction, long_axis_images, long_axis_tissue, render_cine_stack, render_long_axis_cines
from cmr.phantom.dicom_writer import decimal_string
from cmr.phantom.exam_dicom import orientation_strings, position_strings, set_window
from cmr.phantom.exam_protocols import SiteExamProtocol
from cmr.phantom.exam_tissue import ExamTissue, bssfp_table
from cmr.phantom.exam_writer import (
    BSSFP_GAIN,
    CINE_SLICE_S,
    LOCALIZER_Z_STEP_MM,
    START_S,
    ExamWriter,
    LgeCase,
    plane_tags,
    rescale_if_vendor_does,
)
from cmr.phantom.lge_signal import bias_field, point_spread, rician_magnitude_f32
from cmr.phantom.long_axis import HeartFrame, LongAxisView, localizer_images, long_axis_view, resampled_stack
from cmr.phantom.tissue_points import classify_points

LOCALIZER_SNR_OVER_LGE = 0.6  # single-shot, coarse: noisier than the LGE


def write_localizer(w: ExamWriter, tissue: ExamTissue, protocol: SiteExamProtocol, rng: np.random.Generator) -> None:
    """Three single-shot planes in one series, each image with its own orientation (SNR 0.6 × the LGE's)."""
    case = w.case
    frame = HeartFrame.of(case.acquisition)
    images = localizer_images(frame, case.heart, protocol.localizer_matrix, protocol.localizer_pixel_mm)
    points = np.stack([image.pixel_points() for image in images.values()])
    x, y, z = frame.to_heart(points)
    codes = classify_points(case.heart, case.scar, x, y, z, z_step=LOCALIZER_Z_STEP_MM)
    table = bssfp_table(tissue, protocol.cine_flip_deg, protocol.bssfp_tr_ms)
    signal = point_spread(table[codes], case.site.scanner.psf_sigma_px)
    sigma = float(table[Tissue.LV_BLOOD]) / (LOCALIZER_SNR_OVER_LGE * case.acquisition.snr_blood)
    stored = w.stored(rician_magnitude_f32(rng, signal, sigma), w.gain * BSSFP_GAIN)
    ds = w.header(
        "localizer",
        protocol.localizer_matrix,
        protocol.localizer_matrix,
        protocol.localizer_pixel_mm,
        8.0,
        repetition_time_ms=protocol.bssfp_tr_ms,
        echo_time_ms=protocol.bssfp_tr_ms / 2,
        flip_angle_deg=protocol.cine_flip_deg,
    )
    set_window(ds, stored * np.float32(w.slope))
    rescale_if_vendor_does(ds, w)
    time = w.time(START_S["localizer"])
    ds.AcquisitionTime = ds.ContentTime = time
    w.write(
        "localizer",
        ds,
        [(stored[k], plane_tags(image)) for k, image in enumerate(images.values())],
    )
    w.finish("localizer", ds, len(images))


@dataclass(frozen=True)
class Cardiac:
    heart_rate_bpm: float
    rr_ms: float
    curve: np.ndarray
    contraction: Contraction
    snr: float


def _cine_header(w: ExamWriter, role: str, protocol: SiteExamProtocol, rows: int, columns: int, cardiac: Cardiac):
    ds = w.header(
        role,
        rows,
        columns,
        protocol.cine_pixel_mm,
        w.case.acquisition.slice_thickness_mm,
        repetition_time_ms=protocol.cine_repetition_time_ms,
        echo_time_ms=protocol.cine_echo_time_ms,
        flip_angle_deg=protocol.cine_flip_deg,
        heart_rate_bpm=cardiac.heart_rate_bpm,
    )
    ds.CardiacNumberOfImages = protocol.cine_phases
    ds.NominalInterval = str(round(cardiac.rr_ms))
    ds.TriggerWindow = "0"
    return ds


def _trigger_times(cardiac: Cardiac, n: int) -> list[str]:
    return [decimal_string(k * cardiac.rr_ms / n, 2) for k in range(n)]


def _cine_magnitude(
    w: ExamWriter, signal: np.ndarray, table: np.ndarray, cardiac: Cardiac, rng: np.random.Generator, centre_px
) -> np.ndarray:
    """Bias (one coil field per plane, still while the heart moves) and Rician noise, then stored values.

    ``signal`` is ``[plane, phase, row, column]``.
    """
    scanner = w.case.site.scanner
    bias = bias_field(rng, (signal.shape[0], *signal.shape[2:]), scanner.bias_log_amplitude, centre_px)
    signal *= bias[:, None]
    sigma = float(table[Tissue.LV_BLOOD]) / cardiac.snr
    return w.stored(rician_magnitude_f32(rng, signal, sigma), w.gain * BSSFP_GAIN)


def _cine_matrix(acquisition: Acquisition, protocol: SiteExamProtocol) -> tuple[int, int]:
    """(columns, rows): the LGE's field of view across, a rectangular one along the rows."""
    columns = int(round(acquisition.columns * acquisition.pixel_spacing_mm / protocol.cine_pixel_mm / 8) * 8)
    columns = min(columns, protocol.cine_max_columns)
    return columns, int(round(columns * protocol.cine_phase_fov / 8) * 8)


def write_cine_stack(
    w: ExamWriter, table: np.ndarray, protocol: SiteExamProtocol, cardiac: Cardiac, rng: np.random.Generator
) -> None:
    case = w.case
    acquisition = case.acquisition
    pixel = protocol.cine_pixel_mm
    columns, rows = _cine_matrix(acquisition, protocol)
    geometry, positions = resampled_stack(acquisition, pixel, rows, columns)
    offset = acquisition.heart_offset_mm
    x_mm = (np.arange(columns) - (columns - 1) / 2) * pixel - offset[0]
    y_mm = (np.arange(rows) - (rows - 1) / 2) * pixel - offset[1]
    centre_px = ((rows - 1) / 2 + offset[1] / pixel, (columns - 1) / 2 + offset[0] / pixel)
    scanner = case.site.scanner
    bias = bias_field(rng, (acquisition.n_slices, rows, columns), scanner.bias_log_amplitude, centre_px)
    sigma = float(table[Tissue.LV_BLOOD]) / cardiac.snr
    stored = np.empty((acquisition.n_slices, protocol.cine_phases, rows, columns), dtype=np.uint16)
    slices = render_cine_stack(
        cardiac.contraction,
        case.scar,
        acquisition.slice_z_mm,
        x_mm,
        y_mm,
        pixel,
        table,
        scanner.psf_sigma_px,
        cardiac.curve,
    )
    for k, signal in enumerate(slices):  # coil field still while the heart moves
        signal *= bias[k]
        stored[k] = w.stored(rician_magnitude_f32(rng, signal, sigma), w.gain * BSSFP_GAIN)
    ds = _cine_header(w, "cine_sax", protocol, rows, columns, cardiac)
    ds.SpacingBetweenSlices = decimal_string(geometry.slice_spacing, 3)
    ds.ImageOrientationPatient = orientation_strings(geometry.image_orientation)
    set_window(ds, stored[:, 0] * np.float32(w.slope))
    rescale_if_vendor_does(ds, w)
    normal = np.asarray(geometry.slice_step) / geometry.slice_spacing
    triggers = _trigger_times(cardiac, protocol.cine_phases)
    images: list[tuple[np.ndarray, dict[str, object]]] = []
    for k, position in enumerate(positions):
        time = w.time(START_S["cine_sax"] + CINE_SLICE_S * k)
        common = {
            "ImagePositionPatient": position_strings(position),
            "SliceLocation": decimal_string(float(np.dot(position, normal)), 4),
            "AcquisitionTime": time,
            "ContentTime": time,
        }
        images.extend((stored[k, p], {**common, "TriggerTime": triggers[p]}) for p in range(protocol.cine_phases))
    w.write("cine_sax", ds, images)
    w.finish("cine_sax", ds, len(images))


def _long_axis_views(
    case: LgeCase, names: tuple[str, ...], rows: int, columns: int, pixel: float, rng: np.random.Generator
) -> list[LongAxisView]:
    """Views sharing their rows' levels (classified together); each centred off the axis a little."""
    frame = HeartFrame.of(case.acquisition)
    centre_z = case.heart.long_axis_mm / 2 + float(rng.uniform(-10.0, 10.0))
    return [
        long_axis_view(frame, case.heart, name, float(rng.uniform(-20.0, 20.0)), centre_z, rows, columns, pixel)
        for name in names
    ]


@dataclass(frozen=True)
class LongAxisPlan:
    """The 2-, 3- and 4-chamber planes, planned once: the long-axis LGE copies the cines' planes."""

    views: list[LongAxisView]
    tissue: np.ndarray  # end-diastolic codes [view, depth, row, column]


def plan_long_axis(case: LgeCase, protocol: SiteExamProtocol, rng: np.random.Generator) -> LongAxisPlan:
    pixel = protocol.cine_pixel_mm
    columns, rows = _cine_matrix(case.acquisition, protocol)
    views = _long_axis_views(case, ("2ch", "3ch", "4ch"), rows, columns, pixel, rng)
    return LongAxisPlan(views, long_axis_tissue(views, case.heart, case.scar, case.acquisition.slice_thickness_mm))


def write_cine_long_axis(
    w: ExamWriter,
    long_axis: LongAxisPlan,
    table: np.ndarray,
    protocol: SiteExamProtocol,
    cardiac: Cardiac,
    rng: np.random.Generator,
) -> None:
    views = long_axis.views
    end_diastole = long_axis_images(long_axis.tissue, table, w.case.site.scanner.psf_sigma_px)
    signal = render_long_axis_cines(views, end_diastole, cardiac.contraction, cardiac.curve)
    rows, columns = views[0].image.rows, views[0].image.columns
    stored = _cine_magnitude(w, signal, table, cardiac, rng, ((rows - 1) / 2, (columns - 1) / 2))
    triggers = _trigger_times(cardiac, protocol.cine_phases)
    for index, view in enumerate(views):
        role = f"cine_{view.name}"
        ds = _cine_header(w, role, protocol, rows, columns, cardiac)
        for keyword, value in plane_tags(view.image).items():
            setattr(ds, keyword, value)
        ds.AcquisitionTime = ds.ContentTime = w.time(START_S[role])
        set_window(ds, stored[index] * np.float32(w.slope))
        rescale_if_vendor_does(ds, w)
        w.write(role, ds, [(stored[index, p], {"TriggerTime": triggers[p]}) for p in range(protocol.cine_phases)])
        w.finish(role, ds, protocol.cine_phases)

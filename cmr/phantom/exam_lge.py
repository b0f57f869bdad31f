"""The exam's other LGE series as DICOM: the PSIR partner of the stack and the long-axis views."""

from __future__ import annotations

import numpy as np

from cmr.phantom.anatomy import Tissue
from cmr.phantom.cine import long_axis_images
from cmr.phantom.dicom_writer import (
    LGE_SLICE_S,
    LGE_START_S,
    SeriesUids,
    decimal_string,
    encode_pixels,
    lge_series_dataset,
)
from cmr.phantom.exam_bssfp import LongAxisPlan
from cmr.phantom.exam_dicom import position_strings, set_rescale, set_window
from cmr.phantom.exam_protocols import series_strings
from cmr.phantom.exam_writer import CONTRAST_AGENT, START_S, ExamWriter, plane_tags
from cmr.phantom.lge_signal import bias_field, rician_magnitude_f32
from cmr.phantom.render import render_phase_sensitive


def _lge_times(w: ExamWriter) -> list[str]:
    return [w.time(LGE_START_S + LGE_SLICE_S * k) for k in range(w.case.acquisition.n_slices)]


def write_psir(w: ExamWriter, rng_bias: np.random.Generator, rng_noise: np.random.Generator) -> None:
    """Same acquisition as the magnitude stack: its positions, matrix, timing; signed values + an intercept.

    ``rng_bias`` and ``rng_noise`` in the states the magnitude's streams started in: the PSIR
    is the real part of the same complex image (cmr.phantom.render.render_phase_sensitive).
    """
    case = w.case
    scanner, acquisition = case.site.scanner, case.acquisition
    real = render_phase_sensitive(
        rng_bias,
        rng_noise,
        case.signal,
        acquisition,
        case.table,
        scanner.psf_sigma_px,
        scanner.bias_log_amplitude,
    )
    intercept = -4096.0 * w.slope  # stored values unsigned: 0 … 8191 (13 bits)
    scanner_values = real * np.float32(w.gain)
    stored = np.clip(np.rint((scanner_values - intercept) / w.slope), 0, 8191).astype(np.uint16)
    role = "lge_sax_psir"
    uids = SeriesUids(case.uids.study, w.uid(f"{role}-series"), case.uids.frame_of_reference, ())
    ds = lge_series_dataset(case.site, case.patient, case.identity, acquisition, uids, (0.0, 1.0), (w.slope, 0.0))
    strings = series_strings(scanner, role)
    ds.ImageType = list(strings.image_type)
    ds.SeriesDescription = strings.description
    ds.SeriesNumber = w.numbers[role]
    ds.SeriesTime = w.time(START_S[role])
    ds.BitsStored, ds.HighBit = 13, 12
    set_rescale(ds, w.slope, intercept)
    set_window(ds, stored.astype(np.float32) * np.float32(w.slope) + np.float32(intercept))
    times = _lge_times(w)
    w.write(
        role,
        ds,
        [
            (
                stored[k],
                {
                    "ImagePositionPatient": position_strings(acquisition.slice_positions[k]),
                    "SliceLocation": decimal_string(acquisition.slice_locations[k], 4),
                    "AcquisitionTime": times[k],
                    "ContentTime": times[k],
                },
            )
            for k in range(acquisition.n_slices)
        ],
    )
    w.finish(role, ds, acquisition.n_slices)


def write_lge_long_axis(w: ExamWriter, long_axis: LongAxisPlan, rng: np.random.Generator) -> None:
    """2- and 4-chamber inversion recovery at the stack's TI, in the cines' planes (diastole)."""
    case = w.case
    scanner, acquisition = case.site.scanner, case.acquisition
    chosen = [i for i, view in enumerate(long_axis.views) if view.name in ("2ch", "4ch")]
    signal = long_axis_images(long_axis.tissue[chosen], case.table, scanner.psf_sigma_px)
    image = long_axis.views[0].image
    bias = bias_field(rng, signal.shape, scanner.bias_log_amplitude, ((image.rows - 1) / 2, (image.columns - 1) / 2))
    sigma = abs(float(case.table[Tissue.LV_BLOOD])) / acquisition.snr_blood
    magnitude = rician_magnitude_f32(rng, signal * bias, sigma)
    stored, slope, intercept = encode_pixels(magnitude, scanner, acquisition.receiver_gain)
    after_stack = LGE_START_S + LGE_SLICE_S * acquisition.n_slices + 60
    for index, view in zip(range(len(chosen)), (long_axis.views[i] for i in chosen)):
        role = f"lge_{view.name}"
        uids = SeriesUids(case.uids.study, w.uid(f"{role}-series"), case.uids.frame_of_reference, ())
        values = stored[index].astype(np.float32) * slope + intercept
        upper = float(np.percentile(values, 99.5))
        window = (upper / 2, max(upper, 1.0))
        ds = lge_series_dataset(case.site, case.patient, case.identity, acquisition, uids, window, (slope, intercept))
        ds.SeriesDescription = ds.ProtocolName = series_strings(scanner, role).description
        ds.SeriesNumber = w.numbers[role]
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = w.time(after_stack + 30 * index)
        ds.Rows, ds.Columns = view.image.rows, view.image.columns
        ds.PixelSpacing = [decimal_string(view.image.pixel_mm, 4)] * 2
        del ds.SpacingBetweenSlices
        ds.ContrastBolusAgent = CONTRAST_AGENT
        for keyword, value in plane_tags(view.image).items():
            setattr(ds, keyword, value)
        w.write(role, ds, [(stored[index], {})])
        w.finish(role, ds, 1)

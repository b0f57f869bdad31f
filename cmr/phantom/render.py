"""From anatomy and physics to arrays: the reference mask and the LGE magnitude image.

The mask is the tissue at each pixel centre on the slice's central plane. The
image averages the signed signal over sub-pixel samples in-plane and across
the slice thickness (partial volume), is blurred by the point-spread function,
multiplied by the bias field and made a magnitude with complex noise.
"""

from __future__ import annotations

import numpy as np

from cmr.phantom import knobs
from cmr.phantom.acquisition import Acquisition
from cmr.phantom.anatomy import TISSUE_TO_LABEL, HeartPlan, MyocardialPattern, Tissue, classify_plane
from cmr.phantom.lge_signal import bias_field, point_spread, rician_magnitude


def _axes_mm(acquisition: Acquisition, supersampling: int) -> tuple[np.ndarray, np.ndarray]:
    """In-plane sample coordinates (x: columns, y: rows) relative to the LV axis, in mm."""
    pixel = acquisition.pixel_spacing_mm
    sub = (np.arange(supersampling) + 0.5) / supersampling - 0.5
    columns = (np.arange(acquisition.columns)[:, None] + sub[None, :]).ravel()
    rows = (np.arange(acquisition.rows)[:, None] + sub[None, :]).ravel()
    x = (columns - (acquisition.columns - 1) / 2) * pixel - acquisition.heart_offset_mm[0]
    y = (rows - (acquisition.rows - 1) / 2) * pixel - acquisition.heart_offset_mm[1]
    return x.astype(np.float32)[None, :], y.astype(np.float32)[:, None]


def render_tissue(heart: HeartPlan, scar: MyocardialPattern, acquisition: Acquisition) -> np.ndarray:
    """Tissue codes at pixel centres, ``[slice, row, column]``."""
    x, y = _axes_mm(acquisition, 1)
    return np.stack([classify_plane(heart, scar, x, y, z) for z in acquisition.slice_z_mm])


def render_mask(tissue: np.ndarray) -> np.ndarray:
    """Reference mask in the cmr.labels convention (uint8)."""
    return TISSUE_TO_LABEL[tissue]


def render_signal(
    heart: HeartPlan,
    scar: MyocardialPattern,
    acquisition: Acquisition,
    signal_table: np.ndarray,
    supersampling: int = knobs.IN_PLANE_SUPERSAMPLING,
    through_plane_samples: int = knobs.THROUGH_PLANE_SAMPLES,
) -> np.ndarray:
    """Noise-free signed IR signal with partial volume, ``[slice, row, column]`` float32."""
    x, y = _axes_mm(acquisition, supersampling)
    offsets = ((np.arange(through_plane_samples) + 0.5) / through_plane_samples - 0.5) * acquisition.slice_thickness_mm
    rows, columns, s = acquisition.rows, acquisition.columns, supersampling
    signal = np.zeros((acquisition.n_slices, rows, columns), dtype=np.float32)
    for k, z in enumerate(acquisition.slice_z_mm):
        for offset in offsets:
            tissue = classify_plane(heart, scar, x, y, z + float(offset))
            signal[k] += signal_table[tissue].reshape(rows, s, columns, s).mean(axis=(1, 3))
    return signal / len(offsets)


def render_magnitude(
    rng_bias: np.random.Generator,
    rng_noise: np.random.Generator,
    signal: np.ndarray,
    acquisition: Acquisition,
    signal_table: np.ndarray,
    psf_sigma_px: float,
    bias_log_amplitude: float,
) -> np.ndarray:
    """What the scanner reconstructs, in proton-density units (float32, ≥ 0)."""
    blurred = point_spread(signal, psf_sigma_px)
    biased = blurred * bias_field(rng_bias, blurred.shape, bias_log_amplitude, acquisition.heart_centre_px())
    sigma = abs(float(signal_table[Tissue.LV_BLOOD])) / acquisition.snr_blood
    return rician_magnitude(rng_noise, biased, sigma)


def render_phase_sensitive(
    rng_bias: np.random.Generator,
    rng_noise: np.random.Generator,
    signal: np.ndarray,
    acquisition: Acquisition,
    signal_table: np.ndarray,
    psf_sigma_px: float,
    bias_log_amplitude: float,
) -> np.ndarray:
    """The signed (PSIR) partner of ``render_magnitude``: the real part of the same complex image.

    Given generators in the states ``render_magnitude`` was given, it draws the same bias
    field and the same real-channel noise, so the two images agree as a scanner's do.
    """
    blurred = point_spread(signal, psf_sigma_px)
    biased = blurred * bias_field(rng_bias, blurred.shape, bias_log_amplitude, acquisition.heart_centre_px())
    sigma = abs(float(signal_table[Tissue.LV_BLOOD])) / acquisition.snr_blood
    return biased + rng_noise.normal(0.0, sigma, size=biased.shape).astype(np.float32)

"""Classical fitting: T1 (three-parameter + Look-Locker), T2 (mono-exponential), ECV."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cmr.fitting import ecv_from_maps, ecv_map, fit_t1, fit_t2, myocardial_ecv
from cmr.phantom.mapping import simulate_mapping_case
from cmr.physics import ApparentReadout, molli_inversion_times, molli_signal, t2prep_signal

T1_VALUES_MS = np.array([300.0, 450.0, 650.0, 1000.0, 1200.0, 1600.0, 1900.0])


def _exact_series(t1: np.ndarray, heart_rate: float = 60.0, scheme: str = "5(3)3"):
    ti = molli_inversion_times(heart_rate, scheme)
    return molli_signal(t1, 0.8, ti, readout=ApparentReadout()), ti


def _inner_remote_myocardium(case) -> np.ndarray:
    """Myocardium away from blood-pool and epicardial partial volume, scar excluded."""
    return ndimage.binary_erosion(case.myocardium_mask & ~case.scar_mask)


def test_t1_recovered_exactly_from_noiseless_look_locker_curves():
    series, ti = _exact_series(T1_VALUES_MS)
    fit = fit_t1(series, ti)
    np.testing.assert_allclose(fit.t1_ms, T1_VALUES_MS, rtol=1e-3)
    assert np.all(fit.valid) and np.all(fit.r_squared > 0.9999)


def test_t1_within_3_percent_from_noisy_magnitude_curves():
    rng = np.random.default_rng(0)
    t1 = np.repeat(T1_VALUES_MS, 400)
    series, ti = _exact_series(t1)
    noisy = np.abs(series + rng.normal(0.0, 0.01, series.shape) + 1j * rng.normal(0.0, 0.01, series.shape))
    fit = fit_t1(noisy, ti)
    median = np.array([np.median(fit.t1_ms[t1 == value]) for value in T1_VALUES_MS])
    np.testing.assert_allclose(median, T1_VALUES_MS, rtol=0.03)


def test_frames_in_any_order_give_the_same_fit():
    series, ti = _exact_series(T1_VALUES_MS)
    order = np.random.default_rng(1).permutation(ti.size)
    np.testing.assert_allclose(fit_t1(series[order], ti[order]).t1_ms, fit_t1(series, ti).t1_ms, rtol=1e-9)


def test_polarity_is_restored_at_the_null_point():
    series, ti = _exact_series(np.array([1000.0]))
    fit = fit_t1(series, ti)
    # Sorted TIs 120, 200 ms lie before myocardium's null (~ T1* · ln(B/A)) and are negative.
    assert fit.null_index[0] == 2


def test_without_the_look_locker_correction_t1_is_measurably_wrong():
    series, ti = _exact_series(T1_VALUES_MS)
    uncorrected = fit_t1(series, ti, look_locker=False).t1_ms
    assert np.all(uncorrected < 0.95 * T1_VALUES_MS)
    assert np.all(uncorrected[T1_VALUES_MS >= 1000] < 0.8 * T1_VALUES_MS[T1_VALUES_MS >= 1000])


def test_phantom_molli_t1_within_molli_bias_of_the_truth_noiseless_and_noisy():
    for noise, tolerance in ((0.0, 0.10), (0.01, 0.12)):
        case = simulate_mapping_case(1, noise=noise)
        region = _inner_remote_myocardium(case)
        fit = fit_t1(case.molli_native, case.inversion_times_native_ms)
        relative = np.nanmedian(fit.t1_ms[region]) / np.mean(case.t1_native_ms[region]) - 1.0
        # MOLLI reads myocardium low (bSSFP readout, incomplete recovery): within −10/−12 %, never above.
        assert -tolerance < relative < 0.0, (noise, relative)


def test_phantom_look_locker_correction_moves_t1_towards_the_truth():
    case = simulate_mapping_case(1, noise=0.0)
    region = _inner_remote_myocardium(case)
    truth = np.mean(case.t1_native_ms[region])
    corrected = np.nanmedian(fit_t1(case.molli_native, case.inversion_times_native_ms).t1_ms[region])
    uncorrected = np.nanmedian(
        fit_t1(case.molli_native, case.inversion_times_native_ms, look_locker=False).t1_ms[region]
    )
    assert abs(corrected - truth) < 0.1 * truth
    assert uncorrected < 0.85 * truth


def test_fit_quality_and_accuracy_drop_under_motion():
    still = simulate_mapping_case(2, noise=0.005)
    moving = simulate_mapping_case(2, noise=0.005, motion_mm=8.0)
    myocardium = still.myocardium_mask
    fits = [fit_t1(case.molli_native, case.inversion_times_native_ms) for case in (still, moving)]
    r2 = [np.nanmedian(fit.r_squared[myocardium]) for fit in fits]
    error = [np.nanmean(np.abs(fit.t1_ms[myocardium] - still.t1_native_ms[myocardium])) for fit in fits]
    assert r2[1] < r2[0] - 0.005
    assert error[1] > 1.5 * error[0]


def test_mask_limits_the_fit_to_its_pixels():
    series, ti = _exact_series(np.full((3, 4), 1000.0))
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 2] = True
    fit = fit_t1(series, ti, mask=mask)
    assert np.isnan(fit.t1_ms[0, 0]) and fit.t1_ms[1, 2] == pytest.approx(1000.0, rel=1e-3)


def test_t1_fit_refuses_mismatched_times():
    series, ti = _exact_series(T1_VALUES_MS)
    with pytest.raises(ValueError, match="8 frames but 7 inversion times"):
        fit_t1(series, ti[:7])
    with pytest.raises(ValueError, match="differ"):
        fit_t1(series, np.array([100.0, 100.0, 200, 300, 400, 500, 600, 700]))


def test_t2_recovered_exactly_noiseless_and_within_3_percent_noisy():
    t2 = np.array([25.0, 45.0, 52.0, 60.0, 80.0])
    durations = np.array([0.0, 25.0, 55.0])
    np.testing.assert_allclose(fit_t2(t2prep_signal(t2, 0.8, durations), durations).t2_ms, t2, rtol=1e-4)
    rng = np.random.default_rng(3)
    repeated = np.repeat(t2, 500)
    series = t2prep_signal(repeated, 0.8, durations)
    noisy = np.abs(series + rng.normal(0.0, 0.005, series.shape) + 1j * rng.normal(0.0, 0.005, series.shape))
    fit = fit_t2(noisy, durations)
    median = np.array([np.median(fit.t2_ms[repeated == value]) for value in t2])
    np.testing.assert_allclose(median, t2, rtol=0.03)


def test_phantom_t2_within_10_percent_in_inner_myocardium():
    case = simulate_mapping_case(1, noise=0.01)
    region = _inner_remote_myocardium(case)
    fit = fit_t2(case.t2prep, case.t2prep_ms)
    assert np.nanmedian(fit.t2_ms[region]) == pytest.approx(np.mean(case.t2_ms[region]), rel=0.10)


def test_ecv_of_known_inputs():
    # Hct 0.45; blood R1 1/1600 → 1/400 ms⁻¹ (ΔR1 = 1.875e-3); myocardium 1/1000 → 1/600 (ΔR1 = 6.667e-4).
    assert myocardial_ecv(1000.0, 600.0, 1600.0, 400.0, 0.45) == pytest.approx(0.55 * 6.6667e-4 / 1.875e-3, rel=1e-4)
    ecv = ecv_map(np.array([1000.0, 1100.0]), np.array([600.0, 400.0]), 1600.0, 400.0, 0.45)
    assert ecv[0] == pytest.approx(0.19556, rel=1e-3)
    assert ecv[1] == pytest.approx(0.55 * (1 / 400 - 1 / 1100) / 1.875e-3, rel=1e-9)


def test_ecv_from_the_phantoms_true_t1_maps_is_its_ecv_map():
    case = simulate_mapping_case(3, scar_type="ischaemic")
    result = ecv_from_maps(case.t1_native_ms, case.t1_post_ms, case.blood_mask, case.haematocrit, case.myocardium_mask)
    myocardium = case.myocardium_mask
    np.testing.assert_allclose(result.ecv_map[myocardium], case.ecv[myocardium], rtol=1e-3)


def test_ecv_from_fitted_maps_is_close_to_the_truth():
    case = simulate_mapping_case(1, noise=0.005, scar_type="none")
    native = fit_t1(case.molli_native, case.inversion_times_native_ms).t1_ms
    post = fit_t1(case.molli_post, case.inversion_times_post_ms).t1_ms
    blood = ndimage.binary_erosion(case.blood_mask, iterations=2)
    region = _inner_remote_myocardium(case)
    result = ecv_from_maps(native, post, blood, case.haematocrit, region)
    assert result.myocardial_ecv == pytest.approx(float(case.ecv[region].mean()), abs=0.03)


def test_ecv_refuses_a_bad_haematocrit_and_swapped_series():
    with pytest.raises(ValueError, match="haematocrit"):
        ecv_map(np.array([1000.0]), np.array([600.0]), 1600.0, 400.0, 42.0)
    with pytest.raises(ValueError, match="swapped"):
        ecv_map(np.array([600.0]), np.array([1000.0]), 400.0, 1600.0, 0.42)


# --- DICOM source series -----------------------------------------------------------------

import pydicom  # noqa: E402

from cmr.mapping_series import MappingSeriesError, read_mapping_series  # noqa: E402
from cmr.phantom.mapping_dicom import STORED_GAIN, write_mapping_series  # noqa: E402


@pytest.fixture(scope="module")
def dicom_case():
    return simulate_mapping_case(11, noise=0.005, shape=(64, 64))


def test_molli_dicom_carries_each_frames_inversion_time_in_acquisition_order(tmp_path, dicom_case):
    paths = write_mapping_series(dicom_case, tmp_path, "molli_native")
    written = [float(pydicom.dcmread(path).InversionTime) for path in paths]
    assert written == dicom_case.inversion_times_native_ms.tolist()
    header = pydicom.dcmread(paths[0])
    assert header.ImageComments == "TI 120" and header.PatientSex == "F" and header.Manufacturer


def test_unordered_frames_are_read_sorted_by_inversion_time_with_the_right_pixels(tmp_path, dicom_case):
    paths = write_mapping_series(dicom_case, tmp_path / "in", "molli_native")
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for k, path in zip(np.random.default_rng(0).permutation(len(paths)), paths):
        path.rename(shuffled / f"x{k:02d}.dcm")
    series = read_mapping_series(shuffled, "t1")
    order = np.argsort(dicom_case.inversion_times_native_ms)
    assert series.times_ms.tolist() == sorted(dicom_case.inversion_times_native_ms.tolist())
    np.testing.assert_allclose(
        series.frames / STORED_GAIN, dicom_case.molli_native[order], atol=0.5 / STORED_GAIN + 1e-6
    )
    fit = fit_t1(series.frames, series.times_ms)
    direct = fit_t1(dicom_case.molli_native, dicom_case.inversion_times_native_ms)
    region = _inner_remote_myocardium(dicom_case)
    assert np.nanmedian(fit.t1_ms[region]) == pytest.approx(np.nanmedian(direct.t1_ms[region]), rel=0.01)


def test_series_geometry_matches_the_phantoms(tmp_path, dicom_case):
    write_mapping_series(dicom_case, tmp_path, "t2prep")
    series = read_mapping_series(tmp_path, "t2")
    assert series.times_ms.tolist() == [0.0, 25.0, 55.0]
    np.testing.assert_allclose(series.affine_ras(), dicom_case.geometry.affine_ras(), atol=1e-3)


def test_t2_duration_falls_back_to_echo_time(tmp_path, dicom_case):
    for path in write_mapping_series(dicom_case, tmp_path, "t2prep"):
        dataset = pydicom.dcmread(path)
        del dataset.ImageComments
        dataset.save_as(path)
    assert read_mapping_series(tmp_path, "t2").times_ms.tolist() == [0.0, 25.0, 55.0]


def test_a_missing_inversion_time_is_refused_naming_the_file(tmp_path, dicom_case):
    paths = write_mapping_series(dicom_case, tmp_path, "molli_native")
    dataset = pydicom.dcmread(paths[3])
    del dataset.InversionTime
    dataset.save_as(paths[3])
    with pytest.raises(MappingSeriesError, match=r"IM_0004\.dcm: no InversionTime"):
        read_mapping_series(tmp_path, "t1")


def test_a_non_numeric_inversion_time_is_refused(tmp_path, dicom_case):
    paths = write_mapping_series(dicom_case, tmp_path, "molli_native")
    dataset = pydicom.dcmread(paths[1])
    dataset["InversionTime"].VR = "LO"
    dataset.InversionTime = "n/a"
    dataset.save_as(paths[1])
    with pytest.raises(MappingSeriesError, match=r"IM_0002\.dcm: InversionTime 'n/a' is not a positive number"):
        read_mapping_series(tmp_path, "t1")


def test_duplicate_inversion_times_are_refused(tmp_path, dicom_case):
    paths = write_mapping_series(dicom_case, tmp_path, "molli_native")
    dataset = pydicom.dcmread(paths[2])
    dataset.InversionTime = "120"
    dataset.save_as(paths[2])
    with pytest.raises(MappingSeriesError, match="InversionTime 120 ms duplicates"):
        read_mapping_series(tmp_path, "t1")


def test_frames_at_another_slice_position_are_refused(tmp_path, dicom_case):
    paths = write_mapping_series(dicom_case, tmp_path, "molli_native")
    dataset = pydicom.dcmread(paths[5])
    position = [float(v) for v in dataset.ImagePositionPatient]
    dataset.ImagePositionPatient = [position[0] + 8.0, position[1], position[2]]
    dataset.save_as(paths[5])
    with pytest.raises(MappingSeriesError, match=r"IM_0006\.dcm: geometry differs"):
        read_mapping_series(tmp_path, "t1")


def test_too_few_frames_and_non_dicom_files_are_refused(tmp_path, dicom_case):
    paths = write_mapping_series(dicom_case, tmp_path / "few", "molli_native")
    for path in paths[3:]:
        path.unlink()
    with pytest.raises(MappingSeriesError, match=r"3 frame.*at least 4"):
        read_mapping_series(tmp_path / "few", "t1")
    (tmp_path / "few" / "notes.txt").write_text("not an image")
    with pytest.raises(MappingSeriesError, match=r"notes\.txt: not a DICOM file"):
        read_mapping_series(tmp_path / "few", "t1")

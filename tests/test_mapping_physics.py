"""Signal models and the mapping phantom: shapes, determinism, ground truth, Look-Locker physics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from cmr.phantom.mapping import simulate_mapping_case
from cmr.physics import (
    ApparentReadout,
    molli_inversion_times,
    molli_signal,
    molli_signed_signal,
    parse_molli_scheme,
    sample_examination,
    t2prep_signal,
)


def _three_parameter_fit(ti: np.ndarray, signed: np.ndarray) -> tuple[float, float, float]:
    (a, b, t1_star), _ = curve_fit(lambda t, a, b, c: a - b * np.exp(-t / c), ti, signed, p0=(0.5, 1.0, 600.0))
    return a, b, t1_star


def test_5_3_3_inversion_times_step_by_the_rr_interval_in_acquisition_order():
    ti = molli_inversion_times(60.0)
    assert ti.tolist() == [120, 1120, 2120, 3120, 4120, 200, 1200, 2200]


def test_inversion_times_depend_on_heart_rate():
    slow, fast = molli_inversion_times(50.0), molli_inversion_times(100.0)
    assert slow[1] - slow[0] == pytest.approx(1200.0)
    assert fast[1] - fast[0] == pytest.approx(600.0)
    assert slow[0] == fast[0] == 120.0  # the first TI is the sequence's, not the heart's


def test_4_1_3_1_2_has_three_inversions_offset_by_the_increment():
    ti = molli_inversion_times(75.0, "4(1)3(1)2", first_ti_ms=100.0, ti_increment_ms=80.0)
    assert ti.size == 9
    assert [ti[0], ti[4], ti[7]] == [100.0, 180.0, 260.0]


def test_recovery_in_seconds_is_rounded_up_to_whole_beats():
    scheme = parse_molli_scheme("5(3s)3")
    assert scheme.readouts_per_block == (5, 3)
    assert scheme.recovery_beats(rr_ms=800.0) == (4,)


@pytest.mark.parametrize("scheme", ["5-3-3", "(3)5", "5(3)", ""])
def test_malformed_schemes_are_refused(scheme):
    with pytest.raises(ValueError, match="MOLLI scheme"):
        parse_molli_scheme(scheme)


def test_an_inversion_time_longer_than_the_rr_interval_is_refused():
    with pytest.raises(ValueError, match="RR interval"):
        molli_inversion_times(150.0, "4(1)3(1)2", first_ti_ms=300.0, ti_increment_ms=200.0)


def test_molli_signal_has_the_frame_axis_first():
    t1 = np.full((4, 5), 1000.0)
    signal = molli_signal(t1, 1.0, molli_inversion_times(60.0))
    assert signal.shape == (8, 4, 5)
    assert np.all(signal >= 0)


def test_bssfp_readouts_make_the_apparent_t1_shorter_than_t1():
    t1 = np.array([400.0, 1000.0, 1600.0])
    ti = molli_inversion_times(60.0)
    signed = molli_signed_signal(t1, 1.0, ti, t2_ms=np.array([45.0, 45.0, 250.0]))
    for k, true_t1 in enumerate(t1):
        a, b, t1_star = _three_parameter_fit(ti, signed[:, k])
        assert t1_star < 0.95 * true_t1
        corrected = t1_star * (b / a - 1.0)
        # the Look-Locker correction brings it back near T1 (MOLLI's known few-% underestimate)
        assert abs(corrected - true_t1) < 0.1 * true_t1


def test_incomplete_recovery_between_blocks_matters_for_long_t1():
    ti = molli_inversion_times(60.0)
    signed = molli_signed_signal(np.array([1600.0, 1600.0]), 1.0, ti, t2_ms=200.0)
    full_recovery = molli_signed_signal(np.array([1600.0]), 1.0, ti, t2_ms=200.0, scheme="5(30)3", heart_rate_bpm=60.0)
    assert not np.allclose(signed[5:, 0], full_recovery[5:, 0], atol=1e-3)
    assert np.allclose(signed[:5, 0], full_recovery[:5, 0])


def test_higher_heart_rate_biases_molli_t1_further_low():
    t1 = np.array([1600.0])
    estimates = []
    for rate in (50.0, 100.0):
        ti = molli_inversion_times(rate)
        a, b, t1_star = _three_parameter_fit(ti, molli_signed_signal(t1, 1.0, ti, t2_ms=200.0)[:, 0])
        estimates.append(t1_star * (b / a - 1.0))
    assert estimates[1] < estimates[0]


def test_apparent_readout_lies_exactly_on_the_three_parameter_curve():
    ti = molli_inversion_times(60.0)
    signed = molli_signed_signal(np.array([1000.0]), 2.0, ti, readout=ApparentReadout())
    a, b, t1_star = _three_parameter_fit(ti, signed[:, 0])
    assert t1_star * (b / a - 1.0) == pytest.approx(1000.0, rel=1e-6)


def test_t2prep_signal_is_mono_exponential_with_frames_first():
    signal = t2prep_signal(np.array([[50.0, 100.0]]), 2.0, (0.0, 25.0, 55.0))
    assert signal.shape == (3, 1, 2)
    assert signal[0, 0, 0] == pytest.approx(2.0)
    assert signal[2, 0, 0] == pytest.approx(2.0 * np.exp(-55.0 / 50.0))


def test_ecv_ground_truth_satisfies_the_haematocrit_relation():
    exam = sample_examination(np.random.default_rng(1), "3T", "GE", "male", "ischaemic", haematocrit=0.42)
    myo, blood = exam.tissues["myocardium"], exam.tissues["blood"]
    delta_myo = 1 / myo.t1_post_ms - 1 / myo.t1_native_ms
    delta_blood = 1 / blood.t1_post_ms - 1 / blood.t1_native_ms
    assert (1 - 0.42) * delta_myo / delta_blood == pytest.approx(myo.ecv, rel=1e-9)
    assert exam.tissues["scar"].ecv > myo.ecv


def test_values_depend_on_field_strength():
    low = sample_examination(np.random.default_rng(2), "1.5T", "Siemens", "female")
    high = sample_examination(np.random.default_rng(2), "3T", "Siemens", "female")
    assert high.tissues["myocardium"].t1_native_ms > low.tissues["myocardium"].t1_native_ms
    assert high.tissues["myocardium"].t2_ms < low.tissues["myocardium"].t2_ms


def test_unknown_field_strength_is_refused():
    with pytest.raises(ValueError, match="field_strength"):
        sample_examination(np.random.default_rng(0), "7T", "Siemens", "female")


def test_mapping_case_shapes_and_types():
    case = simulate_mapping_case(0, shape=(64, 72))
    assert case.molli_native.shape == (8, 64, 72) and case.molli_native.dtype == np.float32
    assert case.molli_post.shape == (9, 64, 72)
    assert case.t2prep.shape == (3, 64, 72)
    assert case.inversion_times_native_ms.shape == (8,)
    assert case.t2prep_ms.tolist() == [0.0, 25.0, 55.0]
    for truth in (case.t1_native_ms, case.t1_post_ms, case.t2_ms, case.ecv):
        assert truth.shape == (64, 72)
    assert case.myocardium_mask.dtype == bool and case.myocardium_mask.sum() > 100
    assert case.blood_mask.sum() > 100
    assert case.attributes["sex"] == "F" and case.attributes["field_strength"] == "1.5T"


def test_mapping_case_is_deterministic_for_a_seed():
    first, second = simulate_mapping_case(5, motion_mm=3.0), simulate_mapping_case(5, motion_mm=3.0)
    assert np.array_equal(first.molli_native, second.molli_native)
    assert np.array_equal(first.t2prep, second.t2prep)
    assert not np.array_equal(first.molli_native, simulate_mapping_case(6, motion_mm=3.0).molli_native)


def test_case_ecv_map_matches_its_t1_maps_and_haematocrit():
    case = simulate_mapping_case(3, haematocrit=0.38, scar_type="ischaemic")
    assert case.haematocrit == 0.38
    blood = case.blood_mask
    delta_blood = np.mean(1 / case.t1_post_ms[blood] - 1 / case.t1_native_ms[blood])
    myo = case.myocardium_mask
    delta_myo = 1 / case.t1_post_ms[myo] - 1 / case.t1_native_ms[myo]
    np.testing.assert_allclose((1 - 0.38) * delta_myo / delta_blood, case.ecv[myo], rtol=1e-4)
    assert case.ecv[case.scar_mask].mean() > case.ecv[myo & ~case.scar_mask].mean() + 0.15


def test_motion_moves_the_frames_but_not_the_ground_truth():
    still, moving = simulate_mapping_case(4, noise=0.0), simulate_mapping_case(4, noise=0.0, motion_mm=6.0)
    assert np.array_equal(still.t1_native_ms, moving.t1_native_ms)
    displacement = moving.displacement_mm["molli_native"]
    assert np.hypot(displacement[:, 0], displacement[:, 1]).max() + np.abs(displacement[:, 2]).max() <= 6.0 + 1e-9
    assert np.abs(moving.molli_native - still.molli_native).max() > 0.1

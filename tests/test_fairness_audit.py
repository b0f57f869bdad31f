"""The audit's intervals, gaps and flags, on numbers whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fairness.audit import WORST_VS_BEST, WORST_VS_REST, audit_round, audit_run
from fairness.intervals import (
    auroc_from_histograms,
    mean_interval,
    newcombe_difference,
    welch_difference,
    wilson_interval,
)
from fairness.run_store import RoundStatistics, RunStatistics
from fairness.settings import Tolerances
from fairness.statistics import MetricSums, site_statistics
from fairness.suppression import suppress
from fairness_fixtures import SPEC, consortium_records, sent

TOLERANCES = Tolerances.defaults(SPEC)


def suppressed_round(server_round: int, threshold: int = 10, **records_options) -> RoundStatistics:
    records = consortium_records(records_options.pop("n", 60), records_options.pop("seed", 0), **records_options)
    return RoundStatistics(server_round, {site: sent(rs, threshold)[1] for site, rs in records.items()})


def unsuppressed_round(n: int, seed: int, **gap) -> RoundStatistics:
    """Statistics as if no cell were withheld (threshold 1): the hardest case for false flags."""
    records = consortium_records(n, seed, **gap)
    return RoundStatistics(1, {s: suppress(site_statistics(rs, SPEC), SPEC, 1) for s, rs in records.items()})


# ------------------------------------------------------------------------------------
# Intervals against published values and scipy
# ------------------------------------------------------------------------------------
def test_wilson_interval_matches_the_textbook_value():
    interval = wilson_interval(8, 10)
    assert (interval.low, interval.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_newcombe_interval_matches_newcombes_worked_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 − 48/80.
    interval = newcombe_difference(56, 70, 48, 80)
    assert interval.value == pytest.approx(0.2)
    assert (interval.low, interval.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_mean_and_welch_intervals_from_sums_match_scipy_on_the_raw_values():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.05, 17), rng.normal(0.75, 0.09, 23)
    mean = mean_interval(MetricSums.of(a))
    expected = scipy_stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=scipy_stats.sem(a))
    assert (mean.low, mean.high) == pytest.approx(expected, rel=1e-10)
    welch = welch_difference(MetricSums.of(a), MetricSums.of(b))
    reference = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == pytest.approx((reference.low, reference.high), rel=1e-9)


def test_area_under_the_curve_from_histograms_equals_mann_whitney_on_the_bins():
    positive, negative = [0, 1, 3, 5, 2], [4, 3, 2, 1, 0]
    area = auroc_from_histograms(positive, negative)
    pos_values = np.repeat(np.arange(5), positive)
    neg_values = np.repeat(np.arange(5), negative)
    u = scipy_stats.mannwhitneyu(pos_values, neg_values).statistic
    assert area.value == pytest.approx(u / (len(pos_values) * len(neg_values)))
    assert 0 < area.standard_error < 0.2
    assert math.isnan(auroc_from_histograms([0, 0], [1, 2]).value)


def test_welch_and_newcombe_intervals_cover_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    welch_hits = newcombe_hits = 0
    trials = 1000
    for _ in range(trials):
        a, b = rng.normal(0.80, 0.06, 12), rng.normal(0.75, 0.10, 9)
        interval = welch_difference(MetricSums.of(a), MetricSums.of(b))
        welch_hits += interval.low <= 0.05 <= interval.high
        x1, x2 = rng.binomial(20, 0.7), rng.binomial(15, 0.5)
        difference = newcombe_difference(int(x1), 20, int(x2), 15)
        newcombe_hits += difference.low <= 0.2 <= difference.high
    assert 0.93 <= welch_hits / trials <= 0.97
    assert 0.93 <= newcombe_hits / trials <= 0.98


# ------------------------------------------------------------------------------------
# Gaps and flags
# ------------------------------------------------------------------------------------
def test_a_large_gap_for_women_is_flagged_with_women_as_the_worst_group():
    audit = audit_round(suppressed_round(1, n=80, seed=2, female_dice_drop=0.2, female_fraction=0.5), SPEC, TOLERANCES)
    flags = [g for g in audit.gaps if g.flagged]
    assert any(g.grouping == "sex" and g.worst_group == "sex=female" and g.measure == "dice_myocardium" for g in flags)
    women = next(g for g in flags if g.grouping == "sex" and g.comparison == WORST_VS_REST)
    assert women.shortfall == pytest.approx(0.2, abs=0.04)
    assert women.shortfall_low <= women.shortfall <= women.shortfall_high
    assert women.flag_low < women.shortfall_low  # the widened interval is wider
    assert women.ratio < 1 and women.ratio_low < women.ratio < women.ratio_high


def test_with_no_gap_the_chance_of_any_flag_in_a_round_stays_under_5_percent():
    rounds = 40
    flagged = sum(
        any(g.flagged for g in audit_round(unsuppressed_round(24, seed), SPEC, TOLERANCES).gaps)
        for seed in range(rounds)
    )
    assert flagged <= 2, f"{flagged} of {rounds} rounds without a gap raised a flag"


def test_the_flag_interval_is_bonferroni_over_every_comparison_of_the_round():
    audit = audit_round(unsuppressed_round(40, seed=1), SPEC, TOLERANCES)
    assert audit.comparisons > 10
    assert audit.flag_level == pytest.approx(1 - 0.05 / audit.comparisons)
    for gap in audit.gaps:
        if math.isfinite(gap.flag_low):
            assert gap.flag_low <= gap.shortfall_low + 1e-12 and gap.flag_high >= gap.shortfall_high - 1e-12


def test_groups_not_recorded_are_reported_but_never_the_worst_group():
    round_statistics = unsuppressed_round(80, seed=4, unknown_sex_dice_drop=0.4)
    audit = audit_round(round_statistics, SPEC, TOLERANCES)
    unknown = [e for e in audit.consortium if e.group == "sex=unknown" and e.measure == "dice_myocardium"]
    assert unknown and unknown[0].value < 0.6 and not unknown[0].recorded
    assert all("unknown" not in g.worst_group and "unknown" not in g.comparator for g in audit.gaps)


def test_worst_versus_rest_counts_everyone_outside_the_group():
    audit = audit_round(unsuppressed_round(50, seed=3), SPEC, TOLERANCES)
    everyone = next(e.n for e in audit.consortium if e.group == "all" and e.measure == "dice_myocardium")
    for gap in audit.gaps:
        if gap.comparison == WORST_VS_REST and gap.measure == "dice_myocardium":
            group_n = next(e.n for e in audit.consortium if e.group == gap.worst_group and e.measure == gap.measure)
            assert gap.worst_n + gap.comparator_n == everyone == group_n + gap.comparator_n


def test_only_the_final_round_is_flagged_and_every_round_is_in_the_trend(tmp_path: Path):
    rounds = {r: suppressed_round(r, seed=r, n=80, female_dice_drop=0.2, female_fraction=0.5) for r in (1, 2)}
    run = RunStatistics(tmp_path, rounds)  # a run folder the audit never reads
    result = audit_run(run, SPEC, TOLERANCES)
    assert [r.server_round for r in result.rounds] == [1, 2]
    assert not any(g.flagged for g in result.rounds[0].gaps)
    assert result.flags and all(g.server_round == 2 for g in result.flags)
    assert any(g.comparison == WORST_VS_BEST for g in result.rounds[0].gaps)
    assert result.rounds[0].per_site == {} and set(result.final.per_site) == {"site-01", "site-02", "site-03"}


def test_equalised_odds_is_the_larger_of_the_sensitivity_and_specificity_gaps():
    audit = audit_round(unsuppressed_round(60, seed=5), SPEC, TOLERANCES)
    assert audit.equalised_odds
    for odds in audit.equalised_odds:
        assert odds.value == max(odds.sensitivity_gap, odds.specificity_gap)

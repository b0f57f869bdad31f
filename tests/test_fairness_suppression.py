"""Small-cell suppression: no small count is sent, and no withheld one can be worked out from what is."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from cmr.attributes import SubgroupAttributes
from fairness.records import SiteCaseRecord
from fairness.settings import suppression_threshold_from_run_config
from fairness.statistics import ALL_CASES, CASES, NEGATIVE, POSITIVE, call_item, metric_item, site_statistics
from fairness.suppression import additive_relations, count_items, count_of, suppress
from fairness.wire import statistics_document
from fairness_fixtures import SPEC, lge_records, sent

SIZES_AND_SEEDS = [(n, seed) for n in (12, 24, 40, 80, 200) for seed in range(4)]


def server_view(records, threshold=10):
    """Truth at the site, and the figures the server reads."""
    truth = site_statistics(records, SPEC)
    return truth, sent(records, threshold)[1]


def known_groups(view):
    """Groups the server knows exist: sent, or listed as withheld."""
    return sorted(set(view.cells) | {w.group for w in view.withheld}, key=lambda g: g.key)


@pytest.mark.parametrize("n, seed", SIZES_AND_SEEDS)
def test_no_count_from_1_to_threshold_minus_1_is_sent(n, seed):
    _, view = server_view(lge_records("site-01", n, seed))
    for group, cell in view.cells.items():
        for item in count_items(SPEC):
            if cell.get(item) is not None:
                assert not 0 < count_of(cell, item) < 10, (group.key, item.key)


@pytest.mark.parametrize("n, seed", SIZES_AND_SEEDS)
def test_every_total_has_two_or_more_withheld_parts_covering_the_threshold_or_none(n, seed):
    truth, view = server_view(lge_records("site-01", n, seed))
    groups = known_groups(view)
    for item in count_items(SPEC):
        for parent, parts in additive_relations(groups, SPEC):
            if view.get(parent, item) is None:
                continue
            hidden = [p for p in parts if view.get(p, item) is None]
            assert len(hidden) != 1, f"{item.key} of {hidden[0].key} = {parent.key} minus the others"
            if hidden:
                assert sum(count_of(truth.cells[p], item) for p in hidden) >= 10, (parent.key, item.key)


@pytest.mark.parametrize("n, seed", SIZES_AND_SEEDS)
def test_no_small_withheld_count_can_be_solved_for_from_what_is_sent(n, seed):
    """The server's best effort: every relation chained, both call sides adding to the cases, the
    scar Dice counting the scar-positive side, the myocardium Dice counting every case, counts ≥ 0
    and a withheld group ≥ 1; each withheld count of 1 to 9 cases minimised and maximised by linear
    programming. (A count withheld only to protect others, of 10 or more, may be derivable: it
    could have been sent.)"""
    truth, view = server_view(lge_records("site-01", n, seed))
    groups = known_groups(view)
    families = count_items(SPEC)
    unknowns = [(g, f) for g in groups for f in families if view.get(g, f) is None]
    if not unknowns:
        return
    column = {u: i for i, u in enumerate(unknowns)}
    rows, rhs = [], []

    def equation(terms):
        row, constant = np.zeros(len(unknowns)), 0.0
        for (group, family), sign in terms:
            if (group, family) in column:
                row[column[(group, family)]] += sign
            elif group in view.cells:
                constant -= sign * count_of(view.cells[group], family)
        if np.any(row):
            rows.append(row)
            rhs.append(constant)

    for parent, parts in additive_relations(groups, SPEC):
        for family in families:
            equation([((parent, family), 1), *(((p, family), -1) for p in parts)])
    positive, negative = call_item("scar_present", POSITIVE), call_item("scar_present", NEGATIVE)
    for group in groups:
        equation([((group, CASES), 1), ((group, positive), -1), ((group, negative), -1)])
        equation([((group, metric_item("dice_scar")), 1), ((group, positive), -1)])
        equation([((group, metric_item("dice_myocardium")), 1), ((group, CASES), -1)])
    bounds = [(1 if f == CASES else 0, None) for _, f in unknowns]
    for index, (group, family) in enumerate(unknowns):
        true_value = count_of(truth.cells[group], family)
        if not 0 < true_value < 10:
            continue
        objective = np.zeros(len(unknowns))
        objective[index] = 1
        low = linprog(objective, A_eq=np.array(rows), b_eq=rhs, bounds=bounds, method="highs")
        high = linprog(-objective, A_eq=np.array(rows), b_eq=rhs, bounds=bounds, method="highs")
        assert low.status == 0, low.message  # the truth is a solution
        if high.status == 3:  # unbounded above: certainly not pinned
            continue
        assert high.fun * -1 - low.fun > 0.5, f"{family.key} of {group.key} is pinned to {true_value}"


def test_a_small_group_takes_its_smallest_neighbour_with_it():
    records = [_record(i, "female" if i < 4 else "male") for i in range(30)]
    stats = suppress(site_statistics(records, SPEC), SPEC, 10)
    withheld_groups = {w.group.key for w in stats.withheld if w.item == CASES}
    assert "sex=female" in withheld_groups  # primary: 4 women
    assert "sex=male" in withheld_groups  # complementary: male = all − female otherwise
    assert stats.get(ALL_CASES, CASES) == 30


def test_reasons_stay_at_the_site():
    records = [_record(i, "female" if i < 4 else "male") for i in range(30)]
    stats = suppress(site_statistics(records, SPEC), SPEC, 10)
    assert {w.reason for w in stats.withheld} == {"primary", "complementary"}
    document = statistics_document(stats)
    assert "primary" not in document and "complementary" not in document


def test_unsuppressed_statistics_cannot_be_encoded():
    with pytest.raises(ValueError, match="not suppressed"):
        statistics_document(site_statistics(lge_records("site-01", 30, 1), SPEC))


def test_threshold_comes_from_run_config_and_is_checked():
    assert suppression_threshold_from_run_config({}) == 10
    assert suppression_threshold_from_run_config({"fairness-suppression-threshold": 5}) == 5
    for bad in (0, -3, 2.5, "ten", True):
        with pytest.raises(ValueError, match="fairness-suppression-threshold"):
            suppression_threshold_from_run_config({"fairness-suppression-threshold": bad})


def _record(index: int, sex: str) -> SiteCaseRecord:
    attributes = SubgroupAttributes(sex=sex, age_band="40-59", ethnicity="White", vendor="GE", field_strength="3T")
    scar = index % 2 == 0
    metrics = {
        "dice_myocardium": 0.8,
        "dice_scar": 0.5 if scar else float("nan"),
        "scar_burden_percent_reference": 5.0,
        "scar_burden_percent_predicted": 5.0,
        "scar_burden_abs_error": 0.0,
    }
    return SiteCaseRecord(
        f"case-{index}",
        "site-01",
        attributes,
        metrics,
        {"scar_present_reference": scar, "scar_present_predicted": scar},
    )

"""Sites' suppressed statistics, summed on the server, give the pooled records' own figures exactly."""

from __future__ import annotations

import math

import pytest

from fairness.evidence import measures_of, pooled_evidence, rest_evidence
from fairness.pooling import add_statistics
from fairness.settings import Tolerances
from fairness.spec import Grouping
from fairness.statistics import ALL_CASES, CASES, NEGATIVE, POSITIVE, Group, call_item, metric_item, site_statistics
from fairness_fixtures import SPEC, consortium_records, sent


@pytest.fixture(scope="module")
def consortium():
    records = consortium_records(120, seed=3)
    decoded = {site: sent(site_records)[1] for site, site_records in records.items()}
    pooled_records = [r for site_records in records.values() for r in site_records]
    return records, decoded, add_statistics(list(decoded.values())), site_statistics(pooled_records, SPEC, "pooled")


def test_every_figure_sent_by_every_site_equals_the_pooled_records_figure(consortium):
    records, _, summed, truth = consortium
    compared = 0
    for (group, item), senders in summed.contributors.items():
        if len(senders) != len(records):
            continue
        mine, theirs = summed.statistics.get(group, item), truth.get(group, item)
        if item == CASES:
            assert mine == theirs and isinstance(mine, int)
        elif item.kind == "metric":
            assert mine.count == theirs.count and isinstance(mine.count, int)
            assert mine.mean == pytest.approx(theirs.mean, rel=1e-12, abs=1e-12)
            assert mine.variance == pytest.approx(theirs.variance, rel=1e-9, abs=1e-12)
        else:
            assert (mine.cases, mine.called_positive, mine.score_histogram) == (
                theirs.cases,
                theirs.called_positive,
                theirs.score_histogram,
            )
        compared += 1
    assert compared > 20, "too few figures were sent by every site for the test to mean anything"


def test_consortium_rates_and_means_equal_those_computed_on_the_pooled_cases(consortium):
    records, decoded, _, _ = consortium
    pooled = [r for site_records in records.values() for r in site_records]
    measures = {m.key: m for m in measures_of(SPEC, Tolerances.defaults(SPEC))}

    evidence, senders = pooled_evidence(decoded, ALL_CASES, measures["dice_myocardium"])
    assert len(senders) == 3
    assert evidence.sums.mean == pytest.approx(
        sum(r.metrics["dice_myocardium"] for r in pooled) / len(pooled), rel=1e-12
    )

    scarred = [r for r in pooled if r.calls["scar_present_reference"]]
    sensitivity, _ = pooled_evidence(decoded, ALL_CASES, measures["scar_present|sensitivity"])
    assert (sensitivity.successes, sensitivity.trials) == (
        sum(r.calls["scar_present_predicted"] for r in scarred),
        len(scarred),
    )
    clear = [r for r in pooled if not r.calls["scar_present_reference"]]
    specificity, _ = pooled_evidence(decoded, ALL_CASES, measures["scar_present|specificity"])
    assert (specificity.successes, specificity.trials) == (
        sum(not r.calls["scar_present_predicted"] for r in clear),
        len(clear),
    )


def test_everyone_else_is_exact_by_subtraction(consortium):
    records, decoded, _, _ = consortium
    measure = next(m for m in measures_of(SPEC, Tolerances.defaults(SPEC)) if m.key == "dice_myocardium")
    women = Group(Grouping(("sex",)), ("female",))
    rest, senders = rest_evidence(decoded, women, measure)
    others = [r.metrics["dice_myocardium"] for site in senders for r in records[site] if r.attributes.sex != "female"]
    assert rest.sums.count == len(others)
    assert rest.sums.mean == pytest.approx(sum(others) / len(others), rel=1e-12)


def test_a_group_withheld_at_one_site_is_summed_over_the_others_and_says_so():
    records = consortium_records(40, seed=5)
    # Site 3 has only three women: its women are withheld, the other sites' are not.
    records["site-03"] = [r for r in records["site-03"] if r.attributes.sex != "female"] + [
        r for r in records["site-03"] if r.attributes.sex == "female"
    ][:3]
    decoded = {site: sent(site_records)[1] for site, site_records in records.items()}
    women = Group(Grouping(("sex",)), ("female",))
    assert decoded["site-03"].get(women, CASES) is None
    summed = add_statistics(list(decoded.values()))
    senders = summed.sites_for(women, CASES)
    assert "site-03" not in senders and len(senders) >= 1
    expected = sum(1 for site in senders for r in records[site] if r.attributes.sex == "female")
    assert summed.statistics.get(women, CASES) == expected


def test_counts_stay_integers_through_summing(consortium):
    _, _, summed, _ = consortium
    for cell in summed.statistics.cells.values():
        assert isinstance(cell.cases, int)
        for sums in cell.metrics.values():
            assert isinstance(sums.count, int)
        for side in cell.calls.values():
            assert isinstance(side.cases, int) and isinstance(side.called_positive, int)
            assert all(isinstance(v, int) for v in side.score_histogram)
    assert summed.statistics.get(ALL_CASES, call_item("scar_present", POSITIVE)).cases + summed.statistics.get(
        ALL_CASES, call_item("scar_present", NEGATIVE)
    ).cases == summed.statistics.get(ALL_CASES, CASES)
    assert not math.isnan(summed.statistics.get(ALL_CASES, metric_item("dice_scar")).mean)

"""What a site sends about fairness: a flat dict Flower accepts, with no per-case value in it."""

from __future__ import annotations

import math

import pytest
from flwr.app import MetricRecord

from fairness.site import fairness_statistics_to_send
from fairness.statistics import ALL_CASES, CASES, site_statistics
from fairness.suppression import suppress
from fairness.wire import VERSION_KEY, WireFormatError, add_statistics, decode, encode
from fairness_fixtures import SPEC, lge_records, sent


@pytest.fixture(scope="module")
def records():
    return lge_records("site-02", 150, seed=11)


def test_wire_dict_is_flat_with_string_keys_and_numbers_only(records):
    wire, _ = sent(records)
    for key, value in wire.items():
        assert isinstance(key, str) and key.startswith("fairness|")
        if isinstance(value, list):
            assert value and len({type(v) for v in value}) == 1 and type(value[0]) in (int, float), key
        else:
            assert type(value) in (int, float), key
    record = MetricRecord(wire)  # Flower accepts it as it is
    assert dict(record)[VERSION_KEY] == 1


def test_decode_gives_back_exactly_what_was_encoded(records):
    stats = suppress(site_statistics(records, SPEC), SPEC, 10)
    decoded = decode(encode(stats), "site-02")
    assert decoded.cells == stats.cells
    assert decoded.suppression_threshold == 10
    assert decoded.score_bin_edges == stats.score_bin_edges
    assert {(w.group, w.item) for w in decoded.withheld} == {(w.group, w.item) for w in stats.withheld}
    assert all(w.reason == "" for w in decoded.withheld)


def test_no_per_case_value_and_no_case_or_site_identifier_is_sent(records):
    wire = fairness_statistics_to_send(records, {}, "lge")
    sent_numbers = set()
    for value in wire.values():
        sent_numbers.update(value if isinstance(value, list) else [value])
    sent_floats = {v for v in sent_numbers if isinstance(v, float)}
    for record in records:
        for name, value in record.metrics.items():
            if math.isfinite(value) and value not in (0.0, 1.0):
                assert value not in sent_floats, f"{record.case_id}'s {name} appears in what the site sends"
    text = " ".join(wire)
    for record in records:
        assert record.case_id not in text
    assert "site-02" not in text and "case" not in text.replace("cases", "")


def test_no_group_of_fewer_than_threshold_cases_is_sent(records):
    wire = fairness_statistics_to_send(records, {"fairness-suppression-threshold": 10}, "lge")
    for key, value in wire.items():
        if key.startswith("fairness|cell|") and (key.endswith("|cases") or key.endswith("|count")):
            assert value == 0 or value >= 10, key


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda w: w.pop(VERSION_KEY), "fairness|version missing"),
        (lambda w: w.__setitem__(VERSION_KEY, 99), "reads version 1"),
        (lambda w: w.__setitem__("fairness|cell|all|cases", -4), "fairness|cell|all|cases is -4"),
        (lambda w: w.__setitem__("fairness|cell|all|cases", "twelve"), "expected a whole number"),
        (lambda w: w.__setitem__("fairness|cell|all|call|scar_present|positive|called-positive", 10**6), "positive calls"),
        (lambda w: w.__setitem__("fairness|cell|all|call|scar_present|positive|histogram", [1, 2]), "bins"),
        (lambda w: w.__setitem__("fairness|cell|all|metric|dice_myocardium|sum", math.nan), "finite number"),
        (lambda w: w.__setitem__("fairness|cell|nationality=x|cases", 12), "unknown attribute"),
        (lambda w: w.__setitem__("fairness|surprise", 1), "not a known fairness key"),
    ],
)
def test_decode_refuses_malformed_statistics_naming_site_and_key(records, change, expected):
    wire, _ = sent(records)
    change(wire)
    with pytest.raises(WireFormatError, match="site 'site-02'") as error:
        decode(wire, "site-02")
    assert expected in str(error.value)


def test_other_keys_in_the_same_record_are_ignored(records):
    wire, _ = sent(records)
    assert decode({**wire, "dice-myocardium": 0.8}, "site-02").cells == decode(wire, "site-02").cells


def test_summing_sites_adds_counts_as_integers_and_records_contributors():
    first, second = (sent(lge_records(s, 80, seed=n))[1] for n, s in enumerate(("site-01", "site-02")))
    summed = add_statistics([first, second])
    assert summed.statistics.get(ALL_CASES, CASES) == 160
    assert summed.sites_for(ALL_CASES, CASES) == ("site-01", "site-02")

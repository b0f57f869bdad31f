"""What a site sends about fairness: one versioned JSON document, with no per-case value in it."""

from __future__ import annotations

import json
import math

import pytest
from flwr.app import ConfigRecord

from fairness.pooling import add_statistics
from fairness.site import fairness_statistics_to_send
from fairness.statistics import ALL_CASES, CASES, site_statistics
from fairness.suppression import suppress
from fairness.wire import DOCUMENT_VERSION, WireFormatError, statistics_document, statistics_from_document
from fairness_fixtures import SPEC, lge_records, sent


@pytest.fixture(scope="module")
def records():
    return lge_records("site-02", 150, seed=11)


def test_the_document_is_one_versioned_json_string_flower_accepts(records):
    text, _ = sent(records)
    document = json.loads(text)
    assert document["format"] == "cmrfl-fairness-statistics" and document["version"] == DOCUMENT_VERSION
    assert document["suppression_threshold"] == 10
    assert dict(ConfigRecord({"document": text}))["document"] == text  # Flower carries it as it is


def test_reading_gives_back_exactly_what_was_written(records):
    stats = suppress(site_statistics(records, SPEC), SPEC, 10)
    decoded = statistics_from_document(statistics_document(stats), "site-02")
    assert decoded.cells == stats.cells  # sums bit for bit, counts as integers
    assert decoded.suppression_threshold == 10
    assert decoded.score_bin_edges == stats.score_bin_edges
    assert {(w.group, w.item) for w in decoded.withheld} == {(w.group, w.item) for w in stats.withheld}
    assert all(w.reason == "" for w in decoded.withheld)
    assert all(isinstance(cell.cases, int) for cell in decoded.cells.values())


def test_no_per_case_value_and_no_case_or_site_identifier_is_sent(records):
    text = fairness_statistics_to_send(records, SPEC)
    sent_numbers: set[float] = set()

    def collect(value) -> None:
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, float):
            sent_numbers.add(value)

    collect(json.loads(text))
    for record in records:
        for name, value in record.metrics.items():
            if math.isfinite(value) and value not in (0.0, 1.0):
                assert value not in sent_numbers, f"{record.case_id}'s {name} appears in what the site sends"
    for record in records:
        assert record.case_id not in text
    assert "site-02" not in text and "case" not in text.replace("cases", "")


def test_no_group_of_fewer_than_threshold_cases_is_sent(records):
    document = json.loads(fairness_statistics_to_send(records, SPEC, 10))
    for cell in document["cells"]:
        counts = [cell["cases"], *(m["count"] for m in cell["metrics"].values())]
        counts += [side["cases"] for call in cell["calls"].values() for side in call.values()]
        assert all(n == 0 or n >= 10 for n in counts), cell["values"]


def _first_cell(document: dict) -> dict:
    return document["cells"][0]  # the site's total ("all")


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.pop("version"), "document lacks version"),
        (lambda d: d.__setitem__("version", 99), "version is 99; this server reads version 2"),
        (lambda d: d.__setitem__("format", "something else"), "these are not fairness statistics"),
        (lambda d: _first_cell(d).__setitem__("cases", -4), "cells[all].cases is -4"),
        (lambda d: _first_cell(d).__setitem__("cases", "twelve"), "cases is 'twelve', expected a whole number"),
        (lambda d: _first_cell(d).__setitem__("cases", 12.0), "expected a whole number"),
        (
            lambda d: _first_cell(d)["calls"]["scar_present"]["positive"].__setitem__("called_positive", 10**6),
            "cells[all].calls.scar_present.positive.called_positive is 1000000: more positive calls",
        ),
        (
            lambda d: _first_cell(d)["calls"]["scar_present"]["positive"].__setitem__("histogram", [1, 2]),
            "cells[all].calls.scar_present.positive.histogram has 2 bins",
        ),
        (lambda d: _first_cell(d)["metrics"]["dice_myocardium"].__setitem__("sum", None), "sum is None"),
        (lambda d: _first_cell(d).__setitem__("grouping", ["nationality"]), "unknown attribute(s) ['nationality']"),
        (lambda d: d.__setitem__("surprise", 1), "surprise is not a known field"),
        (lambda d: _first_cell(d).__setitem__("case_ids", []), "cells[0].case_ids is not a known field"),
        (lambda d: d["cells"].append(_first_cell(d)), "cells[all] appears twice"),
    ],
)
def test_reading_refuses_malformed_statistics_naming_site_and_field(records, change, expected):
    text, _ = sent(records)
    document = json.loads(text)
    change(document)
    with pytest.raises(WireFormatError, match="site 'site-02'") as error:
        statistics_from_document(json.dumps(document), "site-02")
    assert expected in str(error.value)


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"sum": NaN}', None])
def test_what_is_not_a_json_object_is_refused_naming_the_site(text):
    with pytest.raises(WireFormatError, match="site 'site-09': document"):
        statistics_from_document(text, "site-09")


def test_a_non_finite_sum_is_refused(records):
    text, _ = sent(records)
    broken = text.replace('"sum":', '"sum":Infinity,"x":', 1)
    with pytest.raises(WireFormatError, match="not valid JSON"):
        statistics_from_document(broken, "site-02")


def test_summing_sites_adds_counts_as_integers_and_records_contributors():
    first, second = (sent(lge_records(s, 80, seed=n))[1] for n, s in enumerate(("site-01", "site-02")))
    summed = add_statistics([first, second])
    assert summed.statistics.get(ALL_CASES, CASES) == 160
    assert summed.sites_for(ALL_CASES, CASES) == ("site-01", "site-02")

"""A site's suppressed statistics as one versioned JSON document, and back.

What a site sends about fairness after an evaluation round is this one string::

    {"format": "cmrfl-fairness-statistics", "version": 2,
     "suppression_threshold": 10,
     "score_bin_edges": {"scar_present": [0.0, 0.5, …, 100.0]},
     "cells": [
       {"grouping": ["sex"], "values": ["female"], "cases": 14,
        "metrics": {"dice_myocardium": {"count": 14, "sum": 11.2, "sum_of_squares": 9.1}},
        "calls": {"scar_present": {"positive": {"cases": 10, "called_positive": 7, "histogram": [0, 1, …]},
                                   "negative": {"cases": 4, "called_positive": 0, "histogram": [4, 0, …]}}}},
       …],
     "withheld": [{"grouping": ["sex"], "values": ["unknown"], "figure": "cases"},
                  {"grouping": ["age_band"], "values": ["75+"], "figure": "metric", "name": "dice_scar"}, …]}

It names groups and figures, never cases or the site. Only suppressed statistics
can be written (``fairness.suppression.suppress``); why a figure was withheld
stays at the site. Counts are JSON integers and sums are floats written with
Python's shortest exact representation, so the server's sums (``math.fsum``,
``fairness.pooling``) are the same as on the pooled cases. Reading checks every
field and raises ``WireFormatError`` naming the site and the field.

Where the string travels in a Flower message is the protocol's business, not this module's.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from cmr.attributes import ATTRIBUTE_NAMES
from fairness.spec import Grouping
from fairness.statistics import (
    CASES,
    SIDES,
    CallSide,
    CellStatistics,
    Group,
    MetricSums,
    SiteStatistics,
    WithheldItem,
    call_item,
    metric_item,
)

DOCUMENT_FORMAT = "cmrfl-fairness-statistics"
DOCUMENT_VERSION = 2  # version 1 was a flat dict of pipe-separated keys


class WireFormatError(ValueError):
    """A site's fairness statistics are not in the expected form."""


def statistics_document(stats: SiteStatistics) -> str:
    """The JSON document a site sends; refuses statistics that were not suppressed."""
    threshold = stats.suppression_threshold
    if threshold is None:
        raise ValueError(
            f"statistics of site {stats.site_id!r} were not suppressed: "
            "call fairness.suppression.suppress before sending them"
        )
    document = {
        "format": DOCUMENT_FORMAT,
        "version": DOCUMENT_VERSION,
        "suppression_threshold": int(threshold),
        "score_bin_edges": {name: [float(e) for e in edges] for name, edges in stats.score_bin_edges.items()},
        "cells": [_cell_json(group, cell) for group, cell in stats.cells.items()],
        "withheld": [_withheld_json(w) for w in stats.withheld],
    }
    return json.dumps(document, allow_nan=False, separators=(",", ":"))


def statistics_from_document(text: str, site_id: str) -> SiteStatistics:
    """A site's statistics from its document, checked field by field."""
    reader = _Reader(site_id)
    if not isinstance(text, str):
        reader.fail("document", f"is {type(text).__name__}, expected a JSON string")
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:  # json.JSONDecodeError and the constants refused
        reader.fail("document", f"is not valid JSON ({error})")
    fields = reader.fields(
        document,
        "document",
        required=("format", "version", "suppression_threshold", "cells", "withheld"),
        optional=("score_bin_edges",),
    )
    if fields["format"] != DOCUMENT_FORMAT:
        reader.fail("format", f"is {fields['format']!r}: these are not fairness statistics")
    version = fields["version"]
    if isinstance(version, bool) or version != DOCUMENT_VERSION:
        reader.fail("version", f"is {version!r}; this server reads version {DOCUMENT_VERSION}")
    threshold = reader.integer(fields["suppression_threshold"], "suppression_threshold", minimum=1)
    edges = {
        name: reader.bin_edges(value, f"score_bin_edges.{name}")
        for name, value in reader.mapping(fields.get("score_bin_edges", {}), "score_bin_edges").items()
    }
    cells: dict[Group, CellStatistics] = {}
    for index, value in enumerate(reader.sequence(fields["cells"], "cells")):
        group, cell = _read_cell(value, index, edges, reader)
        if group in cells:
            reader.fail(f"cells[{group.key}]", "appears twice")
        cells[group] = cell
    withheld = [
        _read_withheld(value, index, reader)
        for index, value in enumerate(reader.sequence(fields["withheld"], "withheld"))
    ]
    for item in withheld:
        if item.group in cells and (item.item == CASES or cells[item.group].get(item.item) is not None):
            reader.fail(f"withheld[{item.group.key}]", f"{item.item.key} is withheld and sent at once")
    return SiteStatistics(
        site_id=site_id,
        cells=cells,
        withheld=tuple(withheld),
        suppression_threshold=threshold,
        score_bin_edges=edges,
    )


# ------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------
def _cell_json(group: Group, cell: CellStatistics) -> dict[str, Any]:
    calls: dict[str, dict[str, Any]] = {}
    for (name, side), call_side in cell.calls.items():
        figures: dict[str, Any] = {"cases": int(call_side.cases), "called_positive": int(call_side.called_positive)}
        if call_side.score_histogram:
            figures["histogram"] = [int(v) for v in call_side.score_histogram]
        calls.setdefault(name, {})[side] = figures
    return {
        "grouping": list(group.grouping.attributes),
        "values": list(group.values),
        "cases": int(cell.cases),
        "metrics": {
            name: {"count": int(s.count), "sum": float(s.total), "sum_of_squares": float(s.total_of_squares)}
            for name, s in cell.metrics.items()
        },
        "calls": calls,
    }


def _withheld_json(withheld: WithheldItem) -> dict[str, Any]:
    item = withheld.item
    entry: dict[str, Any] = {
        "grouping": list(withheld.group.grouping.attributes),
        "values": list(withheld.group.values),
        "figure": item.kind,
    }
    if item.kind != "cases":
        entry["name"] = item.name
    if item.kind == "call":
        entry["side"] = item.side
    return entry


# ------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------
def _read_group(fields: Mapping[str, Any], where: str, reader: _Reader) -> Group:
    attributes = reader.sequence(fields["grouping"], f"{where}.grouping")
    values = reader.sequence(fields["values"], f"{where}.values")
    unknown = [a for a in attributes if a not in ATTRIBUTE_NAMES]
    if unknown:
        reader.fail(f"{where}.grouping", f"names unknown attribute(s) {unknown}")
    if len(set(attributes)) != len(attributes):
        reader.fail(f"{where}.grouping", f"repeats an attribute: {attributes}")
    if len(values) != len(attributes) or not all(isinstance(v, str) and v for v in values):
        reader.fail(f"{where}.values", f"is {values!r}, expected one non-empty string per attribute of the grouping")
    return Group(Grouping(tuple(attributes)), tuple(values))


def _read_cell(value: Any, index: int, edges: Mapping[str, tuple[float, ...]], reader: _Reader):
    fields = reader.fields(value, f"cells[{index}]", required=("grouping", "values", "cases", "metrics", "calls"))
    group = _read_group(fields, f"cells[{index}]", reader)
    where = f"cells[{group.key}]"
    cases = reader.integer(fields["cases"], f"{where}.cases")
    metrics = {}
    for name, sums in reader.mapping(fields["metrics"], f"{where}.metrics").items():
        path = f"{where}.metrics.{name}"
        figures = reader.fields(sums, path, required=("count", "sum", "sum_of_squares"))
        count = reader.integer(figures["count"], f"{path}.count")
        if count > cases:
            reader.fail(f"{path}.count", f"is {count}, more values than the group's {cases} cases")
        squares = reader.finite(figures["sum_of_squares"], f"{path}.sum_of_squares")
        if squares < 0:
            reader.fail(f"{path}.sum_of_squares", "is negative")
        metrics[name] = MetricSums(count, reader.finite(figures["sum"], f"{path}.sum"), squares)
    calls = {}
    for name, sides in reader.mapping(fields["calls"], f"{where}.calls").items():
        on_sides = 0
        for side, figures in reader.mapping(sides, f"{where}.calls.{name}").items():
            path = f"{where}.calls.{name}.{side}"
            if side not in SIDES:
                reader.fail(path, f"is not a side of a call ({', '.join(SIDES)})")
            calls[(name, side)] = _read_call_side(figures, path, edges.get(name), reader)
            on_sides += calls[(name, side)].cases
        if on_sides > cases:
            reader.fail(f"{where}.calls.{name}", f"has {on_sides} cases on its sides, the group {cases}")
    return group, CellStatistics(cases, metrics, calls)


def _read_call_side(value: Any, path: str, edges: tuple[float, ...] | None, reader: _Reader) -> CallSide:
    figures = reader.fields(value, path, required=("cases", "called_positive"), optional=("histogram",))
    cases = reader.integer(figures["cases"], f"{path}.cases")
    called = reader.integer(figures["called_positive"], f"{path}.called_positive")
    if called > cases:
        reader.fail(f"{path}.called_positive", f"is {called}: more positive calls than the side's {cases} cases")
    histogram: tuple[int, ...] = ()
    if "histogram" in figures:
        where = f"{path}.histogram"
        if edges is None:
            reader.fail(where, "has no bin edges (score_bin_edges)")
        histogram = tuple(reader.integer(v, where) for v in reader.sequence(figures["histogram"], where))
        if len(histogram) != len(edges) - 1:
            reader.fail(where, f"has {len(histogram)} bins, the bin edges make {len(edges) - 1}")
        if sum(histogram) > cases:
            reader.fail(where, f"counts {sum(histogram)} cases, the side has {cases}")
    return CallSide(cases, called, histogram)


def _read_withheld(value: Any, index: int, reader: _Reader) -> WithheldItem:
    where = f"withheld[{index}]"
    fields = reader.fields(value, where, required=("grouping", "values", "figure"), optional=("name", "side"))
    group = _read_group(fields, where, reader)
    figure, name, side = fields["figure"], fields.get("name"), fields.get("side")
    if figure == "cases" and name is None and side is None:
        return WithheldItem(group, CASES)
    if figure == "metric" and isinstance(name, str) and name and side is None:
        return WithheldItem(group, metric_item(name))
    if figure == "call" and isinstance(name, str) and name and side in SIDES:
        return WithheldItem(group, call_item(name, side))
    reader.fail(where, "expected figure 'cases', 'metric' with a name, or 'call' with a name and a side")


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a finite number")


class _Reader:
    """Checks on a parsed document; every failure names the site and the field."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id

    def fail(self, field: str, message: str) -> NoReturn:
        raise WireFormatError(f"fairness statistics from site {self.site_id!r}: {field} {message}")

    def mapping(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"is {type(value).__name__}, expected an object")
        return value

    def sequence(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(field, f"is {type(value).__name__}, expected a list")
        return value

    def fields(
        self, value: Any, field: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """An object with exactly these fields (the optional ones may be absent)."""
        found = self.mapping(value, field)
        missing = [k for k in required if k not in found]
        if missing:
            self.fail(field, f"lacks {', '.join(missing)}")
        unknown = sorted(set(found) - set(required) - set(optional))
        if unknown:
            self.fail(f"{field}.{unknown[0]}", "is not a known field")
        return found

    def integer(self, value: Any, field: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"is {value!r}, expected a whole number")
        if value < minimum:
            self.fail(field, f"is {value}, expected {minimum} or more")
        return value

    def finite(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, f"is {value!r}, expected a finite number")
        return float(value)

    def bin_edges(self, value: Any, field: str) -> tuple[float, ...]:
        edges = tuple(self.finite(v, field) for v in self.sequence(value, field))
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            self.fail(field, f"is {list(edges)}, expected at least two bin edges rising strictly")
        return edges

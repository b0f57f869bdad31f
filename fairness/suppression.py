"""Small-cell suppression of a site's statistics before they leave the site.

A *count* is the number of cases behind a published figure: a group's cases, a
metric's number of values in that group, the cases on one side of a binary call.
Each (group, count family) pair is published whole or withheld whole.

1. **Primary suppression.** A count from 1 to ``threshold − 1`` is withheld. A group
   with fewer than ``threshold`` cases is withheld entirely (every figure of it).
   Zero counts are published: they describe nobody.
2. **Complementary suppression.** Published figures add up: a group is the sum of
   its subgroups in every finer grouping (``all`` = female + male + not recorded;
   female = female × White + female × Black + …), and a group's cases are the sum
   of the two sides of a call. If exactly one part of a published total were
   withheld, subtraction would give it back. So for every such relation whose total
   is published, the withheld parts are at least two and together count at least
   ``threshold`` cases; otherwise the next smallest published part is withheld too
   (or, with none left, the total).
3. **Check across all relations at once.** Relations chain (women = all − men −
   not recorded; not-recorded-sex White = White − women White − men White; …), so
   one relation at a time is not enough. The site splits its cases into *atoms*
   (every attribute value, and which figures count the case) and searches, by a
   small mixed-integer program, for any combination of the figures it would send
   that adds up to the total of 1 to ``threshold − 1`` cases. While one exists,
   the smallest figure in it is withheld too. This covers every figure sent with a
   count (sums, sums of squares, positive calls, histograms), since they add up
   over the same cases.

Thresholds apply to counts of cases (denominators). Figures inside a published
group (the number of positive calls, the score histogram's bins) are not
thresholded on their own; the report says so.

The threshold comes from the run config (``fairness.settings``: default 10, raised
by a site's own floor).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from fairness.settings import DEFAULT_SUPPRESSION_THRESHOLD
from fairness.spec import AuditSpec
from fairness.statistics import (
    CASES,
    NEGATIVE,
    POSITIVE,
    CellStatistics,
    Group,
    Item,
    SiteStatistics,
    WithheldItem,
    call_item,
    metric_item,
)

PRIMARY = "primary"  # fewer cases than the threshold
COMPLEMENTARY = "complementary"  # withheld so that a primary cell cannot be recovered


def count_items(spec: AuditSpec) -> tuple[Item, ...]:
    """The count families: cases, each metric, each side of each call."""
    items = [CASES, *(metric_item(m.name) for m in spec.metrics)]
    for pair in spec.calls:
        items += [call_item(pair.name, POSITIVE), call_item(pair.name, NEGATIVE)]
    return tuple(items)


def count_of(cell: CellStatistics, item: Item) -> int:
    value = cell.get(item)
    if value is None:
        return 0
    if item.kind == "cases":
        return int(value)
    if item.kind == "metric":
        return int(value.count)
    return int(value.cases)


def additive_relations(groups: Iterable[Group], spec: AuditSpec) -> list[tuple[Group, tuple[Group, ...]]]:
    """(total, parts): every group of a grouping with the groups of each finer grouping inside it.

    Finer = the spec's groupings whose attributes include the total's; groups absent
    from ``groups`` have no cases and add nothing.
    """
    groups = list(groups)
    relations = []
    for coarse, fine in itertools.permutations(spec.groupings, 2):
        if not set(coarse.attributes) < set(fine.attributes):
            continue
        for parent in (g for g in groups if g.grouping == coarse):
            parts = tuple(g for g in groups if g.grouping == fine and g.refines(parent))
            if parts:
                relations.append((parent, parts))
    return relations


def suppress(stats: SiteStatistics, spec: AuditSpec, threshold: int = DEFAULT_SUPPRESSION_THRESHOLD) -> SiteStatistics:
    """What the site may send: ``stats`` with small and complementary cells withheld."""
    if stats.is_suppressed:
        raise ValueError(f"statistics of site {stats.site_id!r} are already suppressed")
    if threshold < 1:
        raise ValueError(f"suppression threshold must be 1 or more, not {threshold}")
    if stats.cells and not stats.atoms:
        raise ValueError(f"statistics of site {stats.site_id!r} carry no atoms: build them with site_statistics")
    items = count_items(spec)
    groups = list(stats.cells)
    counts = {(g, i): count_of(stats.cells[g], i) for g in groups for i in items}
    withheld: dict[tuple[Group, Item], str] = {}

    def withhold(group: Group, item: Item, reason: str) -> bool:
        if (group, item) in withheld:
            return False
        withheld[(group, item)] = reason
        if item == CASES:  # a withheld group is withheld whole
            for other in items:
                withheld.setdefault((group, other), reason)
        return True

    for (group, item), count in counts.items():
        if 0 < count < threshold:
            withhold(group, item, PRIMARY)

    relations = additive_relations(groups, spec)
    call_relations = [
        (group, (call_item(p.name, POSITIVE), call_item(p.name, NEGATIVE))) for group in groups for p in spec.calls
    ]
    while True:
        changed = True
        while changed:  # one relation at a time: cheap, and settles most cases
            changed = False
            for item in items:
                for parent, parts in relations:
                    changed |= _protect(parent, item, [(p, item) for p in parts], counts, withheld, withhold, threshold)
            for group, sides in call_relations:
                changed |= _protect(group, CASES, [(group, s) for s in sides], counts, withheld, withhold, threshold)
        # All relations at once: any small set of cases that sent figures still isolate?
        used = small_isolated_set(stats, [f for f in counts if f not in withheld and counts[f] > 0], threshold)
        if used is None:
            break
        withhold(*min(used, key=lambda f: (counts[f], f[0].key, f[1].key)), COMPLEMENTARY)

    cells = {}
    for group, cell in stats.cells.items():
        if (group, CASES) in withheld:
            continue
        cells[group] = CellStatistics(
            cases=cell.cases,
            metrics={n: v for n, v in cell.metrics.items() if (group, metric_item(n)) not in withheld},
            calls={k: v for k, v in cell.calls.items() if (group, call_item(*k)) not in withheld},
        )
    order = {g: n for n, g in enumerate(groups)}
    listed = sorted(
        (WithheldItem(g, i, reason) for (g, i), reason in withheld.items() if (g, i) in counts),
        key=lambda w: (order[w.group], items.index(w.item)),
    )
    # A withheld group is listed once, by its cases; its other figures go with it.
    listed = [w for w in listed if w.item == CASES or (w.group, CASES) not in withheld]
    return replace(stats, cells=cells, withheld=tuple(listed), suppression_threshold=int(threshold), atoms={})


def _protect(parent, parent_item, parts, counts, withheld, withhold, threshold) -> bool:
    """Make one relation safe: ≥ 2 withheld parts counting ≥ threshold cases, or the total withheld."""
    if (parent, parent_item) in withheld:
        return False
    hidden = [p for p in parts if p in withheld]
    if not hidden:
        return False
    if len(hidden) >= 2 and sum(counts[p] for p in hidden) >= threshold:
        return False
    shown = sorted((p for p in parts if p not in withheld and counts[p] > 0), key=lambda p: (counts[p], p[0].key))
    if shown:
        return withhold(*shown[0], COMPLEMENTARY)
    return withhold(parent, parent_item, COMPLEMENTARY)


def small_isolated_set(
    stats: SiteStatistics, figures: list[tuple[Group, Item]], threshold: int
) -> list[tuple[Group, Item]] | None:
    """The figures whose combination isolates 1 to ``threshold − 1`` cases, or None if none does.

    Every sent count (and so every sum and histogram sent with it) adds up over the
    site's atoms (``statistics.Atom``). A combination Σ y_f · figure_f of sent figures
    gives the total of a set S of cases when, on every non-empty atom, the
    coefficients of the figures counting it add up to 1 (atom in S) or 0 (not).
    A mixed-integer program looks for such a combination with 1 ≤ |S| < threshold;
    atoms with no case are left free, as if the server knew they are empty.
    """
    atoms = [(atom, n) for atom, n in stats.atoms.items() if n > 0]
    if not atoms or not figures or threshold <= 1:
        return None
    # Here, not at the top: every ClientApp process imports this module, most never audit.
    from scipy.optimize import Bounds, LinearConstraint, milp

    membership = np.array([[1.0 if atom.counted_by(g, i) else 0.0 for g, i in figures] for atom, _ in atoms])
    n_atoms, n_figures = membership.shape
    # Variables: x (one 0/1 per atom), then y (one real coefficient per figure).
    link = np.hstack([np.eye(n_atoms), -membership])  # x_a − Σ_f y_f [a ∈ f] = 0
    sizes = np.concatenate([[n for _, n in atoms], np.zeros(n_figures)])
    constraints = [LinearConstraint(link, 0, 0), LinearConstraint(sizes[None, :], 1, threshold - 1)]
    bounds = Bounds(
        np.concatenate([np.zeros(n_atoms), np.full(n_figures, -1e3)]),
        np.concatenate([np.ones(n_atoms), np.full(n_figures, 1e3)]),
    )
    integrality = np.concatenate([np.ones(n_atoms), np.zeros(n_figures)])
    result = milp(np.zeros(n_atoms + n_figures), constraints=constraints, bounds=bounds, integrality=integrality)
    if result.status == 2:  # infeasible: no such set
        return None
    if result.status != 0 or result.x is None:
        raise RuntimeError(f"suppression check of site {stats.site_id!r} did not finish: {result.message}")
    coefficients = result.x[n_atoms:]
    used = [f for f, c in zip(figures, coefficients) if abs(c) > 1e-6]
    return used or None

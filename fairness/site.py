"""What a site sends about fairness after an evaluation: records → statistics → suppression → document.

The one call the ClientApp makes. Per-case records stay at the site (written by
``fairness.records.write_case_records`` if the site keeps them); only the document
returned here crosses the network.
"""

from __future__ import annotations

from collections.abc import Sequence

from fairness.records import CaseRecordLike
from fairness.settings import DEFAULT_SUPPRESSION_THRESHOLD
from fairness.spec import AuditSpec
from fairness.statistics import site_statistics
from fairness.suppression import suppress
from fairness.wire import statistics_document


def fairness_statistics_to_send(
    records: Sequence[CaseRecordLike],
    spec: AuditSpec,
    suppression_threshold: int = DEFAULT_SUPPRESSION_THRESHOLD,
    site_id: str | None = None,
) -> str:
    """The site's suppressed subgroup statistics, as the JSON document of ``fairness.wire``.

    ``spec`` is the audit spec of the task evaluated; ``suppression_threshold`` the
    smallest group reported on (the larger of the run config's and the site's own
    floor, chosen by the caller). ``site_id`` defaults to the records' own.
    """
    return statistics_document(suppress(site_statistics(records, spec, site_id), spec, suppression_threshold))

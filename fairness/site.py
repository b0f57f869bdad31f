"""What a site sends about fairness after an evaluation: records → statistics → suppression → wire.

The one call the ClientApp makes. Per-case records stay at the site (written by
``fairness.records.write_case_records`` if the site keeps them); only the flat
dict returned here crosses the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fairness.records import CaseRecordLike
from fairness.spec import audit_spec_for
from fairness.statistics import site_statistics
from fairness.suppression import suppress, suppression_threshold_from_run_config
from fairness.wire import WireValue, encode


def fairness_statistics_to_send(
    records: Sequence[CaseRecordLike],
    run_config: Mapping[str, Any],
    task: str,
    site_id: str | None = None,
) -> dict[str, WireValue]:
    """The site's suppressed subgroup statistics as a flat dict for a Flower ``MetricRecord``.

    ``run_config`` gives ``fairness-suppression-threshold`` (default 10); ``task`` picks
    the audit spec (``"lge"``). ``site_id`` defaults to the records' own.
    """
    spec = audit_spec_for(task)
    threshold = suppression_threshold_from_run_config(run_config)
    return encode(suppress(site_statistics(records, spec, site_id), spec, threshold))

"""Per-case records shaped like the LGE task's, drawn from a seeded generator, for the fairness tests.

Pure numbers (no images, no torch), so the fairness tests run in milliseconds. The
shape follows tasks/lge/metrics.py: Dice of the myocardium always defined, Dice of
the scar only where the reference has scar, the burden error, and the scar-present
call with the predicted burden as its score. Values carry nine or more significant
digits so that a search of what a site sends cannot hit one by chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cmr.attributes import SubgroupAttributes
from fairness.records import SiteCaseRecord
from fairness.statistics import site_statistics
from fairness.suppression import suppress
from fairness.wire import statistics_document, statistics_from_document
from tasks.lge.audit import LGE_AUDIT_SPEC

SPEC = LGE_AUDIT_SPEC
SITE_SCANNERS = {"site-01": ("Siemens", "1.5T"), "site-02": ("GE", "3T"), "site-03": ("Philips", "1.5T")}


def lge_records(
    site_id: str,
    n: int,
    seed: int,
    *,
    female_dice_drop: float = 0.0,
    female_fraction: float = 0.45,
    unknown_sex_dice_drop: float = 0.0,
) -> list[SiteCaseRecord]:
    """``n`` records of one site; women's myocardium Dice lowered by ``female_dice_drop``."""
    rng = np.random.default_rng(seed)
    vendor, field_strength = SITE_SCANNERS.get(site_id, ("Siemens", "1.5T"))
    records = []
    for index in range(n):
        draw = rng.random()
        sex = "female" if draw < female_fraction else ("male" if draw < 0.93 else "unknown")
        attributes = SubgroupAttributes(
            sex=sex,
            age_band=str(rng.choice(["18-39", "40-59", "60-74", "75+", "unknown"], p=[0.15, 0.3, 0.3, 0.2, 0.05])),
            ethnicity=str(rng.choice(["White", "Black", "Asian", "Mixed", "unknown"], p=[0.6, 0.12, 0.13, 0.05, 0.1])),
            vendor=vendor,
            field_strength=field_strength,
        )
        drop = female_dice_drop if sex == "female" else (unknown_sex_dice_drop if sex == "unknown" else 0.0)
        has_scar = bool(rng.random() < 0.5)
        burden_reference = float(rng.uniform(2, 30)) if has_scar else 0.0
        burden_predicted = max(0.0, burden_reference + float(rng.normal(0, 3)))
        metrics = {
            "dice_myocardium": float(np.clip(rng.normal(0.82 - drop, 0.05), 0.0, 1.0)),
            "dice_scar": float(rng.uniform(0.2, 0.8)) if has_scar else math.nan,
            "scar_burden_percent_reference": burden_reference,
            "scar_burden_percent_predicted": burden_predicted,
            "scar_burden_abs_error": abs(burden_predicted - burden_reference),
        }
        calls = {"scar_present_reference": has_scar, "scar_present_predicted": burden_predicted >= 1.0}
        records.append(SiteCaseRecord(f"{site_id}-case-{seed}-{index:04d}", site_id, attributes, metrics, calls))
    return records


def consortium_records(n_per_site: int, seed: int, **gap) -> dict[str, list[SiteCaseRecord]]:
    return {
        site: lge_records(site, n_per_site, seed * 101 + number, **gap) for number, site in enumerate(SITE_SCANNERS)
    }


def sent(records: Sequence[SiteCaseRecord], threshold: int = 10):
    """What a site sends (its JSON document) and what the server reads from it."""
    document = statistics_document(suppress(site_statistics(records, SPEC), SPEC, threshold))
    return document, statistics_from_document(document, records[0].site_id)

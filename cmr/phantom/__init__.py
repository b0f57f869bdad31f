"""Synthetic multi-site hospitals: LGE short-axis DICOM, reference masks and manifests.

``generate_consortium`` is the entry point; ``ConsortiumSpec.load`` reads back the
ground truth it writes. Every knob, its realistic range and its source:
docs/phantom.md (numbers in ``cmr.phantom.knobs``).
"""

from cmr.phantom.consortium import MANIFEST_COLUMNS, generate_consortium, plan_sites
from cmr.phantom.spec import (
    CaseTruth,
    ConsortiumSpec,
    DemographicMix,
    ScannerProfile,
    SiteSpec,
    SubgroupDifficulty,
)

__all__ = [
    "MANIFEST_COLUMNS",
    "CaseTruth",
    "ConsortiumSpec",
    "DemographicMix",
    "ScannerProfile",
    "SiteSpec",
    "SubgroupDifficulty",
    "generate_consortium",
    "plan_sites",
]

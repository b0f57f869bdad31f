"""Synthetic multi-site hospitals: whole CMR exams as DICOM, reference masks and manifests.

``generate_consortium`` is the entry point; ``ConsortiumSpec.load`` reads back the
ground truth it writes. Each patient's exam is one study, every series rendered from
the same heart, scar and tissue: a 3-plane localizer, bSSFP cines (short-axis stack and
2/3/4-chamber views, 25 phases), the LGE short-axis stack (the case the LGE task
reads, with its reference mask) with its PSIR partner (Siemens, Philips) and 2/4-chamber
LGE, native and post-contrast MOLLI with the scanner's T1 maps (reference T1 maps and
masks in labels/), and T2-prep with its T2 map. ``whole_exam=False`` writes the LGE stack
alone, byte for byte the same. Modules: consortium (plan, streams, orchestration),
anatomy/scar/lge_signal/render/acquisition/dicom_writer (the LGE stack), exam (the rest
of the exam) with exam_protocols (vendor strings), exam_dicom (fast series writer),
exam_tissue, cine, long_axis, tissue_points and exam_mapping. Every knob, its realistic
range and its source: docs/phantom.md (numbers in ``cmr.phantom.knobs``).
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

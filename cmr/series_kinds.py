"""The kinds of series a CMR exam holds; ingest recognises them, tasks declare which they read.

Values are stable strings: a case's kind is stored in its case labels (``series_kind``),
tasks name kinds in ``series_kinds``, the manifest may name one per series
(``series_kind`` column) and the ingest report names the kind each unused series was taken
for, so renaming a value would orphan stored cases and break manifests.

Only kinds some task reads are stored (see ``cmr.reader_registry``); the others are
recognised so that ingest can say what a series is and why it was not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

SERIES_KIND_LABEL = "series_kind"  # the case label that names a stored case's kind


class SeriesKind(StrEnum):
    LGE_STACK = "lge-stack"  # short-axis late gadolinium enhancement stack (magnitude)
    MOLLI = "molli-t1"  # modified Look-Locker inversion recovery source images (native or post-contrast)
    T2_PREP = "t2-prep"  # T2-prepared source images of a T2 map
    CINE = "cine"  # short-axis cine stack: several slices, many cardiac phases each
    DIFFUSION = "diffusion"  # diffusion-weighted images (b-values)
    FINGERPRINTING = "fingerprinting"  # MR fingerprinting time series
    # Recognised so that ingest can name them; no task reads them yet.
    LOCALIZER = "localizer"  # scout / survey images, often three planes in one series
    CINE_LONG_AXIS = "cine-long-axis"  # one plane (2, 3 or 4 chamber), many cardiac phases
    LGE_PSIR = "lge-psir"  # the phase-sensitive (real or phase) partner of an LGE magnitude stack
    LGE_LONG_AXIS = "lge-long-axis"  # LGE in one long-axis plane
    TI_SCOUT = "ti-scout"  # Look-Locker inversion-time scout before LGE
    T1_MAP = "t1-map"  # the scanner's own T1 map (derived), or an ECV map
    T2_MAP = "t2-map"  # the scanner's own T2 map (derived)
    PERFUSION = "perfusion"  # first-pass perfusion dynamics
    NON_CARDIAC = "non-cardiac"  # a series of another body part (brain, spine …)
    UNRECOGNISED = "unrecognised"  # an MR series no rule recognises


def series_kind_of(case_labels: Mapping[str, str]) -> SeriesKind:
    """A stored case's kind, from its case labels.

    LGE stacks carry no ``series_kind`` label: they were the store's first kind, and
    adding one would rewrite every stored LGE case on the next ingest.
    """
    value = case_labels.get(SERIES_KIND_LABEL)
    if value is None:
        return SeriesKind.LGE_STACK
    try:
        return SeriesKind(value)
    except ValueError:
        known = ", ".join(kind.value for kind in SeriesKind)
        raise ValueError(f"case label {SERIES_KIND_LABEL}={value!r} is not a series kind ({known})") from None

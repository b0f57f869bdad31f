"""The kinds of series a case store holds; tasks declare which kinds they read.

Values are stable strings: a case's kind is stored in its case labels (``series_kind``)
and tasks name kinds in ``series_kinds``, so renaming a value would orphan stored cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

SERIES_KIND_LABEL = "series_kind"  # the case label that names a stored case's kind


class SeriesKind(StrEnum):
    LGE_STACK = "lge-stack"  # short-axis late gadolinium enhancement stack
    MOLLI = "molli-t1"  # modified Look-Locker inversion recovery (native or post-contrast); the label stores hold
    T2_PREP = "t2-prep"  # T2-prepared source images of a T2 map
    # Declared for the next tasks; no reader yet.
    CINE = "cine"
    DIFFUSION = "diffusion"
    FINGERPRINTING = "fingerprinting"


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

"""How mapping series (MOLLI, T2-prep) live in the site's case store.

One series is one case, as every series is. Its frames are the case image
``[frame, row, col]`` (single position, frames ordered by their time), and the
case carries, as further named arrays (``CaseStore.put(extra_arrays=...)``):

* MOLLI: ``inversion_times_ms`` float32 ``[frame]``, each frame's effective inversion
  time from the DICOM InversionTime of its file; ``reference_t1_ms`` float32
  ``[row, col]``, the reference T1 map the network is trained and scored against (0
  where undefined), from the site's label files;
* T2-prep: ``t2prep_durations_ms`` float32 ``[frame]``; ``reference_t2_ms`` likewise;
* both: ``tissue_mask`` uint8 ``[row, col]``, tissue labels (``cmr.labels``: blood
  pool, myocardium, scar), where T1, T2 and ECV are read.

Case labels say what the series is: ``series_kind`` (``cmr.series_kinds``: ``molli-t1``
or ``t2-prep``), ``study`` = the salted pseudonym of the study (so that the series of one
examination, native and post-contrast MOLLI for ECV, can be paired without any
identifier), and for MOLLI ``contrast`` = ``native`` or ``post`` and ``haematocrit``
(a fraction, from the manifest; absent if unknown).

The case's ``mask`` is left empty (``has_mask`` false) so that image-and-mask tasks
(LGE) never mistake a mapping series for one of theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cmr.series_kinds import SERIES_KIND_LABEL, SeriesKind
from cmr.store import CaseEntry, CaseStore, StoredCase

SERIES_KIND = SERIES_KIND_LABEL
MOLLI_T1 = SeriesKind.MOLLI.value
CONTRAST = "contrast"
NATIVE, POST_CONTRAST = "native", "post"
STUDY = "study"
HAEMATOCRIT = "haematocrit"

INVERSION_TIMES = "inversion_times_ms"
REFERENCE_T1 = "reference_t1_ms"
T2PREP_DURATIONS = "t2prep_durations_ms"
REFERENCE_T2 = "reference_t2_ms"
TISSUE_MASK = "tissue_mask"


@dataclass(frozen=True)
class MappingContent:
    """A mapping series as the store holds it: frames in time order, case labels, named arrays."""

    frames: np.ndarray  # float32 [frame, row, col]
    case_labels: dict[str, str]
    extra_arrays: dict[str, np.ndarray]


def _mapping_content(
    name: str,
    frames: np.ndarray,
    times_ms: np.ndarray,
    labels: dict[str, str],
    names: tuple[str, str],  # (times, reference) array names
    reference_ms: np.ndarray | None,
    tissue_mask: np.ndarray | None,
) -> MappingContent:
    frames = np.asarray(frames, dtype=np.float32)
    times = np.asarray(times_ms, dtype=np.float32)
    if frames.ndim != 3 or times.shape != (frames.shape[0],):
        raise ValueError(f"{name}: frames {frames.shape} and {times.size} frame times do not match")
    order = np.argsort(times, kind="stable")
    times_name, reference_name = names
    extra = {times_name: times[order]}
    if reference_ms is not None:
        extra[reference_name] = np.asarray(reference_ms, dtype=np.float32)
    if tissue_mask is not None:
        extra[TISSUE_MASK] = np.asarray(tissue_mask, dtype=np.uint8)
    return MappingContent(frames[order], labels, extra)


def t1_mapping_content(
    name: str,
    frames: np.ndarray,
    inversion_times_ms: np.ndarray,
    *,
    contrast: str,
    study: str,
    haematocrit: float | None,
    reference_t1_ms: np.ndarray | None,
    tissue_mask: np.ndarray | None,
) -> MappingContent:
    """One MOLLI series as the store holds it; ValueError naming it (``name``) if it cannot be."""
    if contrast not in (NATIVE, POST_CONTRAST):
        raise ValueError(f"{name}: contrast must be {NATIVE!r} or {POST_CONTRAST!r}, got {contrast!r}")
    labels = {SERIES_KIND: MOLLI_T1, CONTRAST: contrast, STUDY: study}
    if haematocrit is not None and math.isfinite(haematocrit):
        labels[HAEMATOCRIT] = f"{haematocrit:.4f}"
    return _mapping_content(
        name, frames, inversion_times_ms, labels, (INVERSION_TIMES, REFERENCE_T1), reference_t1_ms, tissue_mask
    )


def t2prep_content(
    name: str,
    frames: np.ndarray,
    durations_ms: np.ndarray,
    *,
    study: str,
    reference_t2_ms: np.ndarray | None,
    tissue_mask: np.ndarray | None,
) -> MappingContent:
    """One T2-prep series as the store holds it; ValueError naming it (``name``) if it cannot be."""
    labels = {SERIES_KIND: SeriesKind.T2_PREP.value, STUDY: study}
    return _mapping_content(
        name, frames, durations_ms, labels, (T2PREP_DURATIONS, REFERENCE_T2), reference_t2_ms, tissue_mask
    )


def is_t1_mapping_case(entry: CaseEntry) -> bool:
    return entry.case_labels.get(SERIES_KIND) == MOLLI_T1


def is_t2prep_case(entry: CaseEntry) -> bool:
    return entry.case_labels.get(SERIES_KIND) == SeriesKind.T2_PREP.value


@dataclass(frozen=True)
class T1MappingCase:
    """One stored MOLLI series with what its task needs, checked on load."""

    entry: CaseEntry
    frames: np.ndarray  # float32 [frame, row, col], ordered by inversion time
    inversion_times_ms: np.ndarray  # float32 [frame]
    reference_t1_ms: np.ndarray | None  # float32 [row, col]; None when the site has no reference
    tissue_mask: np.ndarray | None  # uint8 [row, col], cmr.labels convention

    @property
    def contrast(self) -> str:
        return self.entry.case_labels.get(CONTRAST, "")

    @property
    def study(self) -> str:
        return self.entry.case_labels.get(STUDY, self.entry.case_id)

    @property
    def haematocrit(self) -> float:
        """The case's haematocrit as a fraction; NaN when not recorded."""
        try:
            return float(self.entry.case_labels.get(HAEMATOCRIT, "nan"))
        except ValueError:
            return math.nan


@dataclass(frozen=True)
class T2PrepCase:
    """One stored T2-prep series, checked on load."""

    entry: CaseEntry
    frames: np.ndarray  # float32 [frame, row, col], ordered by T2-prep duration
    durations_ms: np.ndarray  # float32 [frame]
    reference_t2_ms: np.ndarray | None  # float32 [row, col]
    tissue_mask: np.ndarray | None  # uint8 [row, col], cmr.labels convention

    @property
    def study(self) -> str:
        return self.entry.case_labels.get(STUDY, self.entry.case_id)


def _checked_arrays(
    stored: StoredCase, kind: SeriesKind, times_name: str, reference_name: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    case_id = stored.entry.case_id
    if stored.entry.case_labels.get(SERIES_KIND) != kind.value:
        raise ValueError(f"case {case_id}: not a {kind.value} series (case label {SERIES_KIND}={kind.value!r} missing)")
    if times_name not in stored.arrays:
        raise ValueError(f"case {case_id}: stored without {times_name}")
    times = np.asarray(stored.arrays[times_name], dtype=np.float32)
    if times.shape != (stored.image.shape[0],):
        raise ValueError(f"case {case_id}: {times.size} frame times ({times_name}) for {stored.image.shape[0]} frames")
    plane = stored.image.shape[1:]
    reference = stored.arrays.get(reference_name)
    mask = stored.arrays.get(TISSUE_MASK)
    for name, array in ((reference_name, reference), (TISSUE_MASK, mask)):
        if array is not None and array.shape != plane:
            raise ValueError(f"case {case_id}: {name} has shape {array.shape}, the frames {plane}")
    return (
        times,
        None if reference is None else np.asarray(reference, dtype=np.float32),
        None if mask is None else np.asarray(mask, dtype=np.uint8),
    )


def t1_mapping_case(stored: StoredCase) -> T1MappingCase:
    """A stored case as a mapping case; ValueError naming the case if it is not one."""
    times, reference, mask = _checked_arrays(stored, SeriesKind.MOLLI, INVERSION_TIMES, REFERENCE_T1)
    frames = np.asarray(stored.image, dtype=np.float32)
    return T1MappingCase(stored.entry, frames, times, reference, mask)


def t2prep_case(stored: StoredCase) -> T2PrepCase:
    """A stored case as a T2-prep case; ValueError naming the case if it is not one."""
    times, reference, mask = _checked_arrays(stored, SeriesKind.T2_PREP, T2PREP_DURATIONS, REFERENCE_T2)
    return T2PrepCase(stored.entry, np.asarray(stored.image, dtype=np.float32), times, reference, mask)


def t1_mapping_cases(store: CaseStore) -> list[T1MappingCase]:
    """Every T1-mapping series in the store, in case-id order."""
    return [t1_mapping_case(store.load(entry)) for entry in store.entries() if is_t1_mapping_case(entry)]


def t2prep_cases(store: CaseStore) -> list[T2PrepCase]:
    """Every T2-prep series in the store, in case-id order."""
    return [t2prep_case(store.load(entry)) for entry in store.entries() if is_t2prep_case(entry)]

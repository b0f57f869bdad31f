"""How a T1-mapping (MOLLI) series lives in the site's case store.

One MOLLI series is one case, as every series is. Its frames are the case image
``[frame, row, col]`` (single position, frames ordered by inversion time), and the
case carries, as further named arrays (``CaseStore.put(extra_arrays=...)``):

* ``inversion_times_ms`` float32 ``[frame]``: each frame's effective inversion time,
  from the DICOM InversionTime of its file;
* ``reference_t1_ms`` float32 ``[row, col]``: the reference T1 map the network is
  trained and scored against (0 where undefined), from the site's label files;
* ``tissue_mask`` uint8 ``[row, col]``: tissue labels (``cmr.labels``: blood pool,
  myocardium, scar), where T1 and ECV are read.

Case labels say what the series is: ``series_kind`` = ``molli-t1``, ``contrast`` =
``native`` or ``post``, ``study`` = the salted pseudonym of the study (so that the
native and post-contrast series of one examination can be paired for ECV without
any identifier) and ``haematocrit`` (a fraction, from the manifest; blank if unknown).

The case's ``mask`` is left empty (``has_mask`` false) so that image-and-mask tasks
(LGE) never mistake a mapping series for one of theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cmr.attributes import SubgroupAttributes
from cmr.store import CaseEntry, CaseStore, StoredCase

SERIES_KIND = "series_kind"
MOLLI_T1 = "molli-t1"
CONTRAST = "contrast"
NATIVE, POST_CONTRAST = "native", "post"
STUDY = "study"
HAEMATOCRIT = "haematocrit"

INVERSION_TIMES = "inversion_times_ms"
REFERENCE_T1 = "reference_t1_ms"
TISSUE_MASK = "tissue_mask"


def is_t1_mapping_case(entry: CaseEntry) -> bool:
    return entry.case_labels.get(SERIES_KIND) == MOLLI_T1


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


def t1_mapping_case(stored: StoredCase) -> T1MappingCase:
    """A stored case as a mapping case; ValueError naming the case if it is not one."""
    case_id = stored.entry.case_id
    if not is_t1_mapping_case(stored.entry):
        raise ValueError(f"case {case_id}: not a T1-mapping series (case label {SERIES_KIND}={MOLLI_T1!r} missing)")
    if INVERSION_TIMES not in stored.arrays:
        raise ValueError(f"case {case_id}: stored without {INVERSION_TIMES}")
    times = np.asarray(stored.arrays[INVERSION_TIMES], dtype=np.float32)
    if times.shape != (stored.image.shape[0],):
        raise ValueError(f"case {case_id}: {times.size} inversion times for {stored.image.shape[0]} frames")
    plane = stored.image.shape[1:]
    reference = stored.arrays.get(REFERENCE_T1)
    mask = stored.arrays.get(TISSUE_MASK)
    for name, array in ((REFERENCE_T1, reference), (TISSUE_MASK, mask)):
        if array is not None and array.shape != plane:
            raise ValueError(f"case {case_id}: {name} has shape {array.shape}, the frames {plane}")
    return T1MappingCase(
        entry=stored.entry,
        frames=np.asarray(stored.image, dtype=np.float32),
        inversion_times_ms=times,
        reference_t1_ms=None if reference is None else np.asarray(reference, dtype=np.float32),
        tissue_mask=None if mask is None else np.asarray(mask, dtype=np.uint8),
    )


def t1_mapping_cases(store: CaseStore) -> list[T1MappingCase]:
    """Every T1-mapping series in the store, in case-id order."""
    return [t1_mapping_case(store.load(entry)) for entry in store.entries() if is_t1_mapping_case(entry)]


def put_t1_mapping_series(
    store: CaseStore,
    case_id: str,
    frames: np.ndarray,
    inversion_times_ms: np.ndarray,
    spacing_mm: tuple[float, float, float],
    attributes: SubgroupAttributes,
    *,
    contrast: str,
    study: str,
    haematocrit: float | None,
    reference_t1_ms: np.ndarray | None,
    tissue_mask: np.ndarray | None,
    affine_ras: np.ndarray | None = None,
) -> bool:
    """Store one MOLLI series (frames in inversion-time order); False when already stored as is."""
    frames = np.asarray(frames, dtype=np.float32)
    times = np.asarray(inversion_times_ms, dtype=np.float32)
    if frames.ndim != 3 or times.shape != (frames.shape[0],):
        raise ValueError(f"case {case_id}: frames {frames.shape} and {times.size} inversion times do not match")
    if contrast not in (NATIVE, POST_CONTRAST):
        raise ValueError(f"case {case_id}: contrast must be {NATIVE!r} or {POST_CONTRAST!r}, got {contrast!r}")
    order = np.argsort(times, kind="stable")
    extra = {INVERSION_TIMES: times[order]}
    if reference_t1_ms is not None:
        extra[REFERENCE_T1] = np.asarray(reference_t1_ms, dtype=np.float32)
    if tissue_mask is not None:
        extra[TISSUE_MASK] = np.asarray(tissue_mask, dtype=np.uint8)
    labels = {SERIES_KIND: MOLLI_T1, CONTRAST: contrast, STUDY: study}
    if haematocrit is not None and math.isfinite(haematocrit):
        labels[HAEMATOCRIT] = f"{haematocrit:.4f}"
    return store.put(
        case_id, frames[order], None, spacing_mm, attributes,
        case_labels=labels, affine_ras=affine_ras, extra_arrays=extra,
    )

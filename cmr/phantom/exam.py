"""The rest of the patient's CMR exam around its LGE stack, written as the scanner exports it.

One study: every series shares the LGE series' StudyInstanceUID, FrameOfReferenceUID,
patient, scanner and institution headers, shows the same heart, scar and tissue, and has
its own SeriesInstanceUID, SeriesNumber and folder ``<StudyDate>_<SeriesNumber>_<NAME>``.
In acquisition order:

    LOCALIZER        3 images: transverse, sagittal, coronal through the LV
    CINE_2CH/3CH/4CH one long-axis plane × N phases each (bSSFP)
    CINE_SAX         the LGE stack's planes × N phases, one file per image
    MOLLI_NATIVE     5(3)3 source images, then T1MAP_NATIVE (the scanner's map)
    T2PREP           0/25/55 ms source images, then T2MAP
    LGE_SAX          (written by the caller, unchanged)
    LGE_SAX_PSIR     the signed partner of the LGE stack (Siemens and Philips)
    LGE_2CH/4CH      one inversion-recovery image each, the stack's TI
    MOLLI_POST       4(1)3(1)2 source images, then T1MAP_POST

Modules: exam_writer (folders, numbers, times, headers), exam_bssfp (localizer, cines),
exam_lge (PSIR, long-axis LGE), exam_mapping_series (MOLLI, T2-prep, maps, labels).
The LGE series keeps the SeriesTime it always had (the study's start) and its
AcquisitionTime ~25 min in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmr.phantom.cine import EJECTION_FRACTION, Contraction, contraction_curve
from cmr.phantom.exam_bssfp import Cardiac, plan_long_axis, write_cine_long_axis, write_cine_stack, write_localizer
from cmr.phantom.exam_lge import write_lge_long_axis, write_psir
from cmr.phantom.exam_mapping_series import MappingLabels, plan_mapping, write_mapping
from cmr.phantom.exam_protocols import KINDS, PSIR_VENDORS, ROLES, SiteExamProtocol
from cmr.phantom.exam_tissue import ExamTissue, bssfp_table
from cmr.phantom.exam_writer import CINE_SNR_OVER_LGE, HEART_RATE_BPM, ExamWriter, LgeCase
from cmr.phantom.spec import ExamSeriesTruth

__all__ = ["ExamStreams", "LgeCase", "WrittenExam", "write_exam"]


@dataclass(frozen=True)
class ExamStreams:
    """One generator per purpose (keyed by the caller), so that no draw shifts another."""

    cine: np.random.Generator
    cine_noise: np.random.Generator
    localizer: np.random.Generator
    lge_long_axis: np.random.Generator
    mapping: np.random.Generator
    psir_bias: np.random.Generator  # in the state the LGE magnitude's bias stream started in
    psir_noise: np.random.Generator  # likewise its noise stream: the PSIR shares its noise


@dataclass(frozen=True)
class WrittenExam:
    series: tuple[ExamSeriesTruth, ...]  # acquisition order, the LGE stack included
    mapping_rows: tuple[MappingLabels, ...]


def write_exam(
    out_dir: Path,
    case: LgeCase,
    tissue: ExamTissue,
    protocol: SiteExamProtocol,
    streams: ExamStreams,
    uid: Callable[..., str],
) -> WrittenExam:
    """Write every series of the exam but the LGE stack (already written); the truth of all of them."""
    scanner = case.site.scanner
    roles = [role for role in ROLES if role != "lge_sax_psir" or scanner.vendor in PSIR_VENDORS]
    w = ExamWriter(out_dir, case, uid, roles)
    rng = streams.cine
    heart_rate = float(rng.uniform(*HEART_RATE_BPM))
    rr = 60000.0 / heart_rate
    contraction = Contraction.of(case.heart, case.scar, float(rng.uniform(*EJECTION_FRACTION)))
    cardiac = Cardiac(
        heart_rate_bpm=heart_rate,
        rr_ms=rr,
        curve=contraction_curve(protocol.cine_phases, rr),
        contraction=contraction,
        snr=case.acquisition.snr_blood * float(rng.uniform(*CINE_SNR_OVER_LGE)),
    )
    table = bssfp_table(tissue, protocol.cine_flip_deg, protocol.bssfp_tr_ms)

    write_localizer(w, tissue, protocol, streams.localizer)
    long_axis = plan_long_axis(case, protocol, rng)
    write_cine_long_axis(w, long_axis, table, protocol, cardiac, rng)
    write_cine_stack(w, table, protocol, cardiac, streams.cine_noise)
    mapping = plan_mapping(w, protocol, streams.mapping)
    before = (("molli_native", "native"), ("t2prep", ""))
    mapping_rows = write_mapping(w, mapping, before, tissue, protocol, heart_rate, streams.mapping)
    w.truths["lge_sax"] = ExamSeriesTruth(
        kind=KINDS["lge_sax"].value,
        series_instance_uid=case.uids.series,
        series_number=case.identity.series_number,
        dicom_dir=case.dicom_dir.relative_to(out_dir).as_posix(),
        n_images=case.acquisition.n_slices,
        series_description=scanner.series_description,
    )
    if "lge_sax_psir" in roles:
        write_psir(w, streams.psir_bias, streams.psir_noise)
    write_lge_long_axis(w, long_axis, streams.lge_long_axis)
    mapping_rows += write_mapping(w, mapping, (("molli_post", "post"),), tissue, protocol, heart_rate, streams.mapping)
    ordered = tuple(w.truths[role] for role in roles if role in w.truths)
    return WrittenExam(series=ordered, mapping_rows=tuple(mapping_rows))

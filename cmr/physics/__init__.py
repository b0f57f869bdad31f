"""MR signal models for parametric mapping: tissue relaxation, MOLLI and T2-prepared readouts.

Plain numpy, no phantom anatomy: ``cmr.phantom.mapping`` puts these signals on
the LGE phantom's anatomy, ``cmr.fitting`` inverts them. Values, knobs and their
sources: docs/mapping.md.
"""

from cmr.physics.molli import (
    ApparentReadout,
    BssfpReadout,
    MolliScheme,
    molli_inversion_times,
    molli_readout_times,
    molli_signal,
    molli_signed_signal,
    parse_molli_scheme,
)
from cmr.physics.t2prep import DEFAULT_T2PREP_MS, t2prep_signal
from cmr.physics.tissue import (
    FIELD_STRENGTHS,
    MATERIALS,
    Examination,
    TissueRelaxation,
    blood_ecv,
    post_contrast_t1_ms,
    sample_examination,
)

__all__ = [
    "DEFAULT_T2PREP_MS",
    "FIELD_STRENGTHS",
    "MATERIALS",
    "ApparentReadout",
    "BssfpReadout",
    "Examination",
    "MolliScheme",
    "TissueRelaxation",
    "blood_ecv",
    "molli_inversion_times",
    "molli_readout_times",
    "molli_signal",
    "molli_signed_signal",
    "parse_molli_scheme",
    "post_contrast_t1_ms",
    "sample_examination",
    "t2prep_signal",
]

"""The cmrfl label convention for reference masks (NIfTI or DICOM SEG).

Every mask a site hands to ``cmrfl site ingest`` and every mask the phantom
writes uses these integer values, so that tasks can derive their own classes
(e.g. LGE: myocardium = healthy myocardium + scar) without guessing.
"""

from __future__ import annotations

from enum import IntEnum


class TissueLabel(IntEnum):
    BACKGROUND = 0
    LV_BLOOD_POOL = 1
    MYOCARDIUM = 2  # healthy (remote) left-ventricular myocardium
    SCAR = 3  # enhancing myocardium: infarct or fibrosis
    RV_BLOOD_POOL = 4


MYOCARDIAL_LABELS = (TissueLabel.MYOCARDIUM, TissueLabel.SCAR)

"""The LGE task's output classes and how they derive from the cmrfl tissue labels.

The network predicts three mutually exclusive classes. Myocardium in the clinical
sense (what "myocardium Dice" and scar burden refer to) is healthy myocardium and
scar together, so it is ``class >= MYOCARDIUM``.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from cmr.labels import TissueLabel


class LgeClass(IntEnum):
    BACKGROUND = 0  # everything that is not left-ventricular myocardium
    MYOCARDIUM = 1  # healthy (remote) myocardium
    SCAR = 2  # enhancing myocardium


NUM_CLASSES = len(LgeClass)

# tissue label → task class; labels not named here (blood pools) are background
TISSUE_TO_CLASS: dict[int, int] = {
    int(TissueLabel.BACKGROUND): int(LgeClass.BACKGROUND),
    int(TissueLabel.LV_BLOOD_POOL): int(LgeClass.BACKGROUND),
    int(TissueLabel.MYOCARDIUM): int(LgeClass.MYOCARDIUM),
    int(TissueLabel.SCAR): int(LgeClass.SCAR),
    int(TissueLabel.RV_BLOOD_POOL): int(LgeClass.BACKGROUND),
}

CLASS_TO_TISSUE: dict[int, int] = {
    int(LgeClass.BACKGROUND): int(TissueLabel.BACKGROUND),
    int(LgeClass.MYOCARDIUM): int(TissueLabel.MYOCARDIUM),
    int(LgeClass.SCAR): int(TissueLabel.SCAR),
}


def tissue_to_class(mask: np.ndarray) -> np.ndarray:
    """A cmrfl tissue-label mask → LGE task classes (uint8, same shape)."""
    lookup = np.zeros(256, dtype=np.uint8)
    for tissue, task_class in TISSUE_TO_CLASS.items():
        lookup[tissue] = task_class
    return lookup[np.asarray(mask, dtype=np.uint8)]


def class_to_tissue(classes: np.ndarray) -> np.ndarray:
    """LGE task classes → cmrfl tissue labels (0 background, 2 myocardium, 3 scar)."""
    lookup = np.zeros(NUM_CLASSES, dtype=np.uint8)
    for task_class, tissue in CLASS_TO_TISSUE.items():
        lookup[task_class] = tissue
    return lookup[np.asarray(classes, dtype=np.intp)]

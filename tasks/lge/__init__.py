"""LGE scar segmentation: healthy myocardium and scar in short-axis late gadolinium
enhancement stacks, with per-case Dice and scar burden. Plain PyTorch/MONAI."""

from tasks.lge.classes import LgeClass, class_to_tissue, tissue_to_class
from tasks.lge.data import SliceGeometry, clear_preprocessed_cache, preprocessed_cases
from tasks.lge.inference import predict_stack
from tasks.lge.metrics import case_metrics, dice_myocardium_and_scar, scar_burden_percent
from tasks.lge.network import build_unet
from tasks.lge.task import LgeScarSegmentation

__all__ = [
    "LgeClass",
    "LgeScarSegmentation",
    "SliceGeometry",
    "build_unet",
    "case_metrics",
    "class_to_tissue",
    "clear_preprocessed_cache",
    "dice_myocardium_and_scar",
    "predict_stack",
    "preprocessed_cases",
    "scar_burden_percent",
    "tissue_to_class",
]

"""Motion-robust T1 mapping: a network from a MOLLI series (frames and inversion times)
to a T1 map, trained with synthetic motion; per-study T1 and ECV errors. Plain PyTorch/MONAI."""

from tasks.mapping.inference import load_mapping_model, predict_t1_map, t1_map_ms
from tasks.mapping.metrics import METRIC_NAMES, ecv_fraction, study_metrics
from tasks.mapping.network import build_mapping_unet
from tasks.mapping.task import MotionRobustT1Mapping, clear_prepared_cache

__all__ = [
    "METRIC_NAMES",
    "MotionRobustT1Mapping",
    "build_mapping_unet",
    "clear_prepared_cache",
    "ecv_fraction",
    "load_mapping_model",
    "predict_t1_map",
    "study_metrics",
    "t1_map_ms",
]

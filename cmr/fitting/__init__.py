"""Classical parametric-map fitting, vectorised over pixels: T1 (MOLLI), T2 (T2-prep), ECV."""

from cmr.fitting.ecv import EcvResult, ecv_from_maps, ecv_map, myocardial_ecv
from cmr.fitting.t1 import T1Fit, fit_t1
from cmr.fitting.t2 import T2Fit, fit_t2

__all__ = ["EcvResult", "T1Fit", "T2Fit", "ecv_from_maps", "ecv_map", "fit_t1", "fit_t2", "myocardial_ecv"]

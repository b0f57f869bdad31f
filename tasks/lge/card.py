"""The LGE task's model-card text: its network and what it takes and gives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.base import ModelDescription

if TYPE_CHECKING:
    from tasks.lge.task import LgeScarSegmentation


def model_description(task: LgeScarSegmentation) -> ModelDescription:
    geometry = task.geometry
    return ModelDescription(
        network={
            "architecture": "MONAI UNet, 2D, instance norm, LeakyReLU (tasks/lge/network.py)",
            "channels": list(task.channels),
            "num_res_units": task.num_res_units,
            "in_channels": 1,
            "out_classes": ["background", "healthy myocardium", "scar"],
        },
        input={
            "modality": "short-axis late gadolinium enhancement (LGE) cardiac MR, magnitude",
            "series": "one DICOM series (a stack of parallel slices), any vendor",
            "preprocessing": "per-stack intensity scaled from its 1st-99th percentile to 0-1; "
            f"in-plane resampling to {geometry.pixel_spacing_mm} mm; centre crop or pad to "
            f"{geometry.roi_size[0]}x{geometry.roi_size[1]} pixels",
            "pixel_spacing_mm": geometry.pixel_spacing_mm,
            "roi_size": list(geometry.roi_size),
            "output": "label map on the series' own grid: 0 background, 2 healthy myocardium, 3 scar; "
            "scar burden = scar / (healthy myocardium + scar) volume, in %",
        },
    )

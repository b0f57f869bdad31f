"""``cmrfl predict`` for the LGE task: one short-axis stack → scar segmentation, scar burden, overlay.

The series is read exactly as ingest reads it (``cmr.dicom_series``), and the mask
goes back onto the series' grid and geometry, so the NIfTI overlays the DICOM in
any viewer. Nothing here leaves the site.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cmr.geometry import stack_to_nifti_array
from cmr.labels import TissueLabel
from cmr.series_folder import read_one_series
from tasks.base import Prediction

if TYPE_CHECKING:
    from tasks.lge.task import LgeScarSegmentation

SEGMENTATION_FILE = "scar-segmentation.nii.gz"
RESULT_FILE = "scar-burden.json"
OVERLAY_FILE = "overlay.png"


def segment_series(
    task: LgeScarSegmentation,
    model: torch.nn.Module,
    series_dir: Path,
    out_dir: Path,
    device: torch.device,
    provenance: Mapping[str, Any],
) -> Prediction:
    """Segment one stack with ``model``; write the mask (NIfTI), the burden (JSON) and an overlay (PNG)."""
    import nibabel as nib

    series = read_one_series(series_dir)
    image = series.load_image()
    geometry = series.geometry
    spacing = (*geometry.pixel_spacing, geometry.slice_spacing)
    mask = task.predict_stack(model.to(device), image, spacing, device)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    scar_voxels = int(np.count_nonzero(mask == TissueLabel.SCAR))
    myocardium_voxels = int(np.count_nonzero(mask == TissueLabel.MYOCARDIUM)) + scar_voxels
    burden = 100.0 * scar_voxels / myocardium_voxels if myocardium_voxels else None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segmentation = out_dir / SEGMENTATION_FILE
    nifti = nib.Nifti1Image(stack_to_nifti_array(mask.astype(np.uint8)), geometry.affine_ras())
    nifti.header.set_xyzt_units("mm")
    nib.save(nifti, segmentation)

    summary = {
        "scar_burden_percent": burden,
        "definition": "scar volume / myocardial volume (healthy myocardium + scar) x 100",
        "myocardium_ml": round(myocardium_voxels * voxel_ml, 3),
        "scar_ml": round(scar_voxels * voxel_ml, 3),
        "series": f"{series.label.split(' in ')[0]} in {Path(series_dir).name}",
        "slices": int(mask.shape[0]),
        "voxel_mm": [round(float(v), 4) for v in spacing],
        "labels": {"0": "background", "2": "healthy myocardium", "3": "scar"},
        "segmentation": SEGMENTATION_FILE,
        "model": dict(provenance),
        "written_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    result = out_dir / RESULT_FILE
    result.write_text(json.dumps(summary, indent=2) + "\n")
    overlay = write_overlay(
        image,
        mask,
        out_dir / OVERLAY_FILE,
        burden,
        f"{provenance.get('name', 'model')} v{provenance.get('version', '?')}",
        Path(series_dir).name,
    )
    burden_text = "no myocardium found" if burden is None else f"{burden:.1f} %"
    line = (
        f"Scar burden: {burden_text} of myocardium (myocardium {summary['myocardium_ml']:.1f} ml, "
        f"scar {summary['scar_ml']:.1f} ml)"
    )
    return Prediction(
        files={"segmentation": segmentation, "result": result, "overlay": overlay},
        summary=summary,
        lines=(line,),
    )


def write_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    path: Path,
    burden: float | None,
    model_label: str,
    series_label: str,
    max_slices: int = 8,
) -> Path:
    """Slices with the model's myocardium outlined (green) and scar filled (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    with_myocardium = [i for i in range(mask.shape[0]) if np.any(mask[i] >= TissueLabel.MYOCARDIUM)]
    candidates = with_myocardium or list(range(mask.shape[0]))
    chosen = [
        candidates[int(i)]
        for i in np.unique(np.linspace(0, len(candidates) - 1, min(max_slices, len(candidates))).round())
    ]
    columns = min(4, len(chosen))
    rows = -(-len(chosen) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows + 0.8), squeeze=False)
    low, high = np.percentile(image, [1, 99])
    scar_colour = ListedColormap([(0, 0, 0, 0), (1.0, 0.1, 0.1, 0.55)])
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, chosen):
        axis.imshow(image[index], cmap="gray", vmin=low, vmax=high)
        myocardium = mask[index] >= TissueLabel.MYOCARDIUM
        if myocardium.any():
            axis.contour(myocardium, levels=[0.5], colors=["lime"], linewidths=1.0)
        axis.imshow(
            (mask[index] == TissueLabel.SCAR).astype(np.uint8),
            cmap=scar_colour,
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        axis.set_title(f"slice {index + 1} of {mask.shape[0]}", fontsize=9)
    burden_text = "no myocardium found" if burden is None else f"scar burden {burden:.1f} % of myocardium"
    figure.suptitle(
        f"{burden_text}   (green: myocardium outline, red: scar)\n{model_label}, series folder {series_label}; "
        "model output for review, not a diagnosis",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

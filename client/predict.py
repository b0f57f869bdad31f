"""Run a pulled, verified model on one local DICOM series: segmentation, scar burden, overlay.

Nothing here leaves the site. The series is read exactly as ingest reads it
(``cmr.dicom_series``), the model is the task's own network with the signed weights
(verified again right before loading), and the mask goes back onto the series' grid
and geometry, so the NIfTI overlays the DICOM in any viewer.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.model_trust import WEIGHTS_FILE, VerifiedModel
from client.local_models import PULL_RECORD, load_verified_local_model
from cmr.dicom_series import DicomSeries, scan_dicom_folder
from cmr.geometry import stack_to_nifti_array
from cmr.labels import TissueLabel
from tasks import get_task
from tasks.base import pick_device

SEGMENTATION_FILE = "scar-segmentation.nii.gz"
RESULT_FILE = "scar-burden.json"
OVERLAY_FILE = "overlay.png"


class SeriesError(ValueError):
    """The DICOM folder does not hold exactly one usable series; the message says why."""


@dataclass(frozen=True)
class Prediction:
    scar_burden_percent: float | None
    myocardium_ml: float
    scar_ml: float
    segmentation: Path
    result: Path
    overlay: Path


def read_one_series(series_dir: Path) -> DicomSeries:
    series_dir = Path(series_dir)
    if not series_dir.is_dir():
        raise SeriesError(f"{series_dir}: DICOM series folder not found")
    scan = scan_dicom_folder(series_dir)
    if len(scan.series) == 1:
        return scan.series[0]
    if not scan.series:
        reasons = "; ".join(f"{r.path}: {r.reason}" for r in scan.rejections[:5]) or "no files"
        raise SeriesError(f"{series_dir}: no usable DICOM series ({scan.files_seen} files; {reasons})")
    labels = ", ".join(s.label for s in scan.series)
    raise SeriesError(f"{series_dir}: {len(scan.series)} series found ({labels}); point at the folder of one")


def load_model(verified: VerifiedModel) -> tuple[object, torch.nn.Module]:
    card = verified.card
    task = get_task(card["task"]["name"])
    network = card.get("network", {})
    if "channels" in network and hasattr(task, "channels"):
        task.channels = tuple(network["channels"])
        task.num_res_units = int(network.get("num_res_units", 0))
    checkpoint = torch.load(verified.folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model = task.build_model()
    model.load_state_dict(checkpoint["state_dict"])
    return task, model.eval()


def predict_series(
    site_dir: Path, model_name: str, series_dir: Path, out_dir: Path, version: str | None = None, device: str = "auto"
) -> Prediction:
    import nibabel as nib

    verified = load_verified_local_model(site_dir, model_name, version)
    task, model = load_model(verified)
    if not hasattr(task, "predict_stack"):
        raise ValueError(f"task {verified.card['task']['name']!r} does not segment stacks")
    series = read_one_series(series_dir)
    image = series.load_image()
    geometry = series.geometry
    spacing = (*geometry.pixel_spacing, geometry.slice_spacing)
    torch_device = pick_device(device)
    mask = task.predict_stack(model.to(torch_device), image, spacing, torch_device)

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

    pulled = verified.folder / PULL_RECORD
    model_version = json.loads(pulled.read_text())["version"] if pulled.is_file() else verified.folder.name
    result = out_dir / RESULT_FILE
    result.write_text(
        json.dumps(
            {
                "scar_burden_percent": burden,
                "definition": "scar volume / myocardial volume (healthy myocardium + scar) x 100",
                "myocardium_ml": round(myocardium_voxels * voxel_ml, 3),
                "scar_ml": round(scar_voxels * voxel_ml, 3),
                "series": f"{series.label.split(' in ')[0]} in {Path(series_dir).name}",
                "slices": int(mask.shape[0]),
                "voxel_mm": [round(float(v), 4) for v in spacing],
                "labels": {"0": "background", "2": "healthy myocardium", "3": "scar"},
                "segmentation": SEGMENTATION_FILE,
                "model": {"name": model_name, "version": model_version, "weights_sha256": verified.weights_sha256,
                          "signature": "verified against the site's pinned model-signing key"},
                "written_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
        + "\n"
    )
    overlay = write_overlay(
        image, mask, out_dir / OVERLAY_FILE, burden, f"{model_name} v{model_version}", Path(series_dir).name
    )
    return Prediction(burden, myocardium_voxels * voxel_ml, scar_voxels * voxel_ml, segmentation, result, overlay)


def write_overlay(
    image: np.ndarray, mask: np.ndarray, path: Path, burden: float | None, model_label: str, series_label: str,
    max_slices: int = 8,
) -> Path:
    """Slices with the model's myocardium outlined (green) and scar filled (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    with_myocardium = [i for i in range(mask.shape[0]) if np.any(mask[i] >= TissueLabel.MYOCARDIUM)]
    candidates = with_myocardium or list(range(mask.shape[0]))
    chosen = [candidates[int(i)] for i in np.unique(np.linspace(0, len(candidates) - 1, min(max_slices, len(candidates))).round())]
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
        axis.imshow((mask[index] == TissueLabel.SCAR).astype(np.uint8), cmap=scar_colour, vmin=0, vmax=1,
                    interpolation="nearest")
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

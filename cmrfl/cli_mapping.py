"""`cmrfl map t1|t2|ecv`: a parametric map from a folder of DICOM source images.

The map (T1 and T2 in ms, ECV as a fraction) is written as NIfTI on the source
series' grid; pixels whose fit failed are NaN. With ``--mask`` (a cmr.labels
mask of the slice, as the phantom and site ingest use), the myocardial mean, SD
and median are printed; ECV also takes its blood-pool reference from it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

map_app = typer.Typer(
    help="Parametric maps (T1, T2, ECV) from DICOM mapping series, by classical fit or network.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)


class Method(StrEnum):
    fit = "fit"
    network = "network"


SeriesDir = Annotated[Path, typer.Argument(help="Folder with one series' source images (any file order).")]
Out = Annotated[Path, typer.Option("--out", help="Map to write, .nii.gz.")]
MaskOption = Annotated[
    Path | None, typer.Option("--mask", help="cmr.labels mask of the slice (NIfTI): print myocardial statistics.")
]
QualityOut = Annotated[Path | None, typer.Option("--quality-out", help="Also write the fit's R² map (NIfTI).")]


def fail(message: str, code: int = 2) -> NoReturn:
    errors.print(f"[bold red]Error:[/] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def _read(series_dir: Path, kind: str):
    from cmr.mapping_series import MappingSeriesError, read_mapping_series

    try:
        return read_mapping_series(series_dir, kind)
    except MappingSeriesError as error:
        fail(str(error))


def _labels(mask: Path | None, series) -> np.ndarray | None:
    return None if mask is None else _load_labels(mask, series)


def _load_labels(mask: Path, series) -> np.ndarray:
    from cmr.masks import MaskMismatch
    from cmr.parametric_map import load_label_mask

    if not mask.is_file():
        fail(f"{mask}: mask file not found")
    try:
        return load_label_mask(mask, series.geometry, series.frames.shape[1:])
    except MaskMismatch as error:
        fail(f"{mask}: {error}")


def _write(out: Path, values: np.ndarray, series) -> None:
    from cmr.parametric_map import write_parametric_map

    try:
        write_parametric_map(out, values, series.geometry)
    except (ValueError, OSError) as error:
        fail(str(error))


def _report(name: str, unit: str, values: np.ndarray, labels: np.ndarray | None, out: Path) -> None:
    valid = np.isfinite(values)
    console.print(f"Wrote {name} map to [bold]{out}[/] ({int(valid.sum())} of {values.size} pixels fitted)")
    if labels is None:
        return
    from cmr.parametric_map import myocardium, region_statistics

    stats = region_statistics(values, myocardium(labels))
    if stats.n_pixels == 0:
        console.print("The mask holds no myocardium with a valid value; no statistics.")
        return
    scale = 100.0 if unit == "%" else 1.0
    table = Table(title=f"Myocardial {name}")
    for column in ("pixels", f"mean ({unit})", f"SD ({unit})", f"median ({unit})", "no fit"):
        table.add_column(column, justify="right")
    table.add_row(
        str(stats.n_pixels),
        f"{stats.mean * scale:.1f}",
        f"{stats.sd * scale:.1f}",
        f"{stats.median * scale:.1f}",
        str(stats.n_invalid),
    )
    console.print(table)


def _network_t1(model: Path | None, series) -> np.ndarray:
    if model is None:
        fail("--method network needs --model PATH (a trained T1-mapping network, e.g. a run's final_model.pt)")
    if not model.is_file():
        fail(f"{model}: model file not found")
    try:
        from tasks.mapping.inference import predict_t1_map
    except ImportError as error:
        fail(f"--method network is not available in this installation ({error}); use --method fit")
    try:
        return np.asarray(predict_t1_map(model, series.frames, series.times_ms), dtype=np.float32)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))


def _fit_t1(series, look_locker: bool):
    from cmr.fitting import fit_t1

    fit = fit_t1(series.frames, series.times_ms, look_locker=look_locker)
    return np.where(fit.valid, fit.t1_ms, np.nan), np.where(fit.valid, fit.r_squared, np.nan)


@map_app.command("t1")
def map_t1(
    series_dir: SeriesDir,
    out: Out,
    method: Annotated[Method, typer.Option(help="Classical three-parameter fit, or a trained network.")] = Method.fit,
    model: Annotated[Path | None, typer.Option(help="Network model file (with --method network).")] = None,
    mask: MaskOption = None,
    quality_out: QualityOut = None,
    look_locker: Annotated[bool, typer.Option(help="Apply the Look-Locker correction T1 = T1*(B/A − 1).")] = True,
) -> None:
    """T1 map (ms) from MOLLI source images with their InversionTime."""
    series = _read(series_dir, "t1")
    labels = _labels(mask, series)
    if method is Method.network:
        if quality_out is not None:
            fail("--quality-out is an R² map of the fit; it does not exist with --method network")
        values = _network_t1(model, series)
    else:
        if model is not None:
            fail("--model is for --method network")
        values, r_squared = _fit_t1(series, look_locker)
        if quality_out is not None:
            _write(quality_out, r_squared, series)
    _write(out, values, series)
    _report("T1", "ms", values, labels, out)


@map_app.command("t2")
def map_t2(
    series_dir: SeriesDir,
    out: Out,
    method: Annotated[Method, typer.Option(help="Only fit: the network maps T1.")] = Method.fit,
    mask: MaskOption = None,
    quality_out: QualityOut = None,
) -> None:
    """T2 map (ms) from T2-prepared source images (prep duration in ImageComments or EchoTime)."""
    if method is Method.network:
        fail("--method network maps T1 from MOLLI only; T2 maps use --method fit")
    from cmr.fitting import fit_t2

    series = _read(series_dir, "t2")
    labels = _labels(mask, series)
    fit = fit_t2(series.frames, series.times_ms)
    values = np.where(fit.valid, fit.t2_ms, np.nan)
    if quality_out is not None:
        _write(quality_out, np.where(fit.valid, fit.r_squared, np.nan), series)
    _write(out, values, series)
    _report("T2", "ms", values, labels, out)


@map_app.command("ecv")
def map_ecv(
    native_dir: Annotated[Path, typer.Argument(help="Native (pre-contrast) MOLLI series folder.")],
    post_dir: Annotated[Path, typer.Argument(help="Post-contrast MOLLI series folder (same slice).")],
    out: Out,
    haematocrit: Annotated[float, typer.Option(help="Haematocrit as a fraction (0.42) or percent (42).")],
    mask: Annotated[
        Path,
        typer.Option(
            "--mask",
            help="cmr.labels mask of the slice: LV blood pool (1) for the reference, myocardium (2, 3) for statistics.",
        ),
    ],
    method: Annotated[Method, typer.Option(help="Only fit.")] = Method.fit,
) -> None:
    """ECV map (fraction) from native and post-contrast MOLLI, haematocrit and the blood pool."""
    if method is Method.network:
        fail("--method network is not used for ECV (it maps native T1 only); use --method fit")
    if 1.0 < haematocrit < 100.0:
        haematocrit = haematocrit / 100.0
    if not 0.0 < haematocrit < 1.0:
        fail(f"--haematocrit {haematocrit}: expected a fraction (e.g. 0.42) or percent (e.g. 42)")
    from cmr.fitting import ecv_from_maps
    from cmr.geometry import affines_match
    from cmr.parametric_map import blood_pool, myocardium

    native, post = _read(native_dir, "t1"), _read(post_dir, "t1")
    if native.frames.shape[1:] != post.frames.shape[1:] or not affines_match(native.affine_ras(), post.affine_ras()):
        fail(f"{post_dir}: the post-contrast series is not on the native series' slice and grid ({native_dir})")
    labels = _load_labels(mask, native)
    if not blood_pool(labels).any():
        fail(f"{mask}: holds no LV blood pool (label 1); ECV needs it as the blood reference")
    native_t1, _ = _fit_t1(native, True)
    post_t1, _ = _fit_t1(post, True)
    try:
        result = ecv_from_maps(
            native_t1,
            post_t1,
            blood_pool(labels),
            haematocrit,
            myocardium(labels) if myocardium(labels).any() else None,
        )
    except ValueError as error:
        fail(str(error))
    _write(out, result.ecv_map, native)
    console.print(
        f"Blood T1 {result.blood_t1_native_ms:.0f} ms native, {result.blood_t1_post_ms:.0f} ms post-contrast;"
        f" haematocrit {haematocrit:.2f}"
    )
    if result.myocardial_ecv is not None:
        console.print(f"Myocardial ECV from ROI mean T1s: {100 * result.myocardial_ecv:.1f} %")
    _report("ECV", "%", result.ecv_map, labels, out)

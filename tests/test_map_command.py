"""`cmrfl map t1|t2|ecv` on DICOM series written by the mapping phantom, read back with nibabel."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from cmr.geometry import nifti_array_to_stack
from cmr.phantom.mapping import simulate_mapping_case
from cmr.phantom.mapping_dicom import write_mapping_mask, write_mapping_series
from cmrfl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("mapping")
    case = simulate_mapping_case(21, noise=0.005, shape=(80, 80), scar_type="none", haematocrit=0.42)
    for kind in ("molli_native", "molli_post", "t2prep"):
        write_mapping_series(case, root / kind, kind)
    write_mapping_mask(case, root / "mask.nii.gz")
    return case, root


def _map(path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.Nifti1Image.from_filename(path)
    return nifti_array_to_stack(np.asarray(image.dataobj))[0], image.affine


def _inner(case) -> np.ndarray:
    return ndimage.binary_erosion(case.myocardium_mask & ~case.scar_mask)


def test_t1_map_is_written_in_ms_on_the_series_grid_with_myocardial_statistics(written, tmp_path):
    case, root = written
    out = tmp_path / "t1.nii.gz"
    result = runner.invoke(
        app, ["map", "t1", str(root / "molli_native"), "--out", str(out), "--mask", str(root / "mask.nii.gz")]
    )
    assert result.exit_code == 0, result.output
    values, affine = _map(out)
    assert values.shape == case.shape
    np.testing.assert_allclose(affine, case.geometry.affine_ras(), atol=1e-3)
    truth = case.t1_native_ms[_inner(case)].mean()
    assert np.nanmedian(values[_inner(case)]) == pytest.approx(truth, rel=0.12)
    assert "Myocardial T1" in result.output
    row = re.search(r"│\s*(\d+)\s*│\s*([\d.]+)\s*│\s*([\d.]+)\s*│\s*([\d.]+)", result.output)
    assert row, result.output
    myocardial = values[case.myocardium_mask]
    assert float(row.group(2)) == pytest.approx(np.nanmean(myocardial), abs=0.06)
    assert float(row.group(4)) == pytest.approx(np.nanmedian(myocardial), abs=0.06)


def test_t1_without_look_locker_correction_reads_lower(written, tmp_path):
    case, root = written
    corrected, uncorrected = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    assert runner.invoke(app, ["map", "t1", str(root / "molli_native"), "--out", str(corrected)]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "map",
            "t1",
            str(root / "molli_native"),
            "--out",
            str(uncorrected),
            "--no-look-locker",
            "--quality-out",
            str(tmp_path / "r2.nii.gz"),
        ],
    )
    assert result.exit_code == 0, result.output
    inner = _inner(case)
    assert np.nanmedian(_map(uncorrected)[0][inner]) < 0.85 * np.nanmedian(_map(corrected)[0][inner])
    assert np.nanmedian(_map(tmp_path / "r2.nii.gz")[0][inner]) > 0.99


def test_t2_map(written, tmp_path):
    case, root = written
    out = tmp_path / "t2.nii.gz"
    result = runner.invoke(
        app, ["map", "t2", str(root / "t2prep"), "--out", str(out), "--mask", str(root / "mask.nii.gz")]
    )
    assert result.exit_code == 0, result.output
    values, _ = _map(out)
    assert np.nanmedian(values[_inner(case)]) == pytest.approx(case.t2_ms[_inner(case)].mean(), rel=0.10)
    assert "Myocardial T2" in result.output


def test_ecv_map_from_native_and_post_series_and_haematocrit(written, tmp_path):
    case, root = written
    out = tmp_path / "ecv.nii.gz"
    result = runner.invoke(
        app,
        [
            "map",
            "ecv",
            str(root / "molli_native"),
            str(root / "molli_post"),
            "--out",
            str(out),
            "--haematocrit",
            "42",
            "--mask",
            str(root / "mask.nii.gz"),
        ],
    )
    assert result.exit_code == 0, result.output
    values, affine = _map(out)
    np.testing.assert_allclose(affine, case.geometry.affine_ras(), atol=1e-3)
    assert np.nanmedian(values[_inner(case)]) == pytest.approx(case.ecv[_inner(case)].mean(), abs=0.04)
    assert "Myocardial ECV from ROI mean T1s" in result.output


def test_ecv_refuses_series_of_different_slices(written, tmp_path):
    _case, root = written
    other = simulate_mapping_case(22, shape=(80, 80))
    write_mapping_series(other, tmp_path / "post", "molli_post")
    result = runner.invoke(
        app,
        [
            "map",
            "ecv",
            str(root / "molli_native"),
            str(tmp_path / "post"),
            "--out",
            str(tmp_path / "e.nii.gz"),
            "--haematocrit",
            "0.42",
            "--mask",
            str(root / "mask.nii.gz"),
        ],
    )
    assert result.exit_code == 2
    assert "not on the native series' slice" in result.output


def test_a_series_with_a_missing_inversion_time_is_refused_by_name(written, tmp_path):
    case, _ = written
    paths = write_mapping_series(case, tmp_path / "series", "molli_native")
    dataset = pydicom.dcmread(paths[0])
    del dataset.InversionTime
    dataset.save_as(paths[0])
    result = runner.invoke(app, ["map", "t1", str(tmp_path / "series"), "--out", str(tmp_path / "t1.nii.gz")])
    assert result.exit_code == 2
    assert "IM_0001.dcm: no InversionTime" in result.output
    assert not (tmp_path / "t1.nii.gz").exists()


def test_a_mask_of_another_grid_is_refused(written, tmp_path):
    _case, root = written
    other = simulate_mapping_case(23, shape=(64, 64))
    write_mapping_mask(other, tmp_path / "other.nii.gz")
    result = runner.invoke(
        app,
        [
            "map",
            "t1",
            str(root / "molli_native"),
            "--out",
            str(tmp_path / "t1.nii.gz"),
            "--mask",
            str(tmp_path / "other.nii.gz"),
        ],
    )
    assert result.exit_code == 2
    assert "other.nii.gz" in result.output and "does not match" in result.output


def test_network_method_needs_a_model_and_maps_only_t1(written, tmp_path):
    _, root = written
    result = runner.invoke(
        app, ["map", "t1", str(root / "molli_native"), "--out", str(tmp_path / "x.nii.gz"), "--method", "network"]
    )
    assert result.exit_code == 2 and "needs --model" in result.output
    result = runner.invoke(
        app, ["map", "t2", str(root / "t2prep"), "--out", str(tmp_path / "x.nii.gz"), "--method", "network"]
    )
    assert result.exit_code == 2 and "T1 from MOLLI only" in result.output
    result = runner.invoke(
        app,
        [
            "map",
            "t1",
            str(root / "molli_native"),
            "--out",
            str(tmp_path / "x.nii.gz"),
            "--method",
            "network",
            "--model",
            str(tmp_path / "missing.pt"),
        ],
    )
    assert result.exit_code == 2 and "missing.pt" in result.output


def test_an_output_that_is_not_nifti_is_refused_before_writing(written, tmp_path):
    _, root = written
    result = runner.invoke(app, ["map", "t2", str(root / "t2prep"), "--out", str(tmp_path / "t2.png")])
    assert result.exit_code == 2 and "name it .nii.gz" in result.output
    assert not (tmp_path / "t2.png").exists()


def test_network_method_writes_the_saved_networks_t1_map_on_the_series_grid(written, tmp_path):
    import torch

    from tasks.mapping.inference import predict_t1_map
    from tasks.mapping.network import build_mapping_unet

    case, root = written
    torch.manual_seed(0)
    model_path = tmp_path / "final_model.pt"
    network = {"max_frames": 11, "channels": [8, 16]}
    torch.save(
        {"task": "mapping", "state_dict": build_mapping_unet(11, (8, 16)).state_dict(), "network": network}, model_path
    )
    out = tmp_path / "t1_network.nii.gz"
    result = runner.invoke(
        app,
        [
            "map",
            "t1",
            str(root / "molli_native"),
            "--out",
            str(out),
            "--method",
            "network",
            "--model",
            str(model_path),
            "--mask",
            str(root / "mask.nii.gz"),
        ],
    )
    assert result.exit_code == 0, result.output
    values, affine = _map(out)
    np.testing.assert_allclose(affine, case.geometry.affine_ras(), atol=1e-3)
    order = np.argsort(case.inversion_times_native_ms)
    from cmr.mapping_series import read_mapping_series

    series = read_mapping_series(root / "molli_native", "t1")
    expected = predict_t1_map(model_path, series.frames, series.times_ms)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-3)
    assert series.times_ms.tolist() == case.inversion_times_native_ms[order].tolist()
    assert "Myocardial T1" in result.output


def test_a_model_of_another_task_is_refused_by_name(written, tmp_path):
    import torch

    _, root = written
    model_path = tmp_path / "lge.pt"
    torch.save({"task": "lge", "state_dict": {}}, model_path)
    result = runner.invoke(
        app,
        [
            "map",
            "t1",
            str(root / "molli_native"),
            "--out",
            str(tmp_path / "x.nii.gz"),
            "--method",
            "network",
            "--model",
            str(model_path),
        ],
    )
    assert result.exit_code == 2 and "lge.pt" in result.output and "not of the T1-mapping task" in result.output

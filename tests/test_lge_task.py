"""The LGE scar segmentation task: network, data pipeline, metrics, training, evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator

from cmr.attributes import SubgroupAttributes
from cmr.labels import TissueLabel
from cmr.store import CaseEntry, CaseStore
from tasks import get_task
from tasks.base import MIN_CASES_IN_A_SUM, TrainSettings, validation_case_ids
from tasks.lge import (
    LgeClass,
    LgeScarSegmentation,
    SliceGeometry,
    case_metrics,
    predict_stack,
    preprocessed_cases,
    tissue_to_class,
)
from tasks.lge.data import case_dict, preprocessing
from tasks.lge.inference import probabilities_on_original_grid

CPU = torch.device("cpu")
VENDORS = ("Siemens", "GE", "Philips")


# --------------------------------------------------------------------------------------
# A small synthetic LGE store: ring-shaped left ventricles with bright blood, nulled
# myocardium and a bright scar sector in most cases, at varying pixel spacing, image
# size, position and vendor intensity scale.
# --------------------------------------------------------------------------------------
def ring_case(rng: np.random.Generator, n_slices: int = 6) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    rows, columns = (int(v) for v in rng.integers(100, 141, size=2))
    spacing = float(rng.uniform(1.4, 2.0))
    row_mm = np.arange(rows)[:, None] * spacing
    column_mm = np.arange(columns)[None, :] * spacing
    centre = (rows * spacing / 2 + rng.uniform(-10, 10), columns * spacing / 2 + rng.uniform(-10, 10))
    radius = np.hypot(row_mm - centre[0], column_mm - centre[1])
    angle = np.arctan2(row_mm - centre[0], column_mm - centre[1])
    vendor_scale = float(rng.uniform(200, 3000))
    has_scar = rng.random() < 0.6
    scar_start = rng.uniform(-np.pi, np.pi)
    image = np.zeros((n_slices, rows, columns), np.float32)
    mask = np.zeros((n_slices, rows, columns), np.uint8)
    for index in range(n_slices):
        endocardium = rng.uniform(14, 24) * (1 - 0.04 * index)
        wall = rng.uniform(6, 10)
        blood = radius < endocardium
        myocardium = (radius >= endocardium) & (radius < endocardium + wall)
        sector = np.mod(angle - scar_start, 2 * np.pi) < 1.2
        scar = myocardium & has_scar & sector & (radius < endocardium + 0.7 * wall)
        body = radius < endocardium + wall + 40
        mask[index][blood] = TissueLabel.LV_BLOOD_POOL
        mask[index][myocardium] = TissueLabel.MYOCARDIUM
        mask[index][scar] = TissueLabel.SCAR
        signal = np.clip(0.35 * body + 0.65 * blood - 0.3 * myocardium + 0.8 * scar, 0, None)
        image[index] = vendor_scale * (signal + rng.normal(0, 0.08, (rows, columns)))
    return image, mask, (spacing, spacing, 8.0)


def ring_store(site_dir: Path, n_cases: int, seed: int) -> CaseStore:
    rng = np.random.default_rng(seed)
    store = CaseStore(site_dir)
    for index in range(n_cases):
        image, mask, spacing = ring_case(rng)
        attributes = SubgroupAttributes(sex=("female", "male")[index % 2], vendor=VENDORS[index % 3])
        store.put(f"ring{seed:02d}{index:03d}", image, mask, spacing, attributes)
    return store


@pytest.fixture(scope="module")
def ring_site(tmp_path_factory: pytest.TempPathFactory) -> CaseStore:
    return ring_store(tmp_path_factory.mktemp("ring-site"), n_cases=16, seed=1)


@pytest.fixture(scope="module")
def trained_once(ring_site: CaseStore) -> torch.nn.Module:
    """A model after a few steps, so that its prediction is not trivial."""
    model = fresh_model()
    LgeScarSegmentation().train(model, ring_site, TrainSettings(max_steps=4, seed=0), CPU)
    return model


def fresh_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return LgeScarSegmentation().build_model()


# --------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------
def test_task_is_registered_as_lge():
    assert isinstance(get_task("lge"), LgeScarSegmentation)


def test_network_is_valid_for_opacus_as_built():
    model = LgeScarSegmentation().build_model()
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_computes_a_per_sample_gradient_for_every_parameter():
    model = GradSampleModule(LgeScarSegmentation().build_model())
    model(torch.rand(3, 1, 128, 128)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad_sample is not None, name
        assert parameter.grad_sample.shape == (3, *parameter.shape), name


def test_network_maps_a_slice_batch_to_one_logit_map_per_class():
    logits = LgeScarSegmentation().build_model()(torch.rand(2, 1, 128, 128))
    assert logits.shape == (2, len(LgeClass), 128, 128)


# --------------------------------------------------------------------------------------
# Data pipeline
# --------------------------------------------------------------------------------------
def test_tissue_labels_map_to_background_myocardium_and_scar():
    tissue = np.array([0, 1, 2, 3, 4], dtype=np.uint8)
    assert tissue_to_class(tissue).tolist() == [0, 0, LgeClass.MYOCARDIUM, LgeClass.SCAR, 0]


def test_preprocessing_maps_labels_inside_the_monai_pipeline():
    mask = np.zeros((2, 128, 128), np.uint8)
    mask[:, 10:20, 10:20] = TissueLabel.LV_BLOOD_POOL
    mask[:, 30:40, 30:40] = TissueLabel.MYOCARDIUM
    mask[:, 50:60, 50:60] = TissueLabel.SCAR
    mask[:, 70:80, 70:80] = TissueLabel.RV_BLOOD_POOL
    image = np.random.default_rng(0).random((2, 128, 128)).astype(np.float32) * 1000
    # already on the network grid (1.6 mm, 128 × 128): only the label mapping acts on the mask
    out = preprocessing(SliceGeometry())(case_dict(image, (1.6, 1.6), mask))
    assert torch.equal(out["label"].as_tensor().to(torch.uint8), torch.as_tensor(tissue_to_class(mask)))


def test_preprocessing_brings_any_stack_to_the_network_grid_and_unit_intensity():
    rng = np.random.default_rng(0)
    for shape, spacing, scale in [((3, 200, 150), (1.25, 1.25), 4000.0), ((3, 90, 100), (1.9, 1.9), 80.0)]:
        out = preprocessing(SliceGeometry())(case_dict(rng.random(shape).astype(np.float32) * scale, spacing))
        assert out["image"].shape == (3, 128, 128)
        assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0


def test_unit_intensity_gives_monais_percentile_scaling_slice_by_slice():
    from monai.transforms import ScaleIntensityRangePercentiles

    from tasks.lge.data import unit_intensity

    rng = np.random.default_rng(3)
    stack = (rng.gamma(2.0, 300.0, (4, 60, 70)) * rng.uniform(0.1, 10, (4, 1, 1))).astype(np.float32)
    stack[2] = 7.0  # a constant slice: 0 in both, no division by zero
    monai = ScaleIntensityRangePercentiles(1.0, 99.0, 0.0, 1.0, clip=True, channel_wise=True)
    with pytest.warns(Warning, match="Divide by zero"):  # MONAI's own warning for the constant slice
        expected = np.asarray(monai(torch.as_tensor(stack)))
    ours = unit_intensity(stack)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert ours.dtype == np.float32 and not ours[2].any()


def test_preprocessed_slices_carry_their_case_id_and_attributes(ring_site: CaseStore):
    entries = {entry.case_id: entry for entry in ring_site.entries()}
    cases = preprocessed_cases(ring_site, SliceGeometry())
    assert {case.entry.case_id for case in cases} == set(entries)
    for case in cases:
        samples = case.slice_samples()
        assert len(samples) == entries[case.entry.case_id].n_slices
        for sample in samples:
            assert sample["case_id"] == case.entry.case_id
            assert sample["attributes"] == entries[case.entry.case_id].attributes.as_dict()
            assert sample["image"].shape == sample["label"].shape == (1, 128, 128)
            assert set(sample["label"].unique().tolist()) <= {0, 1, 2}


def test_preprocessed_cases_are_cached_until_the_store_changes(tmp_path: Path):
    store = ring_store(tmp_path, n_cases=2, seed=5)
    first = preprocessed_cases(store, SliceGeometry())
    assert preprocessed_cases(store, SliceGeometry()) is first
    image, mask, spacing = ring_case(np.random.default_rng(9))
    store.put("added-later", image, mask, spacing, SubgroupAttributes())
    assert len(preprocessed_cases(store, SliceGeometry())) == 3


def test_cases_without_mask_and_unlabelled_slices_are_not_used(tmp_path: Path):
    store = ring_store(tmp_path, n_cases=1, seed=6)
    image, mask, spacing = ring_case(np.random.default_rng(2))
    store.put("no-mask", image, None, spacing, SubgroupAttributes())
    mask[0] = 0  # first slice left unannotated
    store.put("partly-labelled", image, mask, spacing, SubgroupAttributes())
    cases = {case.entry.case_id: case for case in preprocessed_cases(store, SliceGeometry())}
    assert "no-mask" not in cases
    assert [s["slice_index"] for s in cases["partly-labelled"].slice_samples()] == list(range(1, image.shape[0]))


def test_cases_split_deterministically_into_training_and_validation(ring_site: CaseStore):
    task = LgeScarSegmentation()
    training, validation = task.split(ring_site)
    assert training and validation
    expected = validation_case_ids(ring_site.entries(), task.validation_fraction)
    assert {c.entry.case_id for c in validation} == expected
    assert not expected & {c.entry.case_id for c in training}
    assert len(training) + len(validation) == len(ring_site)


def test_a_small_site_validates_at_least_two_cases_whatever_its_salted_case_ids():
    # Ingest salts case ids per site, so the hash split differs between installations; a
    # site validating one case would withhold all its figures (a sum over one case).
    for salt in range(200):
        entries = [
            CaseEntry(f"{salt}-case-{i}", 12, 128, 128, 1.5, 1.5, 8.0, True, SubgroupAttributes()) for i in range(8)
        ]
        chosen = validation_case_ids(entries, LgeScarSegmentation().validation_fraction)
        assert len(chosen) >= MIN_CASES_IN_A_SUM and len(chosen) < len(entries)


# --------------------------------------------------------------------------------------
# Prediction on the original grid
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "spacing"), [((4, 180, 150), (1.25, 1.3)), ((3, 96, 110), (1.9, 1.9))])
def test_predict_stack_returns_a_tissue_label_mask_on_the_original_grid(trained_once, shape, spacing):
    model = trained_once
    image = np.random.default_rng(0).random(shape).astype(np.float32) * 500
    prediction = predict_stack(model, image, spacing, CPU)
    assert prediction.shape == shape
    assert prediction.dtype == np.uint8
    assert set(np.unique(prediction).tolist()) <= {0, int(TissueLabel.MYOCARDIUM), int(TissueLabel.SCAR)}


@pytest.mark.parametrize(("shape", "spacing"), [((4, 180, 150), (1.25, 1.3)), ((3, 96, 110), (1.9, 1.9))])
def test_undoing_the_crop_and_resampling_restores_the_reference(shape, spacing):
    """A perfect prediction on the network grid maps back onto the original mask."""
    mask = np.zeros(shape, np.uint8)
    rows, columns = np.ogrid[: shape[1], : shape[2]]
    radius_mm = np.hypot((rows - shape[1] / 2) * spacing[0], (columns - shape[2] / 2) * spacing[1])
    mask[:, (radius_mm > 20) & (radius_mm < 30)] = TissueLabel.MYOCARDIUM
    mask[:, (radius_mm > 20) & (radius_mm < 30) & (columns > shape[2] / 2)] = TissueLabel.SCAR
    geometry = SliceGeometry()
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    data = preprocessing(geometry)(case_dict(image, spacing, mask))
    one_hot = torch.nn.functional.one_hot(data["label"].as_tensor().long(), len(LgeClass)).permute(0, 3, 1, 2)
    restored = probabilities_on_original_grid(one_hot.float(), data["image"], geometry).argmax(dim=1).numpy()
    reference = tissue_to_class(mask)
    metrics, _ = case_metrics(reference, restored.astype(np.uint8), voxel_volume_mm3=1.0)
    assert restored.shape == shape
    assert metrics["dice_myocardium"] > 0.97
    assert metrics["dice_scar"] > 0.95


# --------------------------------------------------------------------------------------
# Per-case metrics
# --------------------------------------------------------------------------------------
def known_masks() -> tuple[np.ndarray, np.ndarray]:
    """Reference with 80 myocardium voxels of which 20 scar, and a disjoint wrong prediction."""
    reference = np.zeros((2, 20, 20), np.uint8)
    reference[:, 2:6, 2:12] = LgeClass.MYOCARDIUM
    reference[:, 2:6, 2:7] = LgeClass.SCAR
    wrong = np.zeros_like(reference)
    wrong[:, 12:16, 8:18] = LgeClass.MYOCARDIUM
    wrong[:, 12:16, 8:13] = LgeClass.SCAR
    return reference, wrong


def test_dice_is_one_for_a_perfect_prediction():
    reference, _ = known_masks()
    metrics, calls = case_metrics(reference, reference.copy(), voxel_volume_mm3=2.0)
    assert metrics["dice_myocardium"] == pytest.approx(1.0)
    assert metrics["dice_scar"] == pytest.approx(1.0)
    assert metrics["scar_burden_percent_reference"] == pytest.approx(50.0)
    assert metrics["scar_burden_abs_error"] == pytest.approx(0.0)
    assert calls == {"scar_present_reference": True, "scar_present_predicted": True}


def test_dice_is_zero_for_a_wrong_prediction():
    reference, wrong = known_masks()
    metrics, _ = case_metrics(reference, wrong, voxel_volume_mm3=2.0)
    assert metrics["dice_myocardium"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["dice_scar"] == pytest.approx(0.0, abs=1e-6)


def test_dice_of_a_half_overlap_matches_its_definition():
    reference = np.zeros((1, 10, 10), np.uint8)
    reference[0, :, :4] = LgeClass.MYOCARDIUM  # 40 voxels
    predicted = np.zeros_like(reference)
    predicted[0, :, 2:6] = LgeClass.MYOCARDIUM  # 40 voxels, 20 shared
    metrics, _ = case_metrics(reference, predicted, voxel_volume_mm3=1.0)
    assert metrics["dice_myocardium"] == pytest.approx(2 * 20 / (40 + 40))


def test_scar_dice_is_undefined_when_the_reference_has_no_scar():
    reference, _ = known_masks()
    reference[reference == LgeClass.SCAR] = LgeClass.MYOCARDIUM
    predicted = reference.copy()
    predicted[0, 2:6, 2:4] = LgeClass.SCAR  # 8 of 80 voxels: a 10 % false-positive burden
    metrics, calls = case_metrics(reference, predicted, voxel_volume_mm3=1.0)
    assert math.isnan(metrics["dice_scar"])
    assert metrics["dice_myocardium"] == pytest.approx(1.0)
    assert metrics["scar_burden_percent_predicted"] == pytest.approx(10.0)
    assert metrics["scar_burden_abs_error"] == pytest.approx(10.0)
    assert calls == {"scar_present_reference": False, "scar_present_predicted": True}


def test_a_few_stray_scar_voxels_do_not_make_a_scar_call():
    reference, _ = known_masks()
    reference[reference == LgeClass.SCAR] = LgeClass.MYOCARDIUM
    predicted = reference.copy()
    predicted[0, 2, 2] = LgeClass.SCAR  # 1 of 80 voxels: 1.25 %, under a 2 % threshold
    _, calls = case_metrics(reference, predicted, voxel_volume_mm3=1.0, scar_presence_threshold_percent=2.0)
    assert calls["scar_present_predicted"] is False


def test_evaluation_emits_one_record_per_validation_case_with_its_attributes(ring_site: CaseStore, trained_once):
    model = trained_once
    task = LgeScarSegmentation()
    evaluation = task.evaluate(model, ring_site, CPU, site_id="site-07")
    entries = {entry.case_id: entry for entry in ring_site.entries()}
    validation_ids = validation_case_ids(entries.values(), task.validation_fraction)
    assert {record.case_id for record in evaluation.records} == validation_ids
    assert evaluation.num_examples == len(validation_ids)
    for record in evaluation.records:
        assert record.site_id == "site-07"
        assert record.attributes == entries[record.case_id].attributes
        assert set(record.metrics) == {
            "dice_myocardium",
            "dice_scar",
            "scar_burden_percent_reference",
            "scar_burden_percent_predicted",
            "scar_burden_abs_error",
        }
        assert set(record.calls) == {"scar_present_reference", "scar_present_predicted"}
    assert set(evaluation.summary) == {"dice_myocardium", "dice_scar", "scar_burden_abs_error", "loss"}
    assert evaluation.summary["dice_myocardium"] == pytest.approx(
        np.nanmean([r.metrics["dice_myocardium"] for r in evaluation.records])
    )


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------
LEARNING_STEPS = 40
LEARNED_MYOCARDIUM_DICE = 0.6


def test_the_task_learns_to_segment_myocardium(ring_site: CaseStore):
    task = LgeScarSegmentation()
    model = fresh_model()
    before = task.evaluate(model, ring_site, CPU, "site-01").summary["dice_myocardium"]
    outcome = task.train(model, ring_site, TrainSettings(local_epochs=100, max_steps=LEARNING_STEPS, seed=0), CPU)
    after = task.evaluate(model, ring_site, CPU, "site-01").summary["dice_myocardium"]
    assert outcome.steps == LEARNING_STEPS
    assert after > LEARNED_MYOCARDIUM_DICE > before


def test_training_reports_what_it_did(ring_site: CaseStore):
    task = LgeScarSegmentation()
    training_cases, _ = task.split(ring_site)
    outcome = task.train(fresh_model(), ring_site, TrainSettings(batch_size=4, max_steps=3, seed=0), CPU)
    assert outcome.num_examples == sum(len(c.labelled_slices) for c in training_cases)
    assert outcome.steps == 3
    assert outcome.num_examples_seen == 12
    assert math.isfinite(outcome.mean_loss) and outcome.seconds > 0


def test_training_is_deterministic_given_the_seed(ring_site: CaseStore):
    task = LgeScarSegmentation()
    weights = []
    for seed in (3, 3, 4):
        model = fresh_model()
        task.train(model, ring_site, TrainSettings(max_steps=3, seed=seed), CPU)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_fedprox_term_keeps_the_update_closer_to_the_global_model(ring_site: CaseStore):
    task = LgeScarSegmentation()
    start = fresh_model().state_dict()

    def distance_moved(mu: float) -> float:
        model = fresh_model()
        task.train(model, ring_site, TrainSettings(max_steps=6, proximal_mu=mu, learning_rate=1e-2, seed=0), CPU)
        return math.sqrt(sum(float(((model.state_dict()[k] - start[k]).float() ** 2).sum()) for k in start))

    plain, proximal = distance_moved(0.0), distance_moved(50.0)
    assert proximal < plain

"""Patient-level DP-SGD at the sites: accounting, the ledger, budgets, training, the federation."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants.utils import create_accountant
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from client.site import load_site
from cmr.ingest import HEADERS_FOLDER
from cmr.store import CaseStore
from cmrfl.cli import app as cli
from privacy.accounting import MechanismSteps, epsilon_spent
from privacy.budget import (
    PRIVACY_METRIC_KEYS,
    PrivacySpend,
    SiteBudget,
    SiteBudgetError,
    SitePrivacy,
    privacy_metrics,
)
from privacy.dp_sgd import DpSgdRequest, make_private, plan_round
from privacy.ledger import DECLINED, TRAINED, PrivacyLedger
from tasks.base import TrainSettings
from tasks.lge import LgeScarSegmentation
from tasks.lge.loss import per_slice_segmentation_loss, segmentation_loss
from test_lge_task import ring_store

pytestmark = pytest.mark.filterwarnings(
    "ignore:Full backward hook is firing", "ignore:Secure RNG turned off", "ignore:Optimal order is the largest alpha"
)

CPU = torch.device("cpu")
DELTA = 1e-5
ROUNDS = [MechanismSteps(1.1, 0.25, 8), MechanismSteps(0.9, 0.5, 3), MechanismSteps(1.1, 0.25, 8)]


def noise_plan(protected_units: int, batch_size: int = 3, **request):
    """A plan with an explicit noise multiplier (the tests' usual request)."""
    request = {"noise_multiplier": 1.0, "target_epsilon": 0.0, **request}
    return plan_round(DpSgdRequest(**request), protected_units, batch_size, local_epochs=1)


@pytest.fixture(scope="module")
def ring_site(tmp_path_factory: pytest.TempPathFactory) -> CaseStore:
    return ring_store(tmp_path_factory.mktemp("dp-ring-site"), n_cases=10, seed=11)


# --------------------------------------------------------------------------------------
# Accounting and the ledger
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_the_ledger_epsilon_is_opacus_accountant_epsilon(tmp_path: Path, accountant: str):
    site = SitePrivacy(tmp_path, "site-01", budget=None)
    opacus_accountant = create_accountant(accountant)
    for server_round, mechanism in enumerate(ROUNDS, start=1):
        plan = replace(
            noise_plan(12, accountant=accountant),
            noise_multiplier=mechanism.noise_multiplier,
            sample_rate=mechanism.sample_rate,
            steps=mechanism.steps,
        )
        spend = site.record_round(plan, mechanism.steps, run_id="7", server_round=server_round)
        for _ in range(mechanism.steps):
            opacus_accountant.step(noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate)
        assert spend.epsilon == pytest.approx(opacus_accountant.get_epsilon(delta=DELTA), rel=1e-9)
    entries = PrivacyLedger.for_site(tmp_path).entries()
    assert [e.epsilon_cumulative for e in entries] == sorted(e.epsilon_cumulative for e in entries)
    assert entries[0].epsilon_round == pytest.approx(entries[0].epsilon_cumulative)


def test_the_cumulative_epsilon_survives_a_restart(tmp_path: Path):
    for server_round, mechanism in enumerate(ROUNDS, start=1):  # a new site object each round: a restart
        plan = replace(noise_plan(12), noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate)
        SitePrivacy(tmp_path, "site-01", budget=None).record_round(plan, mechanism.steps, "run-a", server_round)
    assert PrivacyLedger.for_site(tmp_path).epsilon(DELTA, "rdp") == pytest.approx(epsilon_spent(ROUNDS, DELTA, "rdp"))


def test_the_ledger_is_append_only(tmp_path: Path):
    SitePrivacy(tmp_path, "site-01", budget=None).record_round(noise_plan(12), 4, "run-a", 1)
    ledger = PrivacyLedger.for_site(tmp_path)
    with sqlite3.connect(ledger.path) as connection:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("UPDATE privacy_ledger SET epsilon_cumulative = 0")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute("DELETE FROM privacy_ledger")
    assert len(ledger.entries()) == 1


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_target_epsilon_is_met_over_the_planned_rounds(accountant: str):
    request = DpSgdRequest(target_epsilon=3.0, planned_rounds=4, accountant=accountant)
    plan = plan_round(request, protected_units=40, batch_size=8, local_epochs=2)
    assert (plan.sample_rate, plan.steps) == (0.2, 10)
    spent = epsilon_spent([plan.mechanism] * 4, request.delta, accountant)
    assert 3.0 - 0.02 <= spent <= 3.0


def test_the_plan_counts_steps_as_opacus_samples_them():
    # Opacus samples int(1 / (1 / 93)) = 92 batches per epoch from a loader of 93 batches.
    plan = noise_plan(93, batch_size=1)
    assert (plan.sample_rate, plan.steps_per_epoch) == (1 / 93, 92)


# --------------------------------------------------------------------------------------
# Each site owns its budget
# --------------------------------------------------------------------------------------
def test_a_site_declines_the_round_that_would_overspend_its_budget(tmp_path: Path):
    plan = noise_plan(12)
    one_round = epsilon_spent([plan.mechanism], DELTA, "rdp")
    two_rounds = epsilon_spent([plan.mechanism] * 2, DELTA, "rdp")
    budget = SiteBudget(max_epsilon=(one_round + two_rounds) / 2, delta=DELTA)
    site = SitePrivacy(tmp_path, "site-03", budget)
    assert site.decline_over_budget(plan, "run-a", 1) is None
    site.record_round(plan, plan.steps, "run-a", 1)
    reason = site.decline_over_budget(plan, "run-a", 2)
    assert reason is not None
    assert "site-03 declined round 2 because of its privacy budget" in reason
    assert f"{two_rounds:.3f}" in reason and f"{budget.max_epsilon:g}" in reason
    entries = PrivacyLedger.for_site(tmp_path).entries()
    assert [e.outcome for e in entries] == [TRAINED, DECLINED]
    assert entries[1].reason == reason
    assert entries[1].epsilon_cumulative == pytest.approx(one_round)  # a decline spends nothing


def test_a_site_with_a_budget_declines_training_without_dp_sgd(tmp_path: Path):
    reason = SitePrivacy(tmp_path, "site-02", SiteBudget(max_epsilon=8.0)).decline_without_dp("run-a", 1)
    assert reason is not None and "without DP-SGD" in reason and "privacy budget" in reason
    assert SitePrivacy(tmp_path / "other", "site-04", budget=None).decline_without_dp("run-a", 1) is None


def test_site_toml_privacy_table_is_read_and_validated(tmp_path: Path):
    site_dir = ring_store(tmp_path / "site-05", n_cases=1, seed=2).root.parent
    (site_dir / "site.toml").write_text('name = "site-05"\n[privacy]\nmax-epsilon = 4.0\ndelta = 1e-6\n')
    assert load_site(site_dir).privacy_budget == SiteBudget(4.0, 1e-6)
    (site_dir / "site.toml").write_text("[privacy]\nmax-epsilon = 4.0\nmax-delta = 1e-6\n")
    with pytest.raises(SiteBudgetError, match=r"site\.toml: \[privacy\] has unknown key\(s\) max-delta"):
        load_site(site_dir)


def test_train_replies_carry_the_same_privacy_keys_with_dp_sgd_on_or_off():
    on = privacy_metrics(PrivacySpend(epsilon=1.5, delta=DELTA, noise_multiplier=1.0, sample_rate=0.25, steps=4))
    off = privacy_metrics(None)
    assert tuple(on) == tuple(off) == PRIVACY_METRIC_KEYS
    assert on["dp-sgd"] == 1.0 and set(off.values()) == {0.0}


# --------------------------------------------------------------------------------------
# DP-SGD training with the patient as the record
# --------------------------------------------------------------------------------------
def test_a_patient_with_several_cases_is_one_record(tmp_path: Path):
    store = ring_store(tmp_path, n_cases=8, seed=4)
    task = LgeScarSegmentation()
    training = [case.entry.case_id for case in task.split(store)[0]]
    alone = task.training_patients(store)
    headers = store.root / HEADERS_FOLDER
    headers.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):  # the split is by patient: a pseudonym whose patient stays in training
        patient = f"same-patient-{attempt}"
        for case_id in training[:2]:  # the same (pseudonymous) PatientID in two cases' headers
            (headers / f"{case_id}.json").write_text(json.dumps({"00100020": {"vr": "LO", "Value": [patient]}}))
        kept = {case.entry.case_id: case for case in task.split(store)[0]}
        if set(training[:2]) <= kept.keys():
            break
    assert task.training_patients(store) == alone - 1
    dataset = task.patient_examples(store)
    merged = dataset.patients.index(f"patient:{patient}")
    assert dataset.slice_count(merged) == sum(len(kept[case_id].labelled_slices) for case_id in training[:2])


def test_dp_sgd_computes_one_clipped_gradient_per_sampled_patient(ring_site: CaseStore):
    task = LgeScarSegmentation()
    dataset = task.patient_examples(ring_site)
    slices = sum(len(case.labelled_slices) for case in task.split(ring_site)[0])
    assert len(dataset) == task.training_patients(ring_site) < slices  # records are patients, not slices
    plan = noise_plan(len(dataset), batch_size=3)
    model = task.build_model()
    private = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(dataset, batch_size=3),
        per_slice_segmentation_loss(),
        plan,
    )
    sampler = private.data_loader.batch_sampler
    assert sampler is not None
    indices = next(indices for indices in sampler if indices)  # a Poisson draw
    assert len(set(indices)) == len(indices)
    images, labels = private.data_loader.collate_fn([dataset[i] for i in indices])
    assert images.shape == (len(indices), 1, 128, 128)  # one slice per sampled patient
    private.criterion(private.module(images), labels.long()).backward()
    for name, parameter in private.module.named_parameters():
        grad_sample = parameter.grad_sample  # Opacus adds it to each parameter
        assert grad_sample.shape == (len(indices), *parameter.shape), name
    private.close()


def test_the_dp_loss_of_a_slice_depends_on_that_slice_alone():
    """Otherwise one patient would move the others' clipped gradients and clipping bounds nothing."""
    torch.manual_seed(0)
    model = GradSampleModule(LgeScarSegmentation(channels=(4, 8)).build_model())
    images, labels = torch.rand(2, 1, 32, 32), torch.randint(0, 3, (2, 1, 32, 32))

    def first_slice_gradient(loss_function, second_label):
        model.zero_grad(set_to_none=True)
        loss_function(model(images), torch.stack([labels[0], second_label])).backward()
        return torch.cat([p.grad_sample[0].flatten() for p in model.parameters()])

    other = torch.randint(0, 3, (1, 32, 32))
    per_slice = per_slice_segmentation_loss()
    assert torch.allclose(first_slice_gradient(per_slice, labels[1]), first_slice_gradient(per_slice, other), atol=1e-7)
    batch_dice = segmentation_loss()
    assert not torch.allclose(first_slice_gradient(batch_dice, labels[1]), first_slice_gradient(batch_dice, other))


def test_a_poisson_batch_without_patients_still_releases_noise(ring_site: CaseStore):
    task = LgeScarSegmentation()
    dataset = task.patient_examples(ring_site)
    model = task.build_model()
    before = [p.detach().clone() for p in model.parameters()]
    private = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(dataset, batch_size=3),
        per_slice_segmentation_loss(),
        noise_plan(len(dataset)),
    )
    private.noise_only_step()
    assert private.accounted_steps == 1
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    private.close()


@pytest.mark.parametrize("grad_sample_mode", ["hooks", "ghost"])
def test_a_real_step_after_an_empty_poisson_batch_works_in_every_clipping_mode(ring_site: CaseStore, grad_sample_mode):
    task = LgeScarSegmentation()
    dataset = task.patient_examples(ring_site)
    model = task.build_model()
    private = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(dataset, batch_size=3),
        per_slice_segmentation_loss(),
        noise_plan(len(dataset), grad_sample_mode=grad_sample_mode),
    )
    private.noise_only_step()
    images = torch.stack([dataset[i][0] for i in range(2)])
    labels = torch.stack([dataset[i][1] for i in range(2)])
    private.optimizer.zero_grad(set_to_none=True)
    private.criterion(private.module(images), labels).backward()
    private.optimizer.step()
    assert private.accounted_steps == 2
    private.close()


@pytest.mark.parametrize("grad_sample_mode", ["hooks", "ghost"])
def test_dp_sgd_training_takes_the_planned_steps_and_hands_back_a_clean_model(ring_site: CaseStore, grad_sample_mode):
    task = LgeScarSegmentation()
    plan = plan_round(
        DpSgdRequest(noise_multiplier=0.8, target_epsilon=0.0, grad_sample_mode=grad_sample_mode),
        task.training_patients(ring_site),
        batch_size=3,
        local_epochs=2,
    )
    torch.manual_seed(0)
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = task.train(model, ring_site, TrainSettings(batch_size=3, proximal_mu=0.1, privacy=plan), CPU)
    assert outcome.steps == plan.steps == 2 * plan.steps_per_epoch
    assert math.isfinite(outcome.mean_loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert task.evaluate(model, ring_site, CPU, "site-01").num_examples > 0


def test_a_private_round_is_accounted_as_the_privacy_engine_accounts_it(ring_site: CaseStore, tmp_path: Path):
    task = LgeScarSegmentation()
    dataset = task.patient_examples(ring_site)
    plan = noise_plan(len(dataset), accountant="prv")
    model = task.build_model()
    private = make_private(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        DataLoader(dataset, batch_size=3),
        per_slice_segmentation_loss(),
        plan,
    )
    for _ in range(plan.steps):
        private.noise_only_step()
    spend = SitePrivacy(tmp_path, "site-01", None).record_round(plan, private.accounted_steps, "run-a", 1)
    assert spend.epsilon == pytest.approx(private.epsilon(DELTA), rel=1e-9)
    private.close()


# --------------------------------------------------------------------------------------
# The site's command and the federation
# --------------------------------------------------------------------------------------
def test_cmrfl_site_privacy_prints_the_ledger(tmp_path: Path):
    (tmp_path / "site.toml").write_text("[privacy]\nmax-epsilon = 2.5\n")
    plan = noise_plan(12)
    site = SitePrivacy(tmp_path, "site-01", SiteBudget(max_epsilon=2.5))
    spend = site.record_round(plan, plan.steps, "run-a", 1)
    site.record_round(plan, plan.steps, "run-a", 2)
    reason = SitePrivacy(tmp_path, "site-01", SiteBudget(max_epsilon=spend.epsilon)).decline_over_budget(
        plan, "run-a", 3
    )
    result = CliRunner().invoke(cli, ["site", "privacy", "--site-dir", str(tmp_path)])  # 80 columns: no tty
    assert result.exit_code == 0, result.output
    assert result.output.count("trained") == 2 and "declined" in result.output
    assert reason is not None and reason in " ".join(result.output.split())
    total = PrivacyLedger.for_site(tmp_path).epsilon(DELTA, "rdp")
    assert f"Spent: ε={total:.3f} at δ=1e-05; budget: max ε=2.5" in result.output


def test_a_site_over_budget_declines_and_the_federation_goes_on(ingested_sites: list[Path], tmp_path: Path):
    from cmrfl.simulation import run_simulated_federation

    sites = [Path(shutil.copytree(site, tmp_path / "sites" / site.name)) for site in ingested_sites]
    request = DpSgdRequest(noise_multiplier=1.0, target_epsilon=0.0)
    thrifty = sites[-1]
    plan = plan_round(request, LgeScarSegmentation().training_patients(CaseStore(thrifty)), 4, 1, max_steps=2)
    one_round = epsilon_spent([plan.mechanism], DELTA, "rdp")
    two_rounds = epsilon_spent([plan.mechanism] * 2, DELTA, "rdp")
    (thrifty / "site.toml").write_text(f"[privacy]\nmax-epsilon = {(one_round + two_rounds) / 2}\n")

    history: list[dict] = []
    run_simulated_federation(
        sites,
        {
            "num-server-rounds": 2,
            "max-local-steps": 2,
            "batch-size": 4,
            "min-train-sites": 3,
            "min-available-sites": 3,
            "run-dir": str(tmp_path / "run"),
            "resume": False,
            "dp-sgd": True,
            "dp-sgd-noise-multiplier": 1.0,
            "dp-sgd-target-epsilon": 0.0,
        },
        on_round_end=lambda h: history.append(h[-1]),
    )
    assert [entry["round"] for entry in history] == [1, 2]
    assert history[0]["failures"] == []
    (failure,) = history[1]["failures"]  # under SecAgg+ the reason arrives inside the dropout's error
    declined = PrivacyLedger.for_site(thrifty).entries()[-1]
    assert declined.reason in failure["reason"]
    assert f"{thrifty.name} declined round 2 because of its privacy budget" in declined.reason
    assert sorted(history[1]["train"]["sites"]) == sorted(s.name for s in sites[:-1])
    for site in sites[:-1]:
        reported = history[1]["train"]["sites"][site.name]
        ledger = PrivacyLedger.for_site(site).entries()
        assert [e.outcome for e in ledger] == [TRAINED, TRAINED]
        assert reported["dp-sgd"] == 1.0 and reported["dp-steps"] == ledger[-1].steps > 0
        assert reported["dp-epsilon"] == pytest.approx(ledger[-1].epsilon_cumulative)
    assert [e.outcome for e in PrivacyLedger.for_site(thrifty).entries()] == [TRAINED, DECLINED]


def test_the_task_network_is_opacus_compatible_as_built():
    """One network for private and non-private training: Opacus' own validator accepts it."""
    from opacus.validators import ModuleValidator

    assert ModuleValidator.validate(LgeScarSegmentation().build_model(), strict=False) == []

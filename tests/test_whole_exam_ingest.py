"""Whole phantom exams of all four vendors: each task gets its own series and only those.

The phantom writes every series of each patient's exam and says what it wrote
(``CaseTruth.exam_series``). Ingest, asked for the kinds the tasks read, must store every
LGE short-axis magnitude stack and every MOLLI series, nothing else, and list every other
series as not used with the kind the phantom wrote it as. Cases are identified exactly:
a case id is the site's salted hash of (PatientID, StudyInstanceUID, SeriesInstanceUID).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmr.deid import case_id_for, load_or_create_salt
from cmr.ingest import ingest_site
from cmr.phantom import generate_consortium
from cmr.phantom.spec import ConsortiumSpec
from cmr.series_kinds import SeriesKind
from cmr.store import CaseStore
from cmrfl.cli import app
from tasks import get_task
from tasks.registry import tasks_by_series_kind

STORED = {SeriesKind.LGE_STACK.value, SeriesKind.MOLLI.value}  # the kinds today's tasks read


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ConsortiumSpec]:
    root = tmp_path_factory.mktemp("exams") / "hospitals"
    spec = generate_consortium(root, 4, 2, seed=11)  # sites 1-4: one of each vendor
    assert {site.scanner.vendor for site in spec.sites} == {"Siemens", "GE", "Philips", "Canon"}
    return root, spec


def test_the_tasks_read_exactly_the_kinds_stored():
    assert set(tasks_by_series_kind()) == STORED


def test_each_task_gets_every_series_of_its_kind_and_nothing_else(hospitals, tmp_path: Path):
    root, spec = hospitals
    kinds = list(tasks_by_series_kind())
    for site in spec.sites:
        hospital, site_dir = root / site.site_id, tmp_path / site.site_id
        report = ingest_site(hospital / "dicom", site_dir, hospital / "manifest.csv", hospital / "labels", kinds=kinds)
        salt = load_or_create_salt(site_dir)
        written = [(case, series) for case in spec.cases_at(site.site_id) for series in case.exam_series]
        assert {series.kind for _, series in written} >= {"localizer", "cine", "cine-long-axis", "lge-long-axis"}
        expected = {
            kind: {
                case_id_for(salt, case.patient_id, case.study_instance_uid, series.series_instance_uid)
                for case, series in written
                if series.kind == kind
            }
            for kind in STORED
        }
        store = CaseStore(site_dir)
        for name in ("lge", "mapping"):
            task = get_task(name)
            [kind] = task.series_kinds
            reached = {entry.case_id for entry in store.entries(kinds=task.series_kinds)}
            assert reached == expected[kind], f"{site.site_id} ({site.scanner.vendor}): task {name}"
        assert len(store) == sum(len(ids) for ids in expected.values())
        assert report.rejections == [], f"{site.site_id}: {report.rejections[:3]}"
        others = Counter(series.kind for _, series in written if series.kind not in STORED)
        assert Counter(unused.kind for unused in report.not_used) == others, site.scanner.vendor
        if site.scanner.vendor in ("Siemens", "Philips"):
            assert others["lge-psir"] == len(spec.cases_at(site.site_id))
            psir = [u for u in report.not_used if u.kind == "lge-psir"]
            assert all("the phase-sensitive partner of series" in u.reason for u in psir)


def test_the_inventory_shows_each_exam_by_kind_and_the_tasks_it_can_feed(hospitals, tmp_path: Path):
    root, spec = hospitals
    site = spec.sites[0]
    out = tmp_path / "inventory.json"
    result = CliRunner().invoke(app, ["site", "inventory", str(root / site.site_id / "dicom"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    inventory = json.loads(out.read_text())
    written = Counter(series.kind for case in spec.cases_at(site.site_id) for series in case.exam_series)
    assert inventory["series_by_kind"] == dict(written)
    assert len(inventory["exams"]) == len(spec.cases_at(site.site_id))
    assert all(exam["tasks"] == ["lge", "mapping"] for exam in inventory["exams"])
    assert inventory["tasks_by_kind"]["lge-stack"] == ["lge"] and inventory["tasks_by_kind"]["localizer"] == []
    assert "no task (not ingested)" in result.output


def test_a_site_storing_one_kind_reports_no_problem_with_the_other_kinds_labels_or_rows(hospitals, tmp_path: Path):
    """The LGE demo's sites store LGE stacks only: the MOLLI series' label files and manifest
    rows belong to series the report lists as not used, and are no problem."""
    root, spec = hospitals
    hospital = root / spec.sites[0].site_id
    report = ingest_site(
        hospital / "dicom", tmp_path / "site", hospital / "manifest.csv", hospital / "labels", kinds=["lge-stack"]
    )
    assert report.rejections == []
    assert report.cases_written == len(spec.cases_at(spec.sites[0].site_id))
    assert report.not_used_by_kind()["molli-t1"] == 2 * report.cases_written

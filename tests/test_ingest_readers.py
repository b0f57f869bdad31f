"""Series readers as plug-ins of the one ingest driver: the registry, the T2-prep reader,
a reader registered from outside cmr, and the import rules that keep readers apart."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cmr.dicom_files import SeriesFiles, decode_pixels
from cmr.ingest import REPORT_FILE, ingest_site
from cmr.ingest_mapping import MolliReader
from cmr.mapping_store import t1_mapping_cases, t2prep_cases
from cmr.parametric_map import write_parametric_map
from cmr.phantom.mapping import MappingCase, simulate_mapping_case
from cmr.phantom.mapping_dicom import write_mapping_mask, write_mapping_series
from cmr.reader_registry import (
    readable_kinds,
    reader_of_kind,
    register_reader,
    registered_readers,
    unregister_reader,
)
from cmr.series_kinds import SERIES_KIND_LABEL, SeriesKind, series_kind_of
from cmr.series_readers import SeriesCheck, SeriesContent, SeriesContext
from cmr.store import CaseStore
from ingest_fixtures import Identity, slice_dataset, write_series

CMR = Path(__file__).resolve().parent.parent / "cmr"


# ------------------------------------------------------------------- the registry


def test_the_built_in_readers_read_lge_stacks_molli_and_t2prep():
    assert [reader.kind for reader in registered_readers()] == [
        SeriesKind.LGE_STACK,
        SeriesKind.MOLLI,
        SeriesKind.T2_PREP,
    ]
    assert readable_kinds() == {SeriesKind.LGE_STACK, SeriesKind.MOLLI, SeriesKind.T2_PREP}


def test_a_kind_without_a_reader_is_named_when_asked_for():
    with pytest.raises(KeyError, match="no reader is registered for series kind 'cine'"):
        reader_of_kind(SeriesKind.CINE)


def test_a_second_reader_for_one_kind_is_refused():
    with pytest.raises(ValueError, match="series kind 'molli-t1' already has a reader \\(MolliReader\\)"):
        register_reader(MolliReader())


def test_kind_values_are_the_strings_the_store_holds():
    assert [kind.value for kind in SeriesKind] == [
        "lge-stack", "molli-t1", "t2-prep", "cine", "diffusion", "fingerprinting", "localizer", "cine-long-axis",
        "lge-psir", "lge-long-axis", "ti-scout", "t1-map", "t2-map", "perfusion", "non-cardiac", "unrecognised",
    ]  # fmt: skip
    assert series_kind_of({"scar_type": "none"}) == SeriesKind.LGE_STACK  # LGE cases carry no kind label
    assert series_kind_of({SERIES_KIND_LABEL: "molli-t1"}) == SeriesKind.MOLLI
    with pytest.raises(ValueError, match="series_kind='cine-2d' is not a series kind"):
        series_kind_of({SERIES_KIND_LABEL: "cine-2d"})


# ------------------------------------------------------------------- T2-prep


@pytest.fixture(scope="module")
def examination(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MappingCase, dict[str, str]]:
    """One patient's native MOLLI and T2-prep series, each with its mask; T2-prep with a reference T2 map."""
    root = tmp_path_factory.mktemp("examination")
    case = simulate_mapping_case(5, shape=(48, 48), noise=0.005)
    uids = {}
    for kind in ("molli_native", "t2prep"):
        paths = write_mapping_series(case, root / "dicom" / "P1" / kind.upper(), kind)
        uids[kind] = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
        write_mapping_mask(case, root / "labels" / f"{uids[kind]}.nii.gz")
    write_parametric_map(root / "labels" / f"{uids['t2prep']}_t2.nii.gz", case.t2_ms, case.geometry)
    return root, case, uids


def test_a_t2prep_series_becomes_a_case_with_its_durations_mask_reference_and_study(examination, tmp_path: Path):
    root, case, _ = examination
    report = ingest_site(root / "dicom", tmp_path / "site", labels_dir=root / "labels")
    assert report.rejections == []
    assert (report.cases_written, report.cases_without_mask) == (2, 0)
    store = CaseStore(tmp_path / "site")
    [t2prep] = t2prep_cases(store)
    [molli] = t1_mapping_cases(store)
    np.testing.assert_array_equal(t2prep.durations_ms, [0.0, 25.0, 55.0])
    assert t2prep.frames.shape == (3, 48, 48) and not t2prep.entry.has_mask
    assert t2prep.tissue_mask is not None and t2prep.tissue_mask.shape == (48, 48)
    assert t2prep.reference_t2_ms is not None
    np.testing.assert_allclose(t2prep.reference_t2_ms, case.t2_ms, rtol=1e-6)
    assert t2prep.study == molli.study  # one examination: pairable without an identifier
    assert series_kind_of(t2prep.entry.case_labels) == SeriesKind.T2_PREP


def test_a_t2prep_series_with_a_repeated_duration_is_refused_naming_the_file(examination, tmp_path: Path):
    root, _, _ = examination
    dicom = tmp_path / "dicom"
    for path in (root / "dicom").rglob("*.dcm"):
        target = dicom / path.relative_to(root / "dicom")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    broken = dicom / "P1" / "T2PREP" / "IM_0002.dcm"
    dataset = pydicom.dcmread(broken)
    dataset.ImageComments = "T2prep 0 ms"
    dataset.save_as(broken)
    report = ingest_site(dicom, tmp_path / "site")
    [rejection] = report.rejections
    assert (rejection.kind, rejection.path) == ("series", "P1/T2PREP")
    assert rejection.reason.startswith("T2-prep series (3 files) not ingested: P1/T2PREP/IM_0002.dcm: T2-prep duration")
    assert "duplicates that of P1/T2PREP/IM_0001.dcm" in rejection.reason
    assert report.cases_written == 1  # the MOLLI series goes on


# ------------------------------------------------------------------- a reader from outside cmr


@dataclass(frozen=True)
class CheckedCine:
    files: SeriesFiles

    @property
    def n_images(self) -> int:
        return self.files.n_images

    def read(self, context: SeriesContext) -> SeriesContent:
        first = self.files.files[0]
        image = np.stack([decode_pixels(f.path, f.relative).astype(np.float32) for f in self.files.files])
        return SeriesContent(
            image=image,
            spacing_mm=(*first.images[0].pixel_spacing, 8.0),
            affine_ras=np.eye(4),
            header=pydicom.dcmread(first.path, stop_before_pixels=True),
            without_mask=True,
            case_labels={SERIES_KIND_LABEL: SeriesKind.CINE.value, "study": context.study},
        )


class CineReader:
    """A toy cine reader: it stores every image of the series, in file order."""

    kind = SeriesKind.CINE

    def check(self, series: SeriesFiles) -> SeriesCheck:
        return SeriesCheck(CheckedCine(series))


def write_cine_stack(folder: Path, phases: int = 6) -> None:
    """Three short-axis slices × ``phases`` cardiac phases in one series, as scanners write cine."""
    identity = Identity("K")
    written = write_series(folder, identity, n_slices=3, header={"InversionTime": None, "ScanningSequence": "GR"})
    for path in written.files:
        path.unlink()
    for position in range(3):
        for phase in range(phases):
            header = {"InversionTime": None, "ScanningSequence": "GR", "TriggerTime": 40.0 * phase,
                      "CardiacNumberOfImages": phases, "SeriesDescription": "cine_tf2d_retro_sax"}  # fmt: skip
            image = slice_dataset(
                identity, 1, position * phases + phase, written.geometry, written.stored_pixels[position],
                header={**header, "ImagePositionPatient": list(written.geometry.slice_position(position))},
            )  # fmt: skip
            image.save_as(folder / f"IM_{position}_{phase:02d}.dcm", enforce_file_format=True)


def test_a_registered_reader_reads_the_series_of_its_kind_through_the_one_driver(tmp_path: Path):
    write_cine_stack(tmp_path / "dicom" / "cine")
    unused = ingest_site(tmp_path / "dicom", tmp_path / "before")
    assert unused.rejections == [] and unused.cases_written == 0  # without a cine reader: not used, no error
    [not_used] = unused.not_used
    assert (not_used.path, not_used.kind) == ("cine", "cine")
    assert not_used.reason == "3 slices × 6 cardiac phases: not used by any task"

    register_reader(CineReader())
    try:
        assert registered_readers()[-1].kind == SeriesKind.CINE
        report = ingest_site(tmp_path / "dicom", tmp_path / "site")
    finally:
        unregister_reader(SeriesKind.CINE)
    assert report.rejections == [] and report.not_used == [] and report.cases_written == 1
    [case] = list(CaseStore(tmp_path / "site"))
    assert case.image.shape == (18, *case.image.shape[1:])
    assert series_kind_of(case.entry.case_labels) == SeriesKind.CINE
    header = json.loads(next((tmp_path / "site" / "store" / "headers").glob("*.json")).read_text())
    assert "QUIXOTEK^ALONSO" not in json.dumps(header)  # the driver de-identified it
    assert json.loads((tmp_path / "site" / REPORT_FILE).read_text())["cases_written"] == 1
    assert SeriesKind.CINE not in readable_kinds()  # unregistered again


# ------------------------------------------------------------------- import rules


def _imports() -> dict[str, list[tuple[str, str]]]:
    """For each cmr module, the (module, name) pairs it imports from cmr."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in CMR.rglob("*.py"):
        module = ".".join(path.relative_to(CMR.parent).with_suffix("").parts).removesuffix(".__init__")
        pairs: list[tuple[str, str]] = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cmr":
                pairs.extend((node.module, alias.name) for alias in node.names)
        found[module] = pairs
    return found


def test_no_cmr_module_imports_another_modules_private_names():
    imports = _imports()
    private = {(module, f"{source}.{name}") for module, pairs in imports.items() for source, name in pairs
               if name.startswith("_")}  # fmt: skip
    assert private == set()


def test_cmr_modules_import_each_other_without_a_circle():
    imports = _imports()
    graph = {
        module: {f"{source}.{name}" if f"{source}.{name}" in imports else source for source, name in pairs}
        for module, pairs in imports.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, f"import circle: {' → '.join([*visiting[visiting.index(module) :], module])}"
        if module in done or module not in graph:
            return
        visiting.append(module)
        for imported in graph[module] - {module}:
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)

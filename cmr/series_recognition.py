"""What kind of series each group of images is, from what scanners write in the headers.

A hospital exports whole exams: localizers, cine stacks and long-axis cines, LGE
short-axis stacks (often a magnitude and a PSIR series of one acquisition) and long-axis
planes, MOLLI source images next to the scanner's own T1 map, T2-prep images and T2 maps,
perfusion, sometimes a TI scout, and now and then a series of another body part. Ingest
must feed each task only its own kind, so every series is recognised here before any
reader sees it (:func:`recognise_series`).

Recognition is one ordered list of rules rather than one claim per reader: the rules
must be disjoint (a TI scout and a MOLLI series are both inversion times at one
position; a T2 map's name says "T2prep"), and some need the rest of the exam (a single
LGE plane is short-axis or long-axis by its angle to the exam's short-axis stacks). The
rules use, in this order of trust:

1. what the series *is* in its structure: images per position, cardiac phases
   (TriggerTime, CardiacNumberOfImages), inversion times, b-values, one or several
   orientations, a stack on a line, the slice normal against the patient's axes and
   against the exam's short-axis stacks, a 2D or 3D acquisition;
2. ImageType values (DERIVED maps, LOCALIZER, DIFFUSION, phase or real images:
   Siemens ``P``/``R``, Philips ``R_IR``/``P_IR``, GE and Canon ``PHASE``/``REAL``);
3. names (SeriesDescription, ProtocolName, SequenceName) as hints: ``localizer``,
   ``survey``, ``3-plane loc``, ``t1 map``, ``2ch``/``4ch``/``sax``, ``perf``,
   ``ti scout`` …, in the spellings of Siemens, GE, Philips and Canon.

A manifest may override the kind of any series (``series_kind`` column); see
``cmr.manifest``. Nothing here reads pixels.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from cmr.dicom_files import SeriesFiles
from cmr.mapping_series import finite_number, is_t2prep_header
from cmr.series_kinds import SeriesKind

# Body parts a cardiac series may carry; any other value marks a series of another body part.
CARDIAC_BODY_PARTS = frozenset({"HEART", "CHEST", "THORAX", "CARDIAC", "CHEST_ABDOMEN", "CHESTABDOMEN", "WHOLEBODY"})
_OTHER_BODY_WORDS = frozenset(
    {"brain", "head", "neuro", "knee", "spine", "cspine", "lspine", "tspine", "pelvis", "prostate", "orbit", "mprage"}
)
_POSITION_DECIMALS = 1  # mm: images within 0.1 mm share a position
_ORIENTATION_DECIMALS = 3
CARDINAL_WITHIN_DEGREES = 10.0  # a slice normal this close to a patient axis is transverse, sagittal or coronal
SAME_AXIS_WITHIN_DEGREES = 20.0  # a plane this close to the exam's short-axis planes is short-axis too
MOST_MOLLI_FRAMES = 12  # MOLLI 5(3)3 has 8, 3(3)3(3)5 11; a Look-Locker TI scout has 20 or more
MIN_CINE_PHASES = 5
MIN_PERFUSION_DYNAMICS = 20

_LONG_AXIS_NAMES = ("2ch", "3ch", "4ch", "lax", "lvot", "2 ch", "3 ch", "4 ch", "long axis", "vla", "hla")
_LOCALIZER_NAMES = ("localizer", "localiser", "locator", "survey", "smartsurvey", "scout", "3-plane", "3 plane", "3pl")
_TI_SCOUT_NAMES = ("ti scout", "ti-scout", "tiscout", "ti_scout", "look locker", "look-locker")
_PHASE_SENSITIVE_TYPES = frozenset({"P", "R", "PHASE", "REAL", "R_IR", "P_IR", "PSIR", "PHASE MAP", "REAL_IMAGE"})
_T1_MAP_TYPES = frozenset({"T1 MAP", "T1MAP", "T1_MAP", "MAP_T1", "ECV", "ECV MAP"})
_T2_MAP_TYPES = frozenset({"T2 MAP", "T2MAP", "T2_MAP", "MAP_T2"})


@dataclass(frozen=True)
class Recognition:
    """A series' kind and, in a few words for the ingest report, why."""

    kind: SeriesKind
    because: str
    partner: str | None = None  # LGE_PSIR: the SeriesInstanceUID of its magnitude stack, when found


@dataclass(frozen=True)
class _Features:
    """What the rules look at, read once from a series' headers."""

    files: SeriesFiles
    header: Dataset  # the first file's
    image_type: tuple[str, ...]
    words: frozenset[str]  # lower-case words of the series, protocol and sequence names
    names: str  # the same names, lower case, for phrases
    n_images: int
    positions: dict[tuple[float, ...], int]  # images per position
    orientations: frozenset[tuple[float, ...]]
    normal: np.ndarray | None  # the slice normal when the series has one orientation
    trigger_times: int  # distinct TriggerTime values
    cardiac_images: int  # CardiacNumberOfImages, 0 when absent
    inversion_times: int  # distinct InversionTime values
    all_have_inversion_time: bool
    inversion_recovery: bool  # IR in ScanningSequence or an InversionTime
    three_d: bool  # MRAcquisitionType 3D

    @property
    def n_positions(self) -> int:
        return len(self.positions)

    @property
    def per_position(self) -> int:
        return max(self.positions.values(), default=0)

    @property
    def derived(self) -> bool:
        return bool(self.image_type) and self.image_type[0] == "DERIVED"

    def has_type(self, values: Iterable[str]) -> bool:
        return any(value in self.image_type for value in values)

    def says(self, *phrases: str) -> bool:
        """Whether a name holds one of ``phrases`` (a word, or a phrase with spaces or dashes)."""
        return any(phrase in self.words if re.fullmatch(r"\w+", phrase) else phrase in self.names for phrase in phrases)


def _text(header: Dataset, keyword: str) -> str:
    value = header.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return "\\".join(str(v) for v in value)
    except TypeError:
        return str(value)


def _features(series: SeriesFiles) -> _Features:
    header = series.files[0].header
    image_type = tuple(v.strip().upper() for v in _text(header, "ImageType").split("\\") if v.strip())
    names = " ".join(_text(header, k) for k in ("SeriesDescription", "ProtocolName", "SequenceName")).lower()
    words = frozenset(w for w in re.split(r"[^0-9a-z]+", names.replace("_", " ")) if w)
    positions: Counter[tuple[float, ...]] = Counter()
    orientations = set()
    for file in series.files:
        for image in file.images:
            positions[tuple(round(v, _POSITION_DECIMALS) for v in image.position)] += 1
            orientations.add(tuple(round(v, _ORIENTATION_DECIMALS) for v in image.orientation))
    normal = None
    if len(orientations) == 1:
        orientation = np.asarray(next(iter(orientations)), dtype=float)
        cross = np.cross(orientation[:3], orientation[3:])
        if np.linalg.norm(cross) > 0:
            normal = cross / np.linalg.norm(cross)
    headers = [file.header for file in series.files]
    trigger = {finite_number(h.get("TriggerTime")) for h in headers} - {None}
    inversion = [finite_number(h.get("InversionTime")) for h in headers]
    cardiac_images = finite_number(header.get("CardiacNumberOfImages")) or 0
    scanning = _text(header, "ScanningSequence").upper().split("\\")
    return _Features(
        files=series,
        header=header,
        image_type=image_type,
        words=words,
        names=names,
        n_images=series.n_images,
        positions=dict(positions),
        orientations=frozenset(orientations),
        normal=normal,
        trigger_times=len(trigger),
        cardiac_images=int(cardiac_images),
        inversion_times=len(set(inversion) - {None}),
        all_have_inversion_time=all(value is not None for value in inversion),
        inversion_recovery="IR" in scanning or any(value is not None for value in inversion),
        three_d=_text(header, "MRAcquisitionType").strip().upper() == "3D",
    )


def _degrees_between_axes(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two lines (not directions), 0–90°."""
    return float(np.degrees(np.arccos(np.clip(abs(float(a @ b)), 0.0, 1.0))))


def _cardinal(normal: np.ndarray | None) -> bool:
    if normal is None:
        return False
    return min(_degrees_between_axes(normal, axis) for axis in np.eye(3)) <= CARDINAL_WITHIN_DEGREES


def _stack_on_a_line(features: _Features) -> bool:
    """Several parallel positions stepping along the slice normal (a stack, not scattered planes)."""
    if features.normal is None or features.n_positions < 2:
        return False
    points = np.array(list(features.positions))
    steps = points - points.mean(axis=0)
    along = steps @ features.normal
    across = steps - np.outer(along, features.normal)
    return bool(np.abs(across).max() <= max(1.0, 0.05 * np.ptp(along)))


def _other_body_part(features: _Features) -> str | None:
    part = _text(features.header, "BodyPartExamined").strip().upper()
    if part and part not in CARDIAC_BODY_PARTS:
        return f"BodyPartExamined {part}"
    word = next((w for w in sorted(features.words) if w in _OTHER_BODY_WORDS), None)
    return f"its name says {word!r}" if word else None


def _long_axis_words(features: _Features) -> bool:
    return features.says(*_LONG_AXIS_NAMES)


def _short_axis_words(features: _Features) -> bool:
    return features.says("sax", "sa", "short axis", "short-axis", "sa stack")


def _first_pass(features: _Features) -> Recognition | None:
    """Rules that need nothing but the series itself; None when the exam must decide."""
    f = features
    other = _other_body_part(f)
    if other:
        return Recognition(SeriesKind.NON_CARDIAC, f"not cardiac ({other})")
    localizer = f.has_type({"LOCALIZER", "SCOUT"}) or f.says(*_LOCALIZER_NAMES)
    if localizer and not f.says(*_TI_SCOUT_NAMES) and f.inversion_times < 2:  # a "scout" of many TIs is a TI scout
        return Recognition(SeriesKind.LOCALIZER, "named or typed as a localizer")
    if len(f.orientations) >= 2 and f.n_images <= 15 and f.per_position == 1 and not f.inversion_recovery:
        return Recognition(SeriesKind.LOCALIZER, f"{f.n_images} images in {len(f.orientations)} orientations")
    if (
        f.has_type({"DIFFUSION", "ADC", "TRACEW", "FA"})
        or "DiffusionBValue" in f.header
        or re.search(r"ep_b\d", f.names)
        or f.says("dwi", "dti", "diffusion", "dtcmr")
    ):
        return Recognition(SeriesKind.DIFFUSION, "diffusion-weighted (ImageType, b-value or sequence)")
    if f.says("mrf", "fingerprinting", "fingerprint"):
        return Recognition(SeriesKind.FINGERPRINTING, "named as MR fingerprinting")
    if (
        f.has_type(_T1_MAP_TYPES)
        or (f.derived and f.has_type({"T1"}))
        or (f.derived and f.says("t1 map", "t1map", "t1_map", "ecv"))
    ):
        return Recognition(SeriesKind.T1_MAP, "a derived T1 map (ImageType or name)")
    if (
        f.has_type(_T2_MAP_TYPES)
        or (f.derived and f.has_type({"T2"}))
        or (f.derived and f.says("t2 map", "t2map", "t2_map"))
    ):
        return Recognition(SeriesKind.T2_MAP, "a derived T2 map (ImageType or name)")
    if f.says("perf", "perfusion", "first pass", "fpp"):
        return Recognition(SeriesKind.PERFUSION, "named as first-pass perfusion")
    one_position = f.n_positions == 1 and f.n_images >= 2
    if one_position and f.all_have_inversion_time and f.inversion_times >= 2:
        if f.says(*_TI_SCOUT_NAMES) or f.n_images > MOST_MOLLI_FRAMES:
            return Recognition(SeriesKind.TI_SCOUT, f"a Look-Locker TI scout ({f.n_images} inversion times)")
        return Recognition(SeriesKind.MOLLI, f"{f.n_images} inversion times at one position")
    if one_position and all(is_t2prep_header(file.header) for file in f.files.files):
        return Recognition(SeriesKind.T2_PREP, f"{f.n_images} T2-prepared images at one position")
    phases = max(f.trigger_times, f.cardiac_images if f.per_position > 1 else 0)
    if f.per_position >= MIN_CINE_PHASES and f.trigger_times >= MIN_CINE_PHASES:
        if f.n_positions >= 3 and _stack_on_a_line(f):
            return Recognition(SeriesKind.CINE, f"{f.n_positions} slices × {phases} cardiac phases")
        if f.n_positions <= 3:
            return Recognition(SeriesKind.CINE_LONG_AXIS, f"{f.n_positions} plane(s) × {phases} cardiac phases")
    if f.per_position >= MIN_PERFUSION_DYNAMICS and f.n_positions <= 5:
        return Recognition(SeriesKind.PERFUSION, f"{f.per_position} dynamics at {f.n_positions} positions")
    if f.per_position > 1:
        return Recognition(
            SeriesKind.UNRECOGNISED, f"{f.n_images} images at {f.n_positions} positions: not a kind ingest knows"
        )
    if f.three_d and f.n_positions >= 20 and _cardinal(f.normal):
        return Recognition(SeriesKind.UNRECOGNISED, f"a 3D volume of {f.n_positions} slices in a patient plane")
    if not f.inversion_recovery:
        return Recognition(SeriesKind.UNRECOGNISED, "single images without inversion recovery: not LGE")
    return None  # an inversion-recovery image per position: LGE, magnitude or PSIR, short or long axis


def _phase_sensitive(features: _Features) -> bool:
    return features.has_type(_PHASE_SENSITIVE_TYPES)


def _lge(features: _Features, short_axis_normals: Sequence[np.ndarray]) -> Recognition:
    """An inversion-recovery image per position: which LGE it is."""
    f = features
    psir = _phase_sensitive(f)
    if f.n_positions >= 2 and _stack_on_a_line(f):
        if _cardinal(f.normal) and not _short_axis_words(f):
            return Recognition(
                SeriesKind.UNRECOGNISED, "an inversion-recovery stack in a transverse, sagittal or coronal plane"
            )
        kind = SeriesKind.LGE_PSIR if psir else SeriesKind.LGE_STACK
        return Recognition(kind, f"{f.n_positions} inversion-recovery slices on one axis" + (" (PSIR)" if psir else ""))
    if f.normal is not None and f.n_positions == 1:
        angles = [_degrees_between_axes(f.normal, n) for n in short_axis_normals]
        if angles and min(angles) <= SAME_AXIS_WITHIN_DEGREES:
            kind = SeriesKind.LGE_PSIR if psir else SeriesKind.LGE_STACK
            return Recognition(kind, "one inversion-recovery slice parallel to the exam's short-axis stacks")
        if angles and min(angles) >= 90.0 - SAME_AXIS_WITHIN_DEGREES:
            return Recognition(SeriesKind.LGE_LONG_AXIS, "one inversion-recovery plane across the short-axis stacks")
        if _long_axis_words(f):
            return Recognition(SeriesKind.LGE_LONG_AXIS, "one inversion-recovery plane named long-axis")
        if not _cardinal(f.normal) or _short_axis_words(f):
            kind = SeriesKind.LGE_PSIR if psir else SeriesKind.LGE_STACK
            return Recognition(kind, "one oblique inversion-recovery slice")
        return Recognition(SeriesKind.UNRECOGNISED, "one inversion-recovery image in a patient plane, not oblique")
    if len(f.orientations) > 1:
        return Recognition(SeriesKind.LGE_LONG_AXIS, f"inversion-recovery images in {len(f.orientations)} planes")
    return Recognition(SeriesKind.UNRECOGNISED, "inversion-recovery images that form no stack")


def _short_axis_normals(recognised: dict[str, tuple[_Features, Recognition | None]]) -> dict[str, list[np.ndarray]]:
    """Per study, the slice normals of its multi-slice cine and LGE stacks."""
    normals: dict[str, list[np.ndarray]] = defaultdict(list)
    for features, recognition in recognised.values():
        stack = (recognition is not None and recognition.kind == SeriesKind.CINE) or (
            recognition is None and features.n_positions >= 3 and _stack_on_a_line(features)
        )
        if stack and features.normal is not None and not _cardinal(features.normal):
            normals[features.files.study_instance_uid].append(features.normal)
    return normals


def _position_key(features: _Features) -> tuple:
    return (features.files.study_instance_uid, tuple(sorted(features.positions)), features.orientations)


def recognise_series(
    series: Sequence[SeriesFiles], overrides: dict[str, SeriesKind] | None = None
) -> dict[str, Recognition]:
    """The kind of every series, by SeriesInstanceUID; ``overrides`` (from the manifest) win.

    A PSIR series is paired with the magnitude stack of the same acquisition (same study,
    positions and orientation): one acquisition, of which tasks read the magnitude.
    """
    overrides = overrides or {}
    first: dict[str, tuple[_Features, Recognition | None]] = {}
    for files in series:
        features = _features(files)
        first[files.series_instance_uid] = (features, _first_pass(features))
    normals = _short_axis_normals(first)
    result: dict[str, Recognition] = {}
    for uid, (features, recognition) in first.items():
        if uid in overrides:
            result[uid] = Recognition(overrides[uid], "the manifest says so (series_kind)")
        elif recognition is not None:
            result[uid] = recognition
        else:
            result[uid] = _lge(features, normals.get(features.files.study_instance_uid, []))
    magnitudes = {_position_key(first[uid][0]): uid for uid, r in result.items() if r.kind == SeriesKind.LGE_STACK}
    for uid, recognition in result.items():
        if recognition.kind == SeriesKind.LGE_PSIR:
            partner = magnitudes.get(_position_key(first[uid][0]))
            result[uid] = Recognition(recognition.kind, recognition.because, partner)
    return result

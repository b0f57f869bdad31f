"""MOLLI: modified Look-Locker inversion recovery with single-shot bSSFP readouts.

A scheme such as ``5(3)3`` means: invert, read one image in each of 5
consecutive heartbeats, wait 3 heartbeats, invert again, read 3 images.
``4(1)3(1)2`` (post-contrast) has three inversions; a recovery written with an
``s`` (``5(3s)3``) is in seconds and rounded up to whole heartbeats. Images are
ECG-triggered to the same cardiac phase, so the inversion times (inversion to
k-space centre) of one block step by the RR interval: they depend on heart
rate. Block ``b`` starts at ``first_ti_ms + b · ti_increment_ms``.

The signal is simulated with a longitudinal/transverse Bloch model of the real
readout (``BssfpReadout``): an α/2 preparation pulse, ``phase_encodes``
alternating-phase α pulses (on resonance), k-space centre at ``centre_index``,
spoiling after the shot, free T1 recovery in between, and an inversion that
flips whatever longitudinal magnetisation is left. Each readout pulls the
magnetisation towards the bSSFP steady state, so the sampled recovery is
faster than T1 (apparent ``T1* < T1``) and the three-parameter fit
``A − B·exp(−TI/T1*)`` needs the Look-Locker correction ``T1 = T1*(B/A − 1)``;
because recovery between blocks is incomplete (only 3 heartbeats in 5(3)3)
and the readouts are brief, the correction is approximate and MOLLI
underestimates long T1s, more so at high heart rates (Kellman & Hansen 2014).

``ApparentReadout`` is the textbook alternative (continuous FLASH Look-Locker,
Deichmann & Haase 1992): every frame lies exactly on ``A − B·exp(−TI/T1*)``
with ``T1*(B/A − 1) = T1``; it exists to test fits against an exact answer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

DEFAULT_T2_MS = 45.0  # myocardium, used where no T2 is given (bSSFP readouts depend on it)
_SCHEME = re.compile(r"^\d+(\(\d+(\.\d+)?s?\)\d+)*$")


@dataclass(frozen=True)
class MolliScheme:
    """Images per inversion block and the recovery after each block but the last."""

    readouts_per_block: tuple[int, ...]
    recovery_after_block: tuple[tuple[float, bool], ...]  # (value, in seconds?) per gap

    @property
    def n_frames(self) -> int:
        return sum(self.readouts_per_block)

    def recovery_beats(self, rr_ms: float) -> tuple[int, ...]:
        return tuple(
            math.ceil(value * 1000.0 / rr_ms - 1e-9) if seconds else int(value)
            for value, seconds in self.recovery_after_block
        )


def parse_molli_scheme(scheme: str) -> MolliScheme:
    """``"5(3)3"`` → blocks (5, 3) with 3 recovery heartbeats; ``"5(3s)3"`` → 3 s of recovery."""
    text = scheme.replace(" ", "")
    if not _SCHEME.fullmatch(text):
        raise ValueError(f"MOLLI scheme {scheme!r}: expected e.g. '5(3)3', '4(1)3(1)2' or '5(3s)3'")
    blocks = tuple(int(n) for n in re.findall(r"(?:^|\))(\d+)", text))
    recoveries = tuple((float(v), s == "s") for v, s in re.findall(r"\((\d+(?:\.\d+)?)(s?)\)", text))
    if any(n < 1 for n in blocks):
        raise ValueError(f"MOLLI scheme {scheme!r}: every block needs at least one image")
    return MolliScheme(readouts_per_block=blocks, recovery_after_block=recoveries)


@dataclass(frozen=True)
class BssfpReadout:
    """Single-shot bSSFP readout of one MOLLI image (typical 1.5 T / 3 T protocol values)."""

    flip_angle_deg: float = 35.0
    repetition_time_ms: float = 2.7
    phase_encodes: int = 66  # after parallel imaging and partial Fourier
    centre_index: int = 33  # linear ordering: the TI is measured to this pulse
    inversion_efficiency: float = 1.0  # adiabatic pulses reach ~0.95-0.98 in tissue

    @property
    def duration_ms(self) -> float:
        return (self.phase_encodes + 0.5) * self.repetition_time_ms

    @property
    def time_to_centre_ms(self) -> float:
        """From the α/2 pulse to the echo (TE = TR/2) of the k-space centre's pulse."""
        return (self.centre_index + 1.0) * self.repetition_time_ms


@dataclass(frozen=True)
class ApparentReadout:
    """Continuous Look-Locker sampling: ``1/T1* = 1/T1 − ln(cos α)/interval``."""

    flip_angle_deg: float = 15.0
    interval_ms: float = 100.0


@dataclass(frozen=True)
class _Timeline:
    inversion_times_ms: np.ndarray  # per frame, acquisition order
    readout_centres_ms: np.ndarray  # absolute, per frame
    inversions_ms: np.ndarray  # absolute, per block


def _timeline(
    heart_rate_bpm: float,
    scheme: str,
    first_ti_ms: float,
    ti_increment_ms: float,
    readout: BssfpReadout | None = None,
) -> _Timeline:
    if not 20.0 <= heart_rate_bpm <= 220.0:
        raise ValueError(f"heart_rate_bpm: expected 20-220, got {heart_rate_bpm}")
    if first_ti_ms <= 0 or ti_increment_ms < 0:
        raise ValueError(f"first_ti_ms must be > 0 and ti_increment_ms ≥ 0, got {first_ti_ms}, {ti_increment_ms}")
    parsed = parse_molli_scheme(scheme)
    rr = 60000.0 / heart_rate_bpm
    recovery = parsed.recovery_beats(rr)
    inversion_times, centres, inversions = [], [], []
    beat = 0
    for block, n_images in enumerate(parsed.readouts_per_block):
        ti = first_ti_ms + block * ti_increment_ms
        if ti >= rr:
            raise ValueError(
                f"MOLLI {scheme}: inversion time {ti:.0f} ms of block {block + 1} does not fit the"
                f" RR interval {rr:.0f} ms ({heart_rate_bpm} bpm)"
            )
        first_centre = first_ti_ms + beat * rr  # images at the same cardiac phase every beat
        inversions.append(first_centre - ti)
        for k in range(n_images):
            inversion_times.append(ti + k * rr)
            centres.append(first_centre + k * rr)
        beat += n_images + (recovery[block] if block < len(recovery) else 0)
    if readout is not None:
        if readout.duration_ms >= rr:
            raise ValueError(f"bSSFP readout of {readout.duration_ms:.0f} ms does not fit the RR interval {rr:.0f} ms")
        if min(t for t in inversion_times) <= readout.time_to_centre_ms:
            raise ValueError(
                f"first inversion time {first_ti_ms} ms is shorter than the readout's time to k-space"
                f" centre ({readout.time_to_centre_ms:.0f} ms)"
            )
    return _Timeline(np.asarray(inversion_times), np.asarray(centres), np.asarray(inversions))


def molli_inversion_times(
    heart_rate_bpm: float,
    scheme: str = "5(3)3",
    first_ti_ms: float = 120.0,
    ti_increment_ms: float = 80.0,
) -> np.ndarray:
    """Inversion time (ms, inversion to k-space centre) of every image, in acquisition order."""
    return _timeline(heart_rate_bpm, scheme, first_ti_ms, ti_increment_ms).inversion_times_ms


def molli_readout_times(
    heart_rate_bpm: float,
    scheme: str = "5(3)3",
    first_ti_ms: float = 120.0,
    ti_increment_ms: float = 80.0,
) -> np.ndarray:
    """When each image's k-space centre is read (ms after the first inversion), acquisition order."""
    return _timeline(heart_rate_bpm, scheme, first_ti_ms, ti_increment_ms).readout_centres_ms


def _heart_rate_from_times(inversion_times_ms: np.ndarray) -> float:
    steps = np.diff(inversion_times_ms)
    within_block = steps[steps > 0]
    if within_block.size == 0:
        raise ValueError("heart rate cannot be inferred from the inversion times; pass heart_rate_bpm")
    return 60000.0 / float(np.median(within_block))


def _first_ti_and_increment(inversion_times_ms: np.ndarray) -> tuple[float, float]:
    starts = [float(inversion_times_ms[0])] + [
        float(inversion_times_ms[i + 1]) for i in np.flatnonzero(np.diff(inversion_times_ms) < 0)
    ]
    return starts[0], (starts[1] - starts[0]) if len(starts) > 1 else 0.0


def _bssfp_sequence(
    t1: np.ndarray, t2: np.ndarray, m0: np.ndarray, timeline: _Timeline, readout: BssfpReadout
) -> np.ndarray:
    """Signed k-space-centre signal of every frame (Bloch model, on resonance)."""
    alpha = np.deg2rad(readout.flip_angle_deg)
    tr = readout.repetition_time_ms
    e1_tr, e2_tr = np.exp(-tr / t1), np.exp(-tr / t2)
    e1_half, e2_half = np.exp(-0.5 * tr / t1), np.exp(-0.5 * tr / t2)
    cos_a, sin_a = math.cos(alpha), math.sin(alpha)
    events = [(float(t), "invert", -1) for t in timeline.inversions_ms]
    events += [(float(t) - readout.time_to_centre_ms, "read", k) for k, t in enumerate(timeline.readout_centres_ms)]
    events.sort(key=lambda event: (event[0], event[1] != "invert"))

    mz = m0.astype(np.float64).copy()
    signal = np.zeros((len(timeline.readout_centres_ms), *m0.shape))
    now = events[0][0]
    for start, kind, frame in events:
        mz = m0 - (m0 - mz) * np.exp(-(start - now) / t1)  # free recovery up to this event
        if kind == "invert":
            mz = -readout.inversion_efficiency * mz
            now = start
            continue
        mx = mz * math.sin(alpha / 2)  # α/2 preparation
        mz = mz * math.cos(alpha / 2)
        mx, mz = mx * e2_half, m0 - (m0 - mz) * e1_half
        for pulse in range(readout.phase_encodes):
            sign = -1.0 if pulse % 2 == 0 else 1.0  # alternating phase
            mx, mz = mx * cos_a + sign * mz * sin_a, -sign * mx * sin_a + mz * cos_a
            if pulse == readout.centre_index:
                # undo the alternation so that the sign is that of mz before the shot
                signal[frame] = mx * e2_half * (1.0 if pulse % 2 else -1.0)
            mx, mz = mx * e2_tr, m0 - (m0 - mz) * e1_tr
        now = start + readout.duration_ms  # transverse magnetisation spoiled after the shot
    return signal


def molli_signed_signal(
    t1_ms: np.ndarray | float,
    m0: np.ndarray | float,
    inversion_times_ms: np.ndarray,
    *,
    t2_ms: np.ndarray | float | None = None,
    readout: BssfpReadout | ApparentReadout | None = None,
    scheme: str | None = None,
    heart_rate_bpm: float | None = None,
) -> np.ndarray:
    """Signed signal (phase-sensitive), shape ``(n_frames, *t1.shape)``; see ``molli_signal``."""
    times = np.asarray(inversion_times_ms, dtype=np.float64)
    if times.ndim != 1 or times.size < 2 or not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise ValueError(f"inversion_times_ms: expected ≥ 2 positive finite times, got {times!r}")
    t1 = np.asarray(t1_ms, dtype=np.float64)
    if np.any(t1 <= 0):
        raise ValueError("t1_ms: every T1 must be > 0")
    m0_array = np.broadcast_to(np.asarray(m0, dtype=np.float64), t1.shape)
    readout = BssfpReadout() if readout is None else readout

    if isinstance(readout, ApparentReadout):
        relaxation_rate = 1.0 / t1 - math.log(math.cos(np.deg2rad(readout.flip_angle_deg))) / readout.interval_ms
        t1_star = 1.0 / relaxation_rate
        a = m0_array * t1_star / t1
        b = a + m0_array  # so that T1*(B/A − 1) = T1 exactly
        return a[None] - b[None] * np.exp(-times.reshape(-1, *([1] * t1.ndim)) / t1_star[None])

    t2 = np.broadcast_to(np.asarray(DEFAULT_T2_MS if t2_ms is None else t2_ms, dtype=np.float64), t1.shape)
    if np.any(t2 <= 0):
        raise ValueError("t2_ms: every T2 must be > 0")
    rate = _heart_rate_from_times(times) if heart_rate_bpm is None else heart_rate_bpm
    first_ti, increment = _first_ti_and_increment(times)
    if scheme is None:
        scheme = _scheme_from_times(times)
    timeline = _timeline(rate, scheme, first_ti, increment, readout)
    if timeline.inversion_times_ms.size != times.size or not np.allclose(timeline.inversion_times_ms, times, atol=1.0):
        raise ValueError(
            f"inversion times {np.round(times, 1).tolist()} do not match MOLLI {scheme} at {rate:.1f} bpm"
            f" ({np.round(timeline.inversion_times_ms, 1).tolist()}); pass scheme= and heart_rate_bpm="
        )
    return _bssfp_sequence(t1, t2, m0_array, timeline, readout)


def _scheme_from_times(times: np.ndarray) -> str:
    """Blocks from where the inversion time drops; recovery assumed 3 beats (5(3)3) or 1 beat."""
    breaks = np.flatnonzero(np.diff(times) < 0)
    sizes = np.diff(np.concatenate([[0], breaks + 1, [times.size]])).tolist()
    gap = "3" if len(sizes) == 2 else "1"
    return f"({gap})".join(str(n) for n in sizes)


def molli_signal(
    t1_ms: np.ndarray | float,
    m0: np.ndarray | float,
    inversion_times_ms: np.ndarray,
    *,
    t2_ms: np.ndarray | float | None = None,
    readout: BssfpReadout | ApparentReadout | None = None,
    scheme: str | None = None,
    heart_rate_bpm: float | None = None,
) -> np.ndarray:
    """Magnitude MOLLI signal of every frame, shape ``(n_frames, *t1.shape)``.

    ``inversion_times_ms`` in acquisition order as ``molli_inversion_times``
    gives them. With the default bSSFP readout, the scheme and heart rate are
    inferred from the times (blocks where the TI drops, RR from the steps;
    3 recovery beats for two blocks, 1 otherwise) unless given. ``t2_ms``
    defaults to 45 ms (myocardium).
    """
    return np.abs(
        molli_signed_signal(
            t1_ms,
            m0,
            inversion_times_ms,
            t2_ms=t2_ms,
            readout=readout,
            scheme=scheme,
            heart_rate_bpm=heart_rate_bpm,
        )
    )

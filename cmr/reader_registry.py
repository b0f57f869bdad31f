"""Series readers registered by series kind (as nnU-Net's reader/writer registry).

The ingest driver asks the registered readers, newest first, which one claims a
series (``SeriesReader.claims``); the first that does reads it. The built-in readers
are registered below, the catch-all LGE-stack reader first so that it is asked last.
A reader for a new kind (cine, diffusion, fingerprinting) is registered after them
and so is asked before the stack reader, which would otherwise refuse its series as
"several phases … in one series". See docs/ingest.md.
"""

from __future__ import annotations

from cmr.dicom_files import SeriesFiles
from cmr.ingest_mapping import MolliReader, T2PrepReader
from cmr.ingest_stack import LgeStackReader
from cmr.series_kinds import SeriesKind
from cmr.series_readers import SeriesReader

_READERS: list[SeriesReader] = []  # in the order they are asked: newest first


def register_reader(reader: SeriesReader) -> None:
    """Make ``reader`` read its kind of series; it is asked before every reader registered earlier.

    Raises ValueError when its kind already has a reader (unregister that one first).
    """
    kind = SeriesKind(reader.kind)
    for existing in _READERS:
        if existing.kind == kind:
            raise ValueError(
                f"series kind {kind.value!r} already has a reader ({type(existing).__name__}); "
                "unregister_reader it first"
            )
    _READERS.insert(0, reader)


def unregister_reader(kind: SeriesKind) -> SeriesReader:
    """Remove and return the reader of ``kind``; KeyError when there is none."""
    reader = reader_of_kind(kind)
    _READERS.remove(reader)
    return reader


def reader_of_kind(kind: SeriesKind) -> SeriesReader:
    """The registered reader of ``kind``; KeyError naming the kinds that have one."""
    for reader in _READERS:
        if reader.kind == kind:
            return reader
    have = ", ".join(reader.kind.value for reader in _READERS) or "none"
    raise KeyError(f"no reader is registered for series kind {str(kind)!r} (readers: {have})")


def registered_readers() -> tuple[SeriesReader, ...]:
    """Every registered reader, in the order the driver asks them."""
    return tuple(_READERS)


def reader_for(series: SeriesFiles) -> SeriesReader | None:
    """The first reader that claims ``series``; None when no reader does."""
    return next((reader for reader in _READERS if reader.claims(series)), None)


register_reader(LgeStackReader())
register_reader(MolliReader())
register_reader(T2PrepReader())

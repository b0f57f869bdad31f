"""Series readers registered by series kind (as nnU-Net's reader/writer registry).

Ingest recognises each series' kind (``cmr.series_recognition``) and hands it to the
reader registered for that kind; a series of a kind without a reader, or of a kind no
task reads, is listed in the ingest report as not used. The built-in readers (LGE
stack, MOLLI, T2-prep) are registered below; a reader for a new kind (cine, diffusion,
fingerprinting) registers the same way. See docs/ingest.md.
"""

from __future__ import annotations

from cmr.ingest_mapping import MolliReader, T2PrepReader
from cmr.ingest_stack import LgeStackReader
from cmr.series_kinds import SeriesKind
from cmr.series_readers import SeriesReader

_READERS: list[SeriesReader] = []


def register_reader(reader: SeriesReader) -> None:
    """Make ``reader`` read its kind of series.

    Raises ValueError when its kind already has a reader (unregister that one first).
    """
    kind = SeriesKind(reader.kind)
    for existing in _READERS:
        if existing.kind == kind:
            raise ValueError(
                f"series kind {kind.value!r} already has a reader ({type(existing).__name__}); "
                "unregister_reader it first"
            )
    _READERS.append(reader)


def unregister_reader(kind: SeriesKind) -> SeriesReader:
    """Remove and return the reader of ``kind``; KeyError when there is none."""
    reader = reader_of_kind(kind)
    _READERS.remove(reader)
    return reader


def reader_of_kind(kind: SeriesKind | str) -> SeriesReader:
    """The registered reader of ``kind``; KeyError naming the kinds that have one."""
    for reader in _READERS:
        if reader.kind == kind:
            return reader
    have = ", ".join(reader.kind.value for reader in _READERS) or "none"
    raise KeyError(f"no reader is registered for series kind {str(kind)!r} (readers: {have})")


def registered_readers() -> tuple[SeriesReader, ...]:
    """Every registered reader, in the order they were registered."""
    return tuple(_READERS)


def readable_kinds() -> frozenset[SeriesKind]:
    """The kinds a registered reader can store."""
    return frozenset(SeriesKind(reader.kind) for reader in _READERS)


register_reader(LgeStackReader())
register_reader(MolliReader())
register_reader(T2PrepReader())

"""The LGE short-axis stack reader: a series that is one MR stack, with its mask.

It reads the series ingest recognised as LGE short-axis stacks (``cmr.series_recognition``:
an inversion-recovery image per position, on one oblique axis or parallel to the exam's
short-axis stacks; the magnitude, whose PSIR partner is the same acquisition). A
recognised stack that fails the stack checks is refused with their reason
(``cmr.dicom_series``: uneven spacing and the like), so that staff learn why.

What a stack case holds: the image ``[slice, row, col]`` in slice order, its mask from
the labels folder (``cmr.masks``: the manifest's ``mask_file`` or
``<SeriesInstanceUID>.nii.gz``; a mask that does not fit is reported and the case kept
without one), and the manifest row's case labels (``scar_type``). Its case labels
carry no ``series_kind``: an unlabelled case is an LGE stack (``cmr.series_kinds``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cmr.dicom_files import SeriesFiles
from cmr.dicom_series import DicomSeries, build_series
from cmr.masks import load_mask
from cmr.series_kinds import SeriesKind
from cmr.series_readers import SeriesCheck, SeriesContent, SeriesContext


@dataclass(frozen=True)
class CheckedStack:
    files: SeriesFiles
    stack: DicomSeries

    @property
    def n_images(self) -> int:
        return len(self.stack.slices)

    def read(self, context: SeriesContext) -> SeriesContent:
        stack = self.stack
        image = stack.load_image()  # before the mask: a series that cannot be decoded uses no label file
        mask = None
        path = context.labels.mask_path(stack.series_instance_uid, context.row)
        if path is not None:
            mask = context.labels.load(
                path, lambda p: load_mask(p, stack.geometry, stack.shape), series_label=stack.label, without="a mask"
            )
        return SeriesContent(
            image=image,
            spacing_mm=(*stack.geometry.pixel_spacing, stack.geometry.slice_spacing),
            affine_ras=stack.geometry.affine_ras(),
            header=stack.header_of_first_slice(),
            without_mask=mask is None,
            mask=mask,
            case_labels=dict(context.row.case_labels) if context.row is not None else {},
        )


class LgeStackReader:
    kind = SeriesKind.LGE_STACK

    def check(self, series: SeriesFiles) -> SeriesCheck:
        stack, rejections = build_series(series)
        return SeriesCheck(None if stack is None else CheckedStack(series, stack), tuple(rejections))

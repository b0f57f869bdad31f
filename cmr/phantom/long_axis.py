"""Where the exam's planes lie: the heart's own frame, long-axis views, localizer planes.

``HeartFrame`` ties the anatomy's coordinates (cmr.phantom.anatomy: ``x`` along the
short-axis image columns, ``y`` along its rows, ``z`` down the LV long axis from the
base plane) to DICOM patient coordinates (LPS), from exactly the values the LGE stack
writes (cmr.phantom.acquisition). A long-axis view is a plane containing the long
axis, turned about it by the view's angle (AHA: the 2-chamber view cuts the anterior
and inferior walls, the 3-chamber the anteroseptum and inferolateral wall through the
outflow tract, the 4-chamber the inferoseptum and anterolateral wall through the right
ventricle). Its image rows are perpendicular to the long axis, apex up, so that every
row lies at one level ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr.geometry import StackGeometry
from cmr.phantom.acquisition import Acquisition
from cmr.phantom.anatomy import HeartPlan, anatomical_axes

# phi (0 anterior, +90° septal, ±180° inferior, −90° lateral) that image columns run towards.
VIEW_ANGLES_DEG = {"2ch": 0.0, "3ch": 60.0, "4ch": -60.0}
# Localizer planes: (row direction, column direction) in LPS, as scanners write them.
LOCALIZER_PLANES = {
    "transverse": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass(frozen=True)
class HeartFrame:
    origin: np.ndarray  # LPS of the LV axis on the base plane
    x: np.ndarray  # short-axis image row direction (towards +column)
    y: np.ndarray  # short-axis image column direction (towards +row)
    z: np.ndarray  # LV long axis, base to apex

    @classmethod
    def of(cls, acquisition: Acquisition) -> HeartFrame:
        geometry = acquisition.geometry
        x = np.asarray(geometry.image_orientation[:3])
        y = np.asarray(geometry.image_orientation[3:])
        z = np.cross(x, y)
        z /= np.linalg.norm(z)
        centre_column = (acquisition.columns - 1) / 2 * acquisition.pixel_spacing_mm + acquisition.heart_offset_mm[0]
        centre_row = (acquisition.rows - 1) / 2 * acquisition.pixel_spacing_mm + acquisition.heart_offset_mm[1]
        origin = (
            np.asarray(geometry.first_position) + centre_column * x + centre_row * y - acquisition.slice_z_mm[0] * z
        )
        return cls(origin=origin, x=x, y=y, z=z)

    def to_patient(self, x: np.ndarray | float, y: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
        """LPS points (…, 3) of heart coordinates."""
        x, y, z = (np.asarray(v, dtype=np.float64)[..., None] for v in (x, y, z))
        return self.origin + x * self.x + y * self.y + z * self.z

    def to_heart(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        offset = np.asarray(points) - self.origin
        return offset @ self.x, offset @ self.y, offset @ self.z


@dataclass(frozen=True)
class PlaneImage:
    """One 2-D image's grid as written: orientation, top-left position, matrix."""

    orientation: tuple[float, float, float, float, float, float]
    position: tuple[float, float, float]
    rows: int
    columns: int
    pixel_mm: float

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:]))
        return normal / np.linalg.norm(normal)

    def pixel_points(self) -> np.ndarray:
        """LPS of every pixel centre, (rows, columns, 3)."""
        row_direction, column_direction = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        j = np.arange(self.columns)[None, :, None] * self.pixel_mm
        i = np.arange(self.rows)[:, None, None] * self.pixel_mm
        return np.asarray(self.position) + j * row_direction + i * column_direction

    def geometry(self, thickness_mm: float) -> StackGeometry:
        return StackGeometry(
            image_orientation=self.orientation,
            first_position=self.position,
            pixel_spacing=(self.pixel_mm, self.pixel_mm),
            slice_step=tuple(float(v) for v in thickness_mm * self.normal),  # type: ignore[arg-type]
        )


def plane_image(
    centre: np.ndarray, row_direction: np.ndarray, column_direction: np.ndarray, rows: int, columns: int, pixel: float
) -> PlaneImage:
    """The image of ``rows`` × ``columns`` pixels centred on ``centre`` (LPS), values rounded as written."""
    first = centre - (columns - 1) / 2 * pixel * row_direction - (rows - 1) / 2 * pixel * column_direction
    return PlaneImage(
        orientation=tuple(round(float(v), 6) for v in (*row_direction, *column_direction)),  # type: ignore[arg-type]
        position=tuple(round(float(v), 4) for v in first),  # type: ignore[arg-type]
        rows=rows,
        columns=columns,
        pixel_mm=pixel,
    )


@dataclass(frozen=True)
class LongAxisView:
    """A long-axis image: its grid, and each pixel's place in the heart (exact, not from rounded tags)."""

    name: str  # 2ch, 3ch, 4ch
    image: PlaneImage
    phi: float  # radians: the direction image columns run towards
    u_mm: np.ndarray  # (columns,) signed distance from the long axis along the image row
    z_mm: np.ndarray  # (rows,) level of each image row

    def in_plane_direction(self, heart: HeartPlan) -> np.ndarray:
        """(x, y) in the short-axis plane of the image's row direction."""
        anterior, septal = anatomical_axes(heart)
        return np.cos(self.phi) * anterior + np.sin(self.phi) * septal

    def heart_points(self, heart: HeartPlan, across_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z) of every pixel, (rows, columns), ``across_mm`` off the plane (partial volume)."""
        d = self.in_plane_direction(heart)
        n = np.array([-d[1], d[0]])
        x = np.broadcast_to(self.u_mm[None, :] * d[0] + across_mm * n[0], (self.z_mm.size, self.u_mm.size))
        y = np.broadcast_to(self.u_mm[None, :] * d[1] + across_mm * n[1], x.shape)
        return x, y, np.broadcast_to(self.z_mm[:, None], x.shape)


def long_axis_view(
    frame: HeartFrame,
    heart: HeartPlan,
    name: str,
    centre_u_mm: float,
    centre_z_mm: float,
    rows: int,
    columns: int,
    pixel: float,
) -> LongAxisView:
    """The ``name`` view (2ch/3ch/4ch), apex towards the top of the image."""
    phi = float(np.deg2rad(VIEW_ANGLES_DEG[name]))
    anterior, septal = anatomical_axes(heart)
    d = np.cos(phi) * anterior + np.sin(phi) * septal
    row_direction = d[0] * frame.x + d[1] * frame.y
    row_direction /= np.linalg.norm(row_direction)
    column_direction = -frame.z
    centre = frame.to_patient(centre_u_mm * d[0], centre_u_mm * d[1], centre_z_mm)
    image = plane_image(centre, row_direction, column_direction, rows, columns, pixel)
    u = centre_u_mm + (np.arange(columns) - (columns - 1) / 2) * pixel
    z = centre_z_mm - (np.arange(rows) - (rows - 1) / 2) * pixel
    return LongAxisView(name=name, image=image, phi=phi, u_mm=u, z_mm=z)


def localizer_images(frame: HeartFrame, heart: HeartPlan, matrix: int, pixel: float) -> dict[str, PlaneImage]:
    """Transverse, sagittal and coronal planes through the middle of the LV."""
    centre = frame.to_patient(0.0, 0.0, heart.long_axis_mm / 2)
    return {
        name: plane_image(centre, np.asarray(rows), np.asarray(columns), matrix, matrix, pixel)
        for name, (rows, columns) in LOCALIZER_PLANES.items()
    }


def resampled_stack(acquisition: Acquisition, pixel: float, rows: int, columns: int) -> tuple[StackGeometry, tuple]:
    """The LGE stack's planes on another matrix (same image centres): geometry and positions per slice."""
    geometry = acquisition.geometry
    row_direction = np.asarray(geometry.image_orientation[:3])
    column_direction = np.asarray(geometry.image_orientation[3:])
    shift = ((acquisition.columns - 1) * acquisition.pixel_spacing_mm - (columns - 1) * pixel) / 2 * row_direction + (
        (acquisition.rows - 1) * acquisition.pixel_spacing_mm - (rows - 1) * pixel
    ) / 2 * column_direction
    first = tuple(round(float(v), 4) for v in np.asarray(geometry.first_position) + shift)
    resampled = StackGeometry(
        image_orientation=geometry.image_orientation,
        first_position=first,  # type: ignore[arg-type]
        pixel_spacing=(pixel, pixel),
        slice_step=geometry.slice_step,
    )
    positions = tuple(tuple(round(v, 4) for v in resampled.slice_position(k)) for k in range(acquisition.n_slices))
    return resampled, positions

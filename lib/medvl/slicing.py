"""Taking 2D slices out of (k, j, i) numpy volumes along the ITK axes i, j, k.

The one place that knows which numpy axis an ITK axis is and how a slice's rows and
columns relate to the volume: along "k" a slice is `array[k]` (rows j, cols i); along
"j" it is `array[:, j, :]` (rows k, cols i); along "i" it is `array[:, :, i]` (rows k,
cols j). 2D points are (x=col, y=row).
"""

from __future__ import annotations

import numpy as np

from medvl.errors import PromptError

AXES = ("i", "j", "k")
_NUMPY_AXIS = {"i": 2, "j": 1, "k": 0}
# ITK index position of (row, col) of a slice along each axis
_ROW_COL = {"k": (1, 0), "j": (2, 0), "i": (2, 1)}


def check_axis(axis: str) -> str:
    if axis not in _NUMPY_AXIS:
        raise PromptError(f"axis {axis!r} is not one of i, j, k")
    return axis


def numpy_axis(axis: str) -> int:
    return _NUMPY_AXIS[check_axis(axis)]


def axis_position(axis: str) -> int:
    """Position of `axis` in an ITK (i, j, k) index."""
    return AXES.index(check_axis(axis))


def num_slices(shape_kji, axis: str) -> int:
    return shape_kji[numpy_axis(axis)]


def take_slice(array: np.ndarray, axis: str, index: int) -> np.ndarray:
    """2D view (rows, cols) of a (k, j, i) array at `index` along `axis`."""
    return np.take(array, index, axis=numpy_axis(axis))


def put_slice(array: np.ndarray, axis: str, index: int, values: np.ndarray) -> None:
    sl = [slice(None)] * 3
    sl[numpy_axis(axis)] = index
    array[tuple(sl)] = values


def slice_pixel_spacing(spacing_ijk, axis: str) -> tuple[float, float]:
    """(row_mm, col_mm) of slices along `axis` from ITK-order spacing (si, sj, sk)."""
    r, c = _ROW_COL[check_axis(axis)]
    return float(spacing_ijk[r]), float(spacing_ijk[c])


def index_to_slice_xy(ijk, axis: str) -> tuple[int, tuple[float, float]]:
    """ITK (i, j, k) -> (slice index along axis, (x=col, y=row) in that slice)."""
    r, c = _ROW_COL[check_axis(axis)]
    return int(ijk[axis_position(axis)]), (float(ijk[c]), float(ijk[r]))


def slice_xy_to_index(slice_index: int, xy, axis: str) -> tuple[int, int, int]:
    """Inverse of `index_to_slice_xy` for integer voxels."""
    r, c = _ROW_COL[check_axis(axis)]
    ijk = [0, 0, 0]
    ijk[axis_position(axis)] = int(slice_index)
    ijk[c], ijk[r] = int(round(xy[0])), int(round(xy[1]))
    return tuple(ijk)


def bbox2d(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive (x0, y0, x1, y1) of the True pixels of a 2D mask, None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])

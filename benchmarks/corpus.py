"""The benchmark corpus: where its cubes live, which family each belongs to, and loading one.

The corpus is a folder of NetCDF cubes, each holding a variable ``data`` with dims
(time, band, y, x) (a (time, y, x) variable is read as one band). The folder is, first
found: the ``--corpus`` option of a benchmark, the ``EOCUBE_CORPUS`` environment
variable, or ``tests/data`` (the cubes shipped in the repository). Benchmarks that name
their cubes need those names in the folder.

:func:`load_cube` is the one way a benchmark reads a cube: the ``data`` variable as a
(T, B, Y, X) array in its own dtype, its invalid value, and the dataset eocube writes,
optionally cropped in time and space.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / "tests" / "data"
CORPUS_ENV = "EOCUBE_CORPUS"


def corpus_dir(folder: Path | None = None) -> Path:
    """The corpus folder: ``folder`` if given, else ``$EOCUBE_CORPUS``, else ``tests/data``.

    Parameters
    ----------
    folder : Path, optional
        A folder chosen on the command line (``--corpus``).

    Returns
    -------
    Path
        The folder the benchmark reads its cubes from.
    """
    if folder is not None:
        return Path(folder)
    from_env = os.environ.get(CORPUS_ENV)
    return Path(from_env) if from_env else TEST_DATA


def add_corpus_option(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """Add ``--corpus DIR`` (and any ``aliases``) to a benchmark's command line.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The benchmark's parser; the folder lands in ``args.corpus`` (None: the default).
    *aliases : str
        Older spellings of the option kept working (``--data`` for benchmarks.rd).
    """
    parser.add_argument(
        "--corpus",
        *aliases,
        dest="corpus",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"folder of NetCDF cubes (default: ${CORPUS_ENV}, else tests/data)",
    )


def cube_names(folder: Path | None = None) -> list[str]:
    """Names (file stems) of every cube of the corpus, sorted.

    Parameters
    ----------
    folder : Path, optional
        The corpus folder (default: :func:`corpus_dir`).

    Returns
    -------
    list of str
        One name per ``*.nc`` file.
    """
    return sorted(p.stem for p in corpus_dir(folder).glob("*.nc"))


def has_cube(name: str, folder: Path | None = None) -> bool:
    """Whether the corpus holds the cube ``name``."""
    return (corpus_dir(folder) / f"{name}.nc").is_file()


def cube_path(name: str, folder: Path | None = None) -> Path:
    """The NetCDF file of the cube ``name``.

    Parameters
    ----------
    name : str
        The cube's name (its file stem).
    folder : Path, optional
        The corpus folder (default: :func:`corpus_dir`).

    Returns
    -------
    Path
        ``<corpus>/<name>.nc``.

    Raises
    ------
    FileNotFoundError
        When the corpus has no such cube, naming the folder and how to choose another.
    """
    path = corpus_dir(folder) / f"{name}.nc"
    if not path.is_file():
        raise FileNotFoundError(
            f"cube {name!r} is not in the corpus {path.parent} "
            f"(choose the folder with --corpus or ${CORPUS_ENV})"
        )
    return path


def first_dates(
    names: Sequence[str], dates: int, folder: Path | None = None
) -> Iterator[tuple[str, np.ndarray, float | None]]:
    """Each named cube's first ``dates`` dates as one (T, B, Y, X) block, in its own dtype,
    with the cube's nodata value.

    Cubes missing from the corpus are skipped aloud (:func:`present`). The nodata value
    must go to the codec and to the metric: left as data, a fill of 0 or 65535 stretches
    a band's codes and its hard edges weigh in the comparison (a third of the Landsat 8
    series' values, a sixth of WorldCereal 12 x 9's).

    Parameters
    ----------
    names : sequence of str
        The cubes, in the order they are yielded.
    dates : int
        Time steps kept from the start of each cube.
    folder : Path, optional
        The corpus folder (default: :func:`corpus_dir`).

    Yields
    ------
    tuple of (str, numpy.ndarray, float or None)
        The cube's name, its block and its nodata value (None: only NaN is invalid).
    """
    for name in present(names, folder):
        cube = load_cube(name, folder, max_time=dates)
        yield name, cube.values, cube.nodata


def present(names: Sequence[str], folder: Path | None = None) -> Iterator[str]:
    """The named cubes the corpus holds, in order; each missing one is skipped with a
    line saying so (a benchmark naming dev-corpus cubes still runs on ``tests/data``)."""
    for name in names:
        if has_cube(name, folder):
            yield name
        else:
            print(f"{name}: not in {corpus_dir(folder)}, skipped", flush=True)


def family(name: str) -> str:
    """s2, landsat, era5, climate or ocean: which goals of benchmarks.rd a cube belongs to."""
    if name.startswith("s2_"):
        return "s2"
    if name.startswith(("l8_", "landsat")):
        return "landsat"
    if name.startswith("era5"):
        return "era5"
    if name.startswith("ocean"):
        return "ocean"
    return "climate"  # ERA-Interim, gridded observations, model SST, radar precipitation


@dataclass
class Cube:
    """One cube of the corpus as a (T, B, Y, X) array and the dataset written by eocube.

    ``dataset`` holds only the ``data`` variable (other variables such as the cloud
    ``mask`` layer are dropped: every method compresses the same values) with all its
    coordinates and attributes, so the store's bytes are those a user of this variable
    would keep.
    """

    name: str
    values: np.ndarray
    nodata: float | None
    dataset: Any  # xarray.Dataset
    crop: str | None = None
    source_shape: tuple[int, ...] = ()
    bands: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(T, B, Y, X) of the values."""
        T, B, Y, X = self.values.shape
        return T, B, Y, X

    @property
    def family(self) -> str:
        """The cube's family (see :func:`family`)."""
        return family(self.name)

    @property
    def is_integer(self) -> bool:
        """Whether the values are integers."""
        return self.values.dtype.kind in "iu"

    @property
    def valid(self) -> np.ndarray:
        """Where the values are valid: finite and not ``nodata``."""
        from eocube import metrics

        return metrics.valid_mask(self.values, self.nodata)

    def describe(self) -> dict[str, Any]:
        """The cube's figures as a benchmark records them (shape, dtype, range, crop...)."""
        valid = self.valid
        v = self.values[valid]
        return {
            "cube": self.name,
            "family": self.family,
            "dtype": str(self.values.dtype),
            "shape": list(self.shape),
            "source_shape": list(self.source_shape),
            "crop": self.crop,
            "values": int(self.values.size),
            "original_bytes": int(self.values.nbytes),
            "nodata": self.nodata,
            "invalid_fraction": float(1 - valid.mean()),
            "value_min": float(v.min()) if v.size else None,
            "value_max": float(v.max()) if v.size else None,
            "integer": self.is_integer,
            "time_series": self.shape[0] > 1,
        }


def _nodata(attrs: dict[str, Any]) -> float | None:
    """The invalid value of ``data``: its ``nodata`` attribute, else a non-NaN ``_FillValue``.

    A NaN ``_FillValue`` adds nothing: NaN is invalid in any float cube.
    """
    value = attrs.get("nodata", attrs.get("_FillValue"))
    if value is None or math.isnan(float(value)):
        return None
    return float(value)


def _best_window(valid: np.ndarray, wy: int, wx: int) -> tuple[int, int]:
    """Top-left corner of the wy × wx window (on a coarse grid) with most valid values."""
    Y, X = valid.shape
    counts = np.asarray(valid, np.int64).cumsum(0).cumsum(1)
    counts = np.pad(counts, ((1, 0), (1, 0)))
    best, corner = -1, ((Y - wy) // 2, (X - wx) // 2)
    step_y, step_x = max(1, (Y - wy) // 8), max(1, (X - wx) // 8)
    for y0 in range(0, Y - wy + 1, step_y):
        for x0 in range(0, X - wx + 1, step_x):
            n = (
                counts[y0 + wy, x0 + wx]
                - counts[y0, x0 + wx]
                - counts[y0 + wy, x0]
                + counts[y0, x0]
            )
            if n > best:
                best, corner = int(n), (y0, x0)
    return corner  # counts: valid values over all dates and bands of each pixel


def _window_side(max_values: int, T: int, B: int, Y: int, X: int) -> tuple[int, int]:
    """A square-ish y × x window holding at most ``max_values`` values over T × B."""
    side = math.sqrt(max_values / (T * B))
    wy, wx = min(Y, int(side)), min(X, int(side))
    if wy == Y:
        wx = min(X, int(max_values / (T * B * Y)))
    elif wx == X:
        wy = min(Y, int(max_values / (T * B * X)))
    return wy, wx


def load_cube(
    name: str,
    folder: Path | None = None,
    *,
    max_values: int | None = None,
    max_time: int | None = None,
) -> Cube:
    """Load a cube; crop time to ``max_time`` steps and y/x to at most ``max_values`` values.

    The spatial crop is square-ish, keeps every band and date, and is placed where the
    most values are valid (a NaN-dominated ocean scene would otherwise measure NaNs).

    Parameters
    ----------
    name : str
        The cube's name in the corpus.
    folder : Path, optional
        The corpus folder (default: :func:`corpus_dir`).
    max_values : int, optional
        Crop y and x so that the cube holds at most this many values.
    max_time : int, optional
        Keep the first ``max_time`` time steps only.

    Returns
    -------
    Cube
        The values in their own dtype, read without masking or scaling, and the crop made.
    """
    import xarray as xr

    with xr.open_dataset(cube_path(name, folder), mask_and_scale=False) as src:
        ds = src[["data"]].load()
    da = ds["data"]
    if da.ndim == 3:
        ds = ds.assign(data=da.expand_dims("band", axis=1))
        da = ds["data"]
    ds = ds.transpose(*("time", "band", "y", "x"), ...)
    source_shape = tuple(int(s) for s in ds["data"].shape)
    nodata = _nodata(da.attrs)
    crops = []
    T, B, Y, X = source_shape
    if max_time is not None and max_time < T:
        ds = ds.isel(time=slice(0, max_time))
        crops.append(f"first {max_time} of {T} time steps")
        T = max_time
    if max_values is not None and max_values < T * B * Y * X:
        wy, wx = _window_side(max_values, T, B, Y, X)
        from eocube import metrics

        valid = metrics.valid_mask(ds["data"].values, nodata).sum(axis=(0, 1))
        y0, x0 = _best_window(valid, wy, wx)
        ds = ds.isel(y=slice(y0, y0 + wy), x=slice(x0, x0 + wx))
        crops.append(f"y {y0}:{y0 + wy}, x {x0}:{x0 + wx} of {Y} x {X}")
    values = np.ascontiguousarray(ds["data"].values)
    bands = [str(b) for b in ds["band"].values] if "band" in ds.coords else []
    return Cube(
        name=name,
        values=values,
        nodata=nodata,
        dataset=ds,
        crop="; ".join(crops) or None,
        source_shape=source_shape,
        bands=bands,
    )

"""PyTorch datasets over eocube stores and releases, decoding on the CPU or on NVDEC.

- :class:`CubeDataset`: map-style, the windows of one cube.
- :class:`StreamingCubeDataset`: iterable over every window of many cubes (a release
  catalog or a list of stores), a new permutation each epoch, split without overlap
  across ``torch.distributed`` ranks and DataLoader workers, read chunk by chunk so that
  each decoded chunk serves all its windows, resumable mid-epoch.
- :class:`CubeDataLoader`: a DataLoader that tells its StreamingCubeDataset how many
  batches the training loop took, so that ``dataset.state_dict()`` is exact with worker
  processes too.

A sample is a dict: ``"data"`` a float32 tensor (time, band, y, x) of the window (one
entry per variable, under its name, when several variables are read), ``"cube"`` the
cube's id and ``"offset"`` the window's origin (t, y, x) in the cube. Variables whose dims
are in another order (``(band, time, y, x)``, ``(y, x, time)``...) are found by their dims'
roles (:mod:`eocube.dims`) and delivered in (time, band, y, x) order all the same.

NaN values (gaps, clouds, land in a sea-surface cube) reach the tensors as NaN by default
(``nan="keep"``), so a loss computed over them is NaN. ``nan=0.0`` (any number) replaces
them with that value; ``nan="mask"`` replaces them with 0 and adds a boolean tensor of the
same shape, True where the value is valid: ``"valid"`` next to ``"data"``, or
``"<name>_valid"`` per variable when several are read.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np
import xarray as xr

try:
    import torch
    from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError(
        "eocube.torch needs PyTorch: install it with `pip install 'eocube[torch]'`"
    ) from exc

from eocube.dims import cube_roles, recognise
from eocube.gpu import GPUFallbackWarning, NvdecDecoder

DEFAULT_WINDOW = {"time": 8, "y": 64, "x": 64}
_AXES = ("time", "y", "x")

Sample = dict[str, Any]
NanPolicy = Literal["keep", "mask"] | float
"""What samples do with NaN: keep it, replace it with a number, or mask it (see the module)."""


# --- what a cube offers ------------------------------------------------------------------


@dataclass(frozen=True)
class _Cube:
    """A cube as the datasets see it: where it is, its variables, sizes and chunks."""

    id: str
    source: Any  # a path/URL, or an xarray.Dataset
    storage_options: Mapping[str, Any] | None
    variables: tuple[str, ...]
    # per variable: role -> dim name, in (time, [band,] y, x) order whatever the variable's
    # own order, so that indexing by role and transposing to this order give canonical arrays
    roles: tuple[Mapping[str, Hashable], ...]
    sizes: tuple[int, int, int]  # time, y, x
    chunks: tuple[int, int, int]
    band_index: tuple[int, ...] | None  # positions of the selected bands, None: all


def _open(source: Any, storage_options: Mapping[str, Any] | None) -> xr.Dataset:
    if isinstance(source, xr.Dataset):
        return source
    if isinstance(source, xr.DataArray):
        return source.to_dataset(name=source.name if source.name is not None else "data")
    path = os.fspath(source) if isinstance(source, os.PathLike) else source
    if isinstance(path, str) and path.rstrip("/").endswith((".nc", ".nc4", ".h5")):
        return xr.open_dataset(path)
    import zarr

    from eocube.backend import open_dataset

    options = dict(storage_options) if storage_options else None
    if "eocube" in zarr.open_group(path, mode="r", storage_options=options).attrs:
        return open_dataset(path, storage_options=storage_options)
    # any other zarr store (a baseline, the original data)
    return xr.open_dataset(path, engine="zarr", storage_options=options)


def _default_id(source: Any) -> str:
    if isinstance(source, xr.Dataset | xr.DataArray):
        origin = source.encoding.get("source")
        return _default_id(origin) if origin else str(source.attrs.get("id", "cube"))
    name = str(os.fspath(source) if isinstance(source, os.PathLike) else source).rstrip("/")
    name = name.rsplit("/", 1)[-1]
    for suffix in (".eocube", ".zarr", ".nc"):
        name = name.removesuffix(suffix)
    return name


def _describe(
    source: Any,
    *,
    variables: Sequence[str] | None,
    bands: Sequence[Any] | None,
    cube_id: str | None,
    storage_options: Mapping[str, Any] | None,
) -> _Cube:
    ds = _open(source, storage_options)
    names = (
        list(variables)
        if variables is not None
        else [str(n) for n, v in ds.data_vars.items() if cube_roles(v) is not None]
    )
    if not names:
        raise ValueError(
            f"{_default_id(source)}: no cube variable with dims time, [band,] y and x "
            "(in any order)"
        )
    roles_per_variable: list[Mapping[str, Hashable]] = []
    sizes: tuple[int, ...] | None = None
    chunks: tuple[int, ...] | None = None
    band_index: tuple[int, ...] | None = None
    for name in names:
        if name not in ds.data_vars:
            raise KeyError(
                f"{_default_id(source)} has no variable {name!r}; it has {list(ds.data_vars)}"
            )
        var = ds[name]
        recognised = recognise(var)
        if recognised.roles is None:
            raise ValueError(f"variable {name!r} is not a cube variable: {recognised.reason}")
        roles = recognised.roles
        shape = tuple(var.sizes[roles[a]] for a in _AXES)
        if sizes is not None and shape != sizes:
            raise ValueError(f"variables {names} differ in (time, y, x) sizes: {sizes} vs {shape}")
        sizes = shape
        # preferred_chunks is keyed by dim name, so it holds whatever the variable's order
        preferred = var.encoding.get("preferred_chunks") or {}
        stored = tuple(int(preferred.get(roles[a], shape[i])) for i, a in enumerate(_AXES))
        chunks = stored if chunks is None else chunks
        roles_per_variable.append(roles)
        if bands is not None and "band" in roles:
            band_index = _band_positions(var[roles["band"]], bands)
    if bands is not None and band_index is None:
        raise ValueError(f"variables {names} have no band dim to select bands from")
    assert sizes is not None
    assert chunks is not None
    return _Cube(
        id=cube_id if cube_id is not None else _default_id(source),
        source=source,
        storage_options=storage_options,
        variables=tuple(names),
        roles=tuple(roles_per_variable),
        sizes=(sizes[0], sizes[1], sizes[2]),
        chunks=(chunks[0], chunks[1], chunks[2]),
        band_index=band_index,
    )


def _band_positions(coord: xr.DataArray, bands: Sequence[Any]) -> tuple[int, ...]:
    labels = list(coord.values)
    out = []
    for b in bands:
        if isinstance(b, int | np.integer) and not isinstance(b, bool) and b not in labels:
            if not -len(labels) <= b < len(labels):
                raise IndexError(f"band {b} out of range for {len(labels)} bands")
            out.append(int(b) % len(labels))
        elif b in labels:
            out.append(labels.index(b))
        else:
            raise KeyError(f"band {b!r} not among {labels}")
    return tuple(out)


def _sizes_by_role(sizes: Mapping[Any, int], cube: _Cube, argument: str) -> dict[str, int]:
    """``sizes`` keyed by role (time, y, x), from keys that are roles or the cube's dim names."""
    role_of: dict[Hashable, str] = {role: role for role in _AXES}
    for roles in cube.roles:
        for role in _AXES:
            role_of.setdefault(roles[role], role)
    by_role = {}
    for key, size in sizes.items():
        found = role_of.get(key)
        if found is None:
            raise ValueError(f"{argument} keys are time, y, x (or their dim names), got {key!r}")
        by_role[found] = int(size)
    return by_role


def _window_and_stride(
    window: Mapping[str, int], cube: _Cube, stride: Mapping[str, int] | None
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Window size and stride along (time, y, x); a window larger than the cube is allowed."""
    win_by_role = _sizes_by_role(window, cube, "window")
    stride_by_role = _sizes_by_role(stride or {}, cube, "stride")
    win = tuple(win_by_role.get(a, n) for a, n in zip(_AXES, cube.sizes, strict=True))
    strides = tuple(stride_by_role.get(a, w) for a, w in zip(_AXES, win, strict=True))
    for a, w, s in zip(_AXES, win, strides, strict=True):
        if w <= 0 or s <= 0:
            raise ValueError(f"window and stride along {a} must be positive, got {w} and {s}")
    return win, strides  # type: ignore[return-value]


def _size_text(cube: _Cube) -> str:
    """The cube's size as ``time=..., y=..., x=...`` for messages."""
    return ", ".join(f"{a}={n}" for a, n in zip(_AXES, cube.sizes, strict=True))


def _window_sizes(
    window: Mapping[str, int], cube: _Cube, stride: Mapping[str, int] | None
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Window size and stride along (time, y, x); raises if the window exceeds the cube."""
    win, strides = _window_and_stride(window, cube, stride)
    for a, w, n in zip(_AXES, win, cube.sizes, strict=True):
        if w > n:
            raise ValueError(f"cube {cube.id!r}: window {a}={w} is larger than the cube ({n})")
    return win, strides


def _origins(cube: _Cube, win: tuple[int, ...], strides: tuple[int, ...]) -> list[np.ndarray]:
    return [np.arange(0, n - w + 1, s) for n, w, s in zip(cube.sizes, win, strides, strict=True)]


# --- reading windows ---------------------------------------------------------------------


class _Notifier:
    """Says a GPU fallback once per dataset (copies made for workers inherit 'said')."""

    def __init__(self) -> None:
        self.said = False

    def __call__(self, message: str) -> None:
        if not self.said:
            self.said = True
            warnings.warn(message, GPUFallbackWarning, stacklevel=3)


class _Reader:
    """Reads the windows of one cube in one process, decoding whole stored chunks."""

    def __init__(self, cube: _Cube, gpu: bool, notify: _Notifier, cache_chunks: int) -> None:
        self.cube = cube
        self.ds = _open(cube.source, cube.storage_options)
        self.cache: OrderedDict[tuple[int, ...], dict[str, np.ndarray]] = OrderedDict()
        self.capacity = max(1, cache_chunks)
        self.lock = threading.Lock()
        self.decoder: NvdecDecoder | None = None
        self.payloads: dict[str, Any] = {}
        if gpu:
            self._setup_gpu(notify)

    def _setup_gpu(self, notify: _Notifier) -> None:
        """Decode the video-coded variables of GPU-decodable profiles on NVDEC.

        Variables stored otherwise (masks, coordinates-like cubes kept losslessly with
        zstd) are read on the CPU without a warning; a video profile NVDEC cannot decode
        is reported once.
        """
        import zarr

        from eocube.codec import VideoCodec
        from eocube.gpu import NvdecDecoder
        from eocube.profiles import get_profile
        from eocube.storage import ChunkPayloads

        names = []
        for name in self.cube.variables:
            codec = self.ds[name].encoding.get("serializer")
            if not isinstance(codec, VideoCodec):
                continue
            if not get_profile(codec.profile).gpu_decodable:
                notify(
                    f"profile {codec.profile!r} is not GPU-decodable: "
                    f"decoding {self.cube.id}/{name} on the CPU"
                )
                continue
            names.append(name)
        if not names:
            return
        source = self.cube.source
        if isinstance(source, xr.Dataset | xr.DataArray):
            notify(f"{self.cube.id} was given as a Dataset: give its store to decode on the GPU")
            return
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        options = self.cube.storage_options
        group = zarr.open_group(
            source, mode="r", zarr_format=3, storage_options=dict(options) if options else None
        )
        self.payloads = {n: ChunkPayloads(group[n]) for n in names}  # type: ignore[arg-type]
        self.decoder = NvdecDecoder(on_fallback=notify)

    def chunk(self, key: tuple[int, int, int]) -> dict[str, np.ndarray]:
        """Values of stored chunk ``key`` (chunk grid position along time, y, x)."""
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                return hit
        block = {
            name: self._read(name, roles, key)
            for name, roles in zip(self.cube.variables, self.cube.roles, strict=True)
        }
        with self.lock:
            self.cache[key] = block
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        return block

    def release(self, key: tuple[int, int, int]) -> None:
        with self.lock:
            self.cache.pop(key, None)

    def _bounds(self, key: tuple[int, int, int]) -> list[slice]:
        return [
            slice(k * c, min((k + 1) * c, n))
            for k, c, n in zip(key, self.cube.chunks, self.cube.sizes, strict=True)
        ]

    def _read(
        self, name: str, roles: Mapping[str, Hashable], key: tuple[int, int, int]
    ) -> np.ndarray:
        """Values of variable ``name`` in stored chunk ``key``, as (time, band, y, x)."""
        bounds = self._bounds(key)
        if name in self.payloads:
            values = self._read_payload(name, roles, key, bounds)
        else:
            var = self.ds[name]
            sel = {roles["time"]: bounds[0], roles["y"]: bounds[1], roles["x"]: bounds[2]}
            # roles are in (time, [band,] y, x) order whatever the variable's own order
            values = np.asarray(var.isel(sel).transpose(*roles.values()).values)
        if "band" not in roles:
            values = values[:, None]
        elif self.cube.band_index is not None:
            values = values[:, list(self.cube.band_index)]
        return values

    def _read_payload(
        self,
        name: str,
        roles: Mapping[str, Hashable],
        key: tuple[int, int, int],
        bounds: list[slice],
    ) -> np.ndarray:
        """Decode stored chunk ``key`` of ``name`` on NVDEC, as (time, [band,] y, x).

        The writer stores cube variables as (time, [band,] y, x) whatever their order in
        the written Dataset (the reader transposes them back), so the chunk coordinates
        and the decoded chunk are in that order, the order of ``roles``.
        """
        from eocube.gpu import decode_chunk_with

        assert self.decoder is not None
        var = self.ds[name]
        has_band = "band" in roles
        coords = (key[0], 0, key[1], key[2]) if has_band else key  # bands are one chunk
        payload = self.payloads[name].get(coords)
        shape = tuple(b.stop - b.start for b in bounds)
        if payload is None:  # a chunk never written: all fill value
            fill = var.encoding.get("fill_value", var.encoding.get("_FillValue", 0))
            nb = var.sizes[roles["band"]] if has_band else 1
            raw = np.full(
                (shape[0], nb, shape[1], shape[2]), fill, var.encoding.get("dtype", var.dtype)
            )
        else:
            raw = decode_chunk_with(payload, self.decoder)[: shape[0], :, : shape[1], : shape[2]]
        if not has_band:
            raw = raw[:, 0]
        enc = var.encoding
        attrs = {
            k: enc[k]
            for k in ("_FillValue", "missing_value", "scale_factor", "add_offset")
            if k in enc
        }
        decoded = xr.conventions.decode_cf_variable(
            name,
            xr.Variable(tuple(roles.values()), raw, attrs=attrs),
            mask_and_scale=True,
            decode_times=False,
        )
        return np.asarray(decoded.values)

    def window(
        self, origin: tuple[int, int, int], size: tuple[int, int, int]
    ) -> dict[str, np.ndarray]:
        """Float32 (time, band, y, x) arrays of the window at ``origin`` per variable.

        The arrays are the caller's own, never views of cached chunks: samples (and
        transforms that work in place) cannot alter the values of later windows.
        """
        first = [o // c for o, c in zip(origin, self.cube.chunks, strict=True)]
        last = [(o + s - 1) // c for o, s, c in zip(origin, size, self.cube.chunks, strict=True)]
        if first == last:  # the common case: the window lies in one chunk
            key = (first[0], first[1], first[2])
            block = self.chunk(key)
            lo = [o - k * c for o, k, c in zip(origin, key, self.cube.chunks, strict=True)]
            return {
                n: np.array(
                    b[lo[0] : lo[0] + size[0], :, lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]],
                    dtype=np.float32,
                    order="C",
                    copy=True,
                )
                for n, b in block.items()
            }
        out: dict[str, np.ndarray] = {}
        for kt in range(first[0], last[0] + 1):
            for ky in range(first[1], last[1] + 1):
                for kx in range(first[2], last[2] + 1):
                    key = (kt, ky, kx)
                    block = self.chunk(key)
                    src, dst = [], []
                    for o, s, k, c in zip(origin, size, key, self.cube.chunks, strict=True):
                        a, b = max(o, k * c), min(o + s, (k + 1) * c)
                        src.append(slice(a - k * c, b - k * c))
                        dst.append(slice(a - o, b - o))
                    for n, values in block.items():
                        if n not in out:
                            out[n] = np.empty(
                                (size[0], values.shape[1], size[1], size[2]), np.float32
                            )
                        out[n][dst[0], :, dst[1], dst[2]] = values[src[0], :, src[1], src[2]]
        return out


def _nan_policy(nan: Any) -> NanPolicy:
    """Check ``nan=``: ``"keep"``, ``"mask"`` or a number to replace NaN with."""
    expected = "nan= takes 'keep', 'mask' or a number to replace NaN with"
    if isinstance(nan, str):
        if nan in ("keep", "mask"):
            return nan  # type: ignore[return-value]
        raise ValueError(f"{expected}, got {nan!r}")
    if isinstance(nan, bool) or not isinstance(nan, Real):
        raise TypeError(f"{expected}, got {nan!r} of type {type(nan).__name__}")
    value = float(nan)
    if math.isnan(value):
        raise ValueError(f"{expected}, got NaN: to keep NaN, pass nan='keep'")
    return value


def _valid_key(name: str, variables: Sequence[str]) -> str:
    """Sample key of the validity mask of variable ``name`` (under ``nan="mask"``)."""
    return "valid" if len(variables) == 1 else f"{name}_valid"


class _Windows:
    """Shared by both datasets: cubes, windows, decoding, samples."""

    def __init__(
        self,
        cubes: list[_Cube],
        window: Mapping[str, int],
        stride: Mapping[str, int] | None,
        transform: Callable[[Sample], Any] | None,
        device: str | torch.device,
        cache_chunks: int,
        nan: NanPolicy = "keep",
    ) -> None:
        self.cubes = cubes
        self.window = dict(window)
        self.transform = transform
        self.nan = _nan_policy(nan)
        if self.nan == "mask":
            for cube in cubes:
                masks = {_valid_key(n, cube.variables) for n in cube.variables}
                data_keys = {"data"} if len(cube.variables) == 1 else set(cube.variables)
                clash = sorted(masks & (data_keys | {"cube", "offset"}))
                if clash:
                    raise ValueError(
                        f"nan='mask' adds the keys {sorted(masks)} to samples, but {clash} "
                        f"already name something in the samples of cube {cube.id!r}"
                    )
        self.cache_chunks = cache_chunks
        sizes = [_window_sizes(window, c, stride) for c in cubes]
        self.win = [w for w, _ in sizes]
        self.origins = [_origins(c, w, s) for c, (w, s) in zip(cubes, sizes, strict=True)]
        counts = [int(np.prod([len(o) for o in orig])) for orig in self.origins]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.notify = _Notifier()
        dev = torch.device(device)
        self.gpu = dev.type == "cuda"
        if self.gpu and not torch.cuda.is_available():
            self.notify("device='cuda' but CUDA is not available: decoding on the CPU, CPU tensors")
            self.gpu, dev = False, torch.device("cpu")
        self.device = dev
        self._readers: dict[int, _Reader] = {}

    @property
    def n_windows(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[int, tuple[int, int, int]]:
        """Cube number and window origin of global window ``index``."""
        c = int(np.searchsorted(self.starts, index, side="right") - 1)
        ot, oy, ox = self.origins[c]
        i = index - int(self.starts[c])
        it, rest = divmod(i, len(oy) * len(ox))
        iy, ix = divmod(rest, len(ox))
        return c, (int(ot[it]), int(oy[iy]), int(ox[ix]))

    def chunk_groups(self) -> np.ndarray:
        """Per global window, the number of the stored chunk holding its origin."""
        groups, base = [], 0
        for cube, orig in zip(self.cubes, self.origins, strict=True):
            grid = [math.ceil(n / c) for n, c in zip(cube.sizes, cube.chunks, strict=True)]
            gt, gy, gx = (o // c for o, c in zip(orig, cube.chunks, strict=True))
            g = (gt[:, None, None] * grid[1] + gy[None, :, None]) * grid[2] + gx[None, None, :]
            groups.append(base + g.ravel())
            base += int(np.prod(grid))
        return np.concatenate(groups) if groups else np.zeros(0, np.int64)

    def reader(self, c: int) -> _Reader:
        r = self._readers.get(c)
        if r is None:
            r = self._readers[c] = _Reader(self.cubes[c], self.gpu, self.notify, self.cache_chunks)
        return r

    def chunk_key(self, c: int, origin: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(o // k for o, k in zip(origin, self.cubes[c].chunks, strict=True))  # type: ignore[return-value]

    def sample(self, c: int, origin: tuple[int, int, int]) -> Any:
        cube = self.cubes[c]
        values = self.reader(c).window(origin, self.win[c])
        masks: dict[str, np.ndarray] = {}
        # window() hands out arrays of their own: replacing NaN in place is safe
        if self.nan == "mask":
            for name, array in values.items():
                valid = ~np.isnan(array)
                array[~valid] = 0.0
                masks[_valid_key(name, cube.variables)] = valid
        elif isinstance(self.nan, float):
            for array in values.values():
                array[np.isnan(array)] = self.nan
        if len(cube.variables) == 1:
            values = {"data": values[cube.variables[0]]}
        on_gpu = self.device.type != "cpu" and get_worker_info() is None
        sample: Sample = {}
        for name, array in {**values, **masks}.items():
            t = torch.from_numpy(array)
            sample[name] = t.to(self.device, non_blocking=True) if on_gpu else t
        sample["cube"] = cube.id
        sample["offset"] = origin
        return self.transform(sample) if self.transform is not None else sample

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = {}  # stores are opened again, lazily, in each worker
        return state


# --- the map-style dataset ---------------------------------------------------------------


class CubeDataset(Dataset):
    """Windows of one cube, map-style.

    Parameters
    ----------
    store_or_dataset : str, os.PathLike or xarray.Dataset
        An eocube store (path or fsspec URL), any zarr v3 store or NetCDF file, or an
        opened Dataset (lazy or in memory). Cube variables may have their dims in any
        order; samples are (time, band, y, x) all the same.
    window : mapping
        Window size along time, y and x (roles or dim names); a missing axis spans the
        cube. A window larger than the cube raises ValueError.
    stride : mapping, optional
        Step between window origins per axis; default: the window (no overlap). Windows
        that would cross the cube's far edge are left out.
    bands : sequence, optional
        Band labels (or positions) to keep, in this order; default: all.
    variables : sequence of str, optional
        Cube variables to read; default: every cube variable. With one variable the
        sample holds it as ``"data"``, with several under their names.
    transform : callable, optional
        Applied to each sample dict (after ``nan=``); its result is the sample.
    device : str or torch.device
        ``"cuda"`` decodes on NVDEC (GPU-decodable profiles) and returns CUDA tensors in
        the main process (worker processes return CPU tensors). Without a GPU, or for
        other profiles, the CPU decodes, with one :class:`GPUFallbackWarning`.
    nan : {"keep", "mask"} or float
        ``"keep"`` (default): NaN values reach the tensors as NaN. A number: NaN is
        replaced by it. ``"mask"``: NaN is replaced by 0 and the sample gets a boolean
        tensor of the same shape, True where the value is valid, as ``"valid"`` (one
        variable, read as ``"data"``) or ``"<name>_valid"`` per variable (several).
    cube_id : str, optional
        The ``"cube"`` of samples; default: the store's name.
    storage_options : mapping, optional
        Passed to fsspec.
    cache_chunks : int
        Decoded chunks kept per process (neighbouring windows share them).
    """

    def __init__(
        self,
        store_or_dataset: Any,
        *,
        window: Mapping[str, int] = DEFAULT_WINDOW,
        stride: Mapping[str, int] | None = None,
        bands: Sequence[Any] | None = None,
        variables: Sequence[str] | None = None,
        transform: Callable[[Sample], Any] | None = None,
        device: str | torch.device = "cpu",
        nan: NanPolicy = "keep",
        cube_id: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        cache_chunks: int = 4,
    ) -> None:
        nan = _nan_policy(nan)  # before opening anything: a typo fails fast
        cube = _describe(
            store_or_dataset,
            variables=variables,
            bands=bands,
            cube_id=cube_id,
            storage_options=storage_options,
        )
        self._w = _Windows([cube], window, stride, transform, device, cache_chunks, nan)

    def __len__(self) -> int:
        return self._w.n_windows

    def offset(self, index: int) -> tuple[int, int, int]:
        """The origin (t, y, x) of window ``index``."""
        return self._w.locate(index)[1]

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        c, origin = self._w.locate(int(index) % n)
        return self._w.sample(c, origin)


# --- the streaming dataset ---------------------------------------------------------------


def _split(sizes: np.ndarray, parts: int) -> np.ndarray:
    """Part of each group when consecutive groups of these sizes are cut into ``parts``."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(len(sizes), np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.minimum(starts * parts // total, parts - 1)


def _buffer_shuffle(order: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The order a shuffle buffer of ``size`` items gives (as webdataset and tf.data do)."""
    if size <= 1 or len(order) <= 1:
        return order
    out = np.empty_like(order)
    buf = list(order[:size])
    pos = 0
    picks = rng.integers(0, size, len(order))
    for i, item in enumerate(order[size:]):
        j = int(picks[i]) % len(buf)
        out[pos] = buf[j]
        buf[j] = item
        pos += 1
    rest = np.asarray(buf)[rng.permutation(len(buf))]
    out[pos:] = rest
    return out


def _deliveries(
    lengths: Sequence[int], batch_size: int, drop_last: bool
) -> Iterator[tuple[int, int]]:
    """(worker, samples) of each batch in the order a DataLoader hands them out.

    Workers take turns, one batch each, skipping those that have run out (torch's
    DataLoader with ``in_order=True``, the default).
    """
    batches = [
        [
            min(batch_size, n - i)
            for i in range(0, n, batch_size)
            if not drop_last or n - i >= batch_size
        ]
        for n in lengths
    ]
    taken = [0] * len(lengths)
    while True:
        progressed = False
        for w, own in enumerate(batches):
            if taken[w] < len(own):
                yield w, own[taken[w]]
                taken[w] += 1
                progressed = True
        if not progressed:
            return


class StreamingCubeDataset(IterableDataset):
    """Every window of many cubes, streamed, shuffled per epoch, split over ranks and workers.

    Each epoch orders the windows by a permutation seeded by ``seed + epoch`` that is the
    same on every rank: windows are grouped by the stored chunk holding their origin, the
    groups are shuffled and so are the windows inside each group. The sequence of groups
    is cut without overlap into one part per rank (``torch.distributed``) and each rank's
    part into one per DataLoader worker, so every decoded chunk serves all its windows in
    one process; a shuffle buffer then mixes the windows of consecutive groups. A decoded
    chunk is dropped after its last window.

    Parameters
    ----------
    catalog_or_stores : str or sequence
        A release catalog URL (read with ``eocube.release.open_catalog``; relative paths
        resolve against the catalog's folder) or a sequence of stores (paths, fsspec URLs
        or Datasets).
    window : mapping
        As for :class:`CubeDataset`, except that cubes smaller than the window along
        time, y or x are skipped, with one ``UserWarning`` naming them and their sizes;
        ValueError when no cube is left.
    stride, bands, variables, transform, device, nan, storage_options :
        As for :class:`CubeDataset` (``nan="keep"``: NaN values reach the tensors as NaN).
    shuffle : bool
        Shuffle chunk groups and windows (else: cubes, chunks and windows in order).
    seed : int
        Epoch ``e`` uses the permutation seeded by ``seed + e``.
    shuffle_buffer : int
        Windows in the shuffle buffer of each worker; about ``shuffle_buffer / windows
        per chunk + 1`` decoded chunks are held at once.
    rank, world_size : int, optional
        This process's rank and the number of ranks; default: from ``torch.distributed``
        when initialised, else 0 and 1.
    even_ranks : bool
        Give every rank the same number of windows (DDP needs equal batch counts): the
        few windows beyond the smallest part are skipped this epoch. Default: every
        window exactly once, ranks differing by at most one chunk's windows.
    cache_chunks : int
        The most decoded chunks a worker keeps.

    Notes
    -----
    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``); without it,
    a process that iterates the dataset itself moves to the next epoch after each full
    pass. :meth:`state_dict` is exact when the dataset is iterated in the process that
    calls it (``num_workers=0``) or through :class:`CubeDataLoader`; resume with the same
    ``num_workers`` and batch size. ``persistent_workers`` keep the epoch of their copy.
    """

    def __init__(
        self,
        catalog_or_stores: str | os.PathLike[str] | Sequence[Any],
        *,
        window: Mapping[str, int] = DEFAULT_WINDOW,
        stride: Mapping[str, int] | None = None,
        bands: Sequence[Any] | None = None,
        variables: Sequence[str] | None = None,
        transform: Callable[[Sample], Any] | None = None,
        device: str | torch.device = "cpu",
        nan: NanPolicy = "keep",
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        even_ranks: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        cache_chunks: int = 16,
    ) -> None:
        super().__init__()
        nan = _nan_policy(nan)  # before opening every cube: a typo fails fast
        sources = _sources(catalog_or_stores, storage_options)
        ids = [cid if cid is not None else _default_id(src) for src, cid in sources]
        if len(set(ids)) != len(ids):
            ids = [cid if cid is not None else str(src) for src, cid in sources]
        cubes = [
            _describe(
                src, variables=variables, bands=bands, cube_id=cid, storage_options=storage_options
            )
            for (src, _), cid in zip(sources, ids, strict=True)
        ]
        cubes = _cubes_the_window_fits(cubes, window, stride)
        self._w = _Windows(cubes, window, stride, transform, device, cache_chunks, nan)
        self._groups = self._w.chunk_groups()
        if rank is None or world_size is None:
            dist_rank, dist_world = _distributed()
            rank = dist_rank if rank is None else rank
            world_size = dist_world if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.seed = shuffle, int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.even_ranks = even_ranks
        self.epoch = 0
        self._epoch_set = False
        self._resume: dict[str, Any] | None = None
        self._yielded = 0
        self._loader: dict[str, Any] | None = None

    # -- the plan of an epoch --

    @property
    def cube_ids(self) -> list[str]:
        """Ids of the cubes read, in catalog order (without those smaller than the window)."""
        return [c.id for c in self._w.cubes]

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Global window order of an epoch and the group of each position."""
        groups = self._groups
        n = len(groups)
        if self.shuffle:
            rng = np.random.default_rng(self.seed + epoch)
            position = rng.permutation(int(groups.max()) + 1 if n else 0)
            order = np.lexsort((rng.random(n), position[groups]))
        else:
            order = np.lexsort((np.arange(n), groups))
        return order, groups[order]

    def _rank_part(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        order, groups = self._epoch_order(epoch)
        if len(order) == 0:
            return order, groups
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        part = np.repeat(_split(sizes, self.world_size), sizes)
        mine = part == self.rank
        if self.even_ranks:
            least = int(np.bincount(part, minlength=self.world_size).min())
            mine &= np.cumsum(mine) <= least
        return order[mine], groups[mine]

    def _shards(self, epoch: int, workers: int) -> list[np.ndarray]:
        """This rank's windows of an epoch, one array per worker, in yield order."""
        order, groups = self._rank_part(epoch)
        workers = max(1, workers)
        if len(order):
            starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
            sizes = np.diff(np.r_[starts, len(order)])
            part = np.repeat(_split(sizes, workers), sizes)
        else:
            part = np.zeros(0, np.int64)
        shards = []
        for w in range(workers):
            shard = order[part == w]
            if self.shuffle:
                rng = np.random.default_rng([self.seed + epoch, self.rank, w, workers])
                shard = _buffer_shuffle(shard, self.shuffle_buffer, rng)
            shards.append(shard)
        return shards

    def __len__(self) -> int:
        """Windows this rank yields in an epoch."""
        return len(self._rank_part(self.epoch)[0])

    # -- iteration --

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` for the next pass (call before each epoch)."""
        self.epoch = int(epoch)
        self._epoch_set = True

    def _my_windows(self) -> np.ndarray:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        resume = self._resume if self._resume and self._resume["epoch"] == self.epoch else None
        if resume is None:
            return self._shards(self.epoch, workers)[worker]
        saved_workers = max(1, int(resume["num_workers"]))
        if saved_workers != workers:
            raise ValueError(
                f"this state was saved with num_workers={resume['num_workers']}; resume with "
                f"the same number of DataLoader workers (now {0 if info is None else workers})"
            )
        shards = self._shards(self.epoch, workers)
        if saved_workers == 1:
            return shards[0][int(resume["samples"]) :]
        taken = [0] * workers
        last = -1
        deliveries = _deliveries(
            [len(s) for s in shards], int(resume["batch_size"]), resume["drop_last"]
        )
        for _, (w, n) in zip(range(int(resume["batches"])), deliveries, strict=False):
            taken[w] += n
            last = w
        # the worker after the last one served goes first, as it would have
        old = (last + 1 + worker) % workers
        return shards[old][taken[old] :]

    def __iter__(self) -> Iterator[Any]:
        windows = self._my_windows()
        if get_worker_info() is None:
            self._yielded = int(self._resume.get("samples", 0)) if self._resume else 0
        w = self._w
        # drop each decoded chunk after the last window whose origin it holds
        keys = self._groups[windows]
        _, first_from_end = np.unique(keys[::-1], return_index=True)
        last_use = set((len(keys) - 1 - first_from_end).tolist())
        for i, index in enumerate(windows):
            c, origin = w.locate(int(index))
            sample = w.sample(c, origin)
            if i in last_use:
                w.reader(c).release(w.chunk_key(c, origin))
            self._yielded += 1
            yield sample
        self._finish_pass()

    def _finish_pass(self) -> None:
        self._resume = None
        self._yielded = 0
        if not self._epoch_set:
            self.epoch += 1

    # -- resuming --

    def state_dict(self) -> dict[str, Any]:
        """Where this rank is in the current epoch (see the class notes)."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": 0,
            "batch_size": None,
            "drop_last": False,
            "batches": 0,
            "samples": self._yielded,
        }
        if self._loader is not None:
            state.update(self._loader)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next pass skips what was consumed."""
        if int(state["seed"]) != self.seed or int(state["world_size"]) != self.world_size:
            raise ValueError(
                f"state of seed {state['seed']} and world size {state['world_size']} cannot resume "
                f"a dataset of seed {self.seed} and world size {self.world_size}"
            )
        self.epoch = int(state["epoch"])
        self._resume = dict(state)
        self._yielded = int(state.get("samples", 0))

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _cubes_the_window_fits(
    cubes: list[_Cube], window: Mapping[str, int], stride: Mapping[str, int] | None
) -> list[_Cube]:
    """The cubes at least as large as the window; one warning names those left out.

    A release mixes cube sizes, and a window that suits most cubes should not make the
    whole release unusable: only when no cube is left is it an error.
    """
    fitting: list[_Cube] = []
    too_small: list[_Cube] = []
    for cube in cubes:
        win, _ = _window_and_stride(window, cube, stride)
        fits = all(w <= n for w, n in zip(win, cube.sizes, strict=True))
        (fitting if fits else too_small).append(cube)
    if not too_small:
        return fitting
    asked = ", ".join(f"{k}={v}" for k, v in window.items())
    listed = "; ".join(f"{c.id!r} ({_size_text(c)})" for c in too_small)
    if not fitting:
        raise ValueError(f"no cube is as large as the window ({asked}): {listed}")
    warnings.warn(
        f"skipping {len(too_small)} of {len(cubes)} cubes smaller than the window "
        f"({asked}): {listed}",
        UserWarning,
        stacklevel=3,
    )
    return fitting


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sources(
    catalog_or_stores: Any, storage_options: Mapping[str, Any] | None
) -> list[tuple[Any, str | None]]:
    if isinstance(catalog_or_stores, str | os.PathLike):
        return _catalog(os.fspath(catalog_or_stores), storage_options)
    if isinstance(catalog_or_stores, xr.Dataset):
        return [(catalog_or_stores, None)]
    sources = list(catalog_or_stores)
    if not sources:
        raise ValueError("no cubes: the list of stores is empty")
    return [(s, None) for s in sources]


def _open_catalog() -> Callable[..., Any]:
    import importlib

    for module in ("eocube.release", "eocube.catalog"):
        try:
            found = getattr(importlib.import_module(module), "open_catalog", None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise ImportError(
        "reading a release catalog needs eocube.release.open_catalog, which this eocube "
        "does not have; pass a list of store paths or URLs instead"
    )


def _catalog(url: str, storage_options: Mapping[str, Any] | None) -> list[tuple[Any, str | None]]:
    open_catalog = _open_catalog()
    kwargs = {"storage_options": storage_options} if storage_options else {}
    table = open_catalog(url, columns=["id", "path"], **kwargs)
    base = url.rstrip("/").rsplit("/", 1)[0] if "/" in url else "."
    out: list[tuple[Any, str | None]] = []
    for row in table.select(["id", "path"]).to_pylist():
        path = str(row["path"])
        if "://" not in path and not os.path.isabs(path):
            path = f"{base}/{path}"
        out.append((path, str(row["id"])))
    if not out:
        raise ValueError(f"catalog {url} lists no cubes")
    return out


class CubeDataLoader(DataLoader):
    """A DataLoader that tells its :class:`StreamingCubeDataset` what the loop consumed.

    Takes the arguments of ``torch.utils.data.DataLoader``. Each batch handed to the
    training loop is counted, so that ``dataset.state_dict()`` (or this loader's
    :meth:`state_dict`) says exactly where to resume, whatever ``num_workers``; after a
    full pass the dataset moves to the next epoch unless :meth:`set_epoch` drives it.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds = self.dataset
        if not isinstance(ds, StreamingCubeDataset):
            yield from super().__iter__()
            return
        resume = ds._resume if ds._resume and ds._resume["epoch"] == ds.epoch else None
        batches = int(resume["batches"]) if resume and self.num_workers else 0
        samples = int(resume["samples"]) if resume else 0
        ds._loader = {
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "batches": batches,
            "samples": samples,
        }
        for batch in super().__iter__():
            ds._loader["batches"] += 1
            ds._loader["samples"] += _batch_len(batch)
            yield batch
        ds._loader = None
        if self.num_workers:
            ds._finish_pass()  # the workers' copies finished it; this is the main one

    def state_dict(self) -> dict[str, Any]:
        """The dataset's :meth:`StreamingCubeDataset.state_dict`."""
        return self.dataset.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The dataset's :meth:`StreamingCubeDataset.load_state_dict`."""
        self.dataset.load_state_dict(state)  # type: ignore[attr-defined]


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()))
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    return len(batch)


__all__ = ["CubeDataLoader", "CubeDataset", "GPUFallbackWarning", "StreamingCubeDataset"]

"""Windows of cubes for training, without torch: which windows, in what order, read how.

The PyTorch datasets of :mod:`eocube.torch` are thin adapters over this module, which
holds everything that needs no torch (and is tested without it), in the manner of
xbatcher's generators:

- what a cube offers (:func:`describe`: variables, dims' roles, sizes, stored chunks);
- window geometry (:func:`window_sizes`, :func:`origins`, :func:`cubes_the_window_fits`);
- reading windows chunk by chunk (:class:`ChunkCache`, through :mod:`eocube.reader`) and
  the index of all windows of some cubes (:class:`WindowIndex`), with ``nan=``;
- the plan of an epoch (:class:`EpochPlan`): one permutation per epoch, grouped by stored
  chunk, cut across ranks and DataLoader workers, a shuffle buffer, and where a resumed
  epoch starts again (:func:`deliveries` replays a DataLoader's batch order);
- where the cubes are (:func:`sources`: a release catalog or a list of stores).

Variables whose dims are in another order than (time, band, y, x) are found by their
dims' roles (:mod:`eocube.dims`) and delivered in (time, band, y, x) order all the same.
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np
import xarray as xr

from eocube.dims import cube_roles, recognise
from eocube.errors import GPUFallbackWarning
from eocube.layout import MARKER

DEFAULT_WINDOW = {"time": 8, "y": 64, "x": 64}
_AXES = ("time", "y", "x")

NanPolicy = Literal["keep", "mask"] | float
"""What samples do with NaN: keep it, replace it with a number, or mask it."""


# --- what a cube offers ------------------------------------------------------------------


@dataclass(frozen=True)
class Cube:
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
    video: bool = False  # an eocube store (video-coded chunks), not another zarr store


def open_source(
    source: Any, storage_options: Mapping[str, Any] | None, frame_decoder: Any = None
) -> xr.Dataset:
    """The cube at ``source``: a Dataset as it is, an eocube store through the eocube
    engine (its video decoded by ``frame_decoder``), another zarr store or a NetCDF file."""
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
    from eocube.lifecycle import store_path

    if "eocube" in zarr.open_group(store_path(path, options, read_only=True), mode="r").attrs:
        return open_dataset(path, storage_options=storage_options, frame_decoder=frame_decoder)
    # any other zarr store (a baseline, the original data)
    plain: Any = store_path(path, options, read_only=True).store  # xarray types omit zarr stores
    return xr.open_dataset(plain, engine="zarr")


def default_id(source: Any) -> str:
    if isinstance(source, xr.Dataset | xr.DataArray):
        origin = source.encoding.get("source")
        return default_id(origin) if origin else str(source.attrs.get("id", "cube"))
    name = str(os.fspath(source) if isinstance(source, os.PathLike) else source).rstrip("/")
    name = name.rsplit("/", 1)[-1]
    for suffix in (".zip", ".eocube", ".zarr", ".nc"):
        name = name.removesuffix(suffix)
    return name


def describe(
    source: Any,
    *,
    variables: Sequence[str] | None,
    bands: Sequence[Any] | None,
    cube_id: str | None,
    storage_options: Mapping[str, Any] | None,
) -> Cube:
    ds = open_source(source, storage_options)
    names = (
        list(variables)
        if variables is not None
        else [str(n) for n, v in ds.data_vars.items() if cube_roles(v) is not None]
    )
    if not names:
        raise ValueError(
            f"{default_id(source)}: no cube variable with dims time, [band,] y and x (in any order)"
        )
    roles_per_variable: list[Mapping[str, Hashable]] = []
    sizes: tuple[int, ...] | None = None
    chunks: tuple[int, ...] | None = None
    band_index: tuple[int, ...] | None = None
    for name in names:
        if name not in ds.data_vars:
            raise KeyError(
                f"{default_id(source)} has no variable {name!r}; it has {list(ds.data_vars)}"
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
            band_index = band_positions(var[roles["band"]], bands)
    if bands is not None and band_index is None:
        raise ValueError(f"variables {names} have no band dim to select bands from")
    assert sizes is not None
    assert chunks is not None
    return Cube(
        id=cube_id if cube_id is not None else default_id(source),
        source=source,
        storage_options=storage_options,
        variables=tuple(names),
        roles=tuple(roles_per_variable),
        sizes=(sizes[0], sizes[1], sizes[2]),
        chunks=(chunks[0], chunks[1], chunks[2]),
        band_index=band_index,
        video=MARKER in ds.encoding,
    )


def band_positions(coord: xr.DataArray, bands: Sequence[Any]) -> tuple[int, ...]:
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


def sizes_by_role(sizes: Mapping[Any, int], cube: Cube, argument: str) -> dict[str, int]:
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


def window_and_stride(
    window: Mapping[str, int], cube: Cube, stride: Mapping[str, int] | None
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Window size and stride along (time, y, x); a window larger than the cube is allowed."""
    win_by_role = sizes_by_role(window, cube, "window")
    stride_by_role = sizes_by_role(stride or {}, cube, "stride")
    win = tuple(win_by_role.get(a, n) for a, n in zip(_AXES, cube.sizes, strict=True))
    strides = tuple(stride_by_role.get(a, w) for a, w in zip(_AXES, win, strict=True))
    for a, w, s in zip(_AXES, win, strides, strict=True):
        if w <= 0 or s <= 0:
            raise ValueError(f"window and stride along {a} must be positive, got {w} and {s}")
    return win, strides  # type: ignore[return-value]


def size_text(cube: Cube) -> str:
    """The cube's size as ``time=..., y=..., x=...`` for messages."""
    return ", ".join(f"{a}={n}" for a, n in zip(_AXES, cube.sizes, strict=True))


def window_sizes(
    window: Mapping[str, int], cube: Cube, stride: Mapping[str, int] | None
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Window size and stride along (time, y, x); raises if the window exceeds the cube."""
    win, strides = window_and_stride(window, cube, stride)
    for a, w, n in zip(_AXES, win, cube.sizes, strict=True):
        if w > n:
            raise ValueError(f"cube {cube.id!r}: window {a}={w} is larger than the cube ({n})")
    return win, strides


def origins(cube: Cube, win: tuple[int, ...], strides: tuple[int, ...]) -> list[np.ndarray]:
    return [np.arange(0, n - w + 1, s) for n, w, s in zip(cube.sizes, win, strides, strict=True)]


# --- reading windows ---------------------------------------------------------------------


class Notifier:
    """Says a GPU fallback once per dataset (copies made for workers inherit 'said')."""

    def __init__(self) -> None:
        self.said = False

    def __call__(self, message: str) -> None:
        if not self.said:
            self.said = True
            warnings.warn(message, GPUFallbackWarning, stacklevel=3)


class ChunkCache:
    """Reads the windows of one cube in one process, decoding whole stored chunks.

    Chunks are read through the store's one chunk-read path (:mod:`eocube.reader`: the
    same fetch, checksums, CF decoding and errors as any xarray read), with the video
    decoder plugged in: the CPU's, or NVDEC's (:class:`eocube.gpu.NvdecDecoder`) when
    ``gpu``. Decoded chunks are kept in a small LRU cache, so that neighbouring windows
    share them.
    """

    def __init__(self, cube: Cube, gpu: bool, notify: Notifier, cache_chunks: int) -> None:
        self.cube = cube
        self.cache: OrderedDict[tuple[int, ...], dict[str, np.ndarray]] = OrderedDict()
        self.capacity = max(1, cache_chunks)
        self.lock = threading.Lock()
        self.decoder: Any = None
        if gpu:
            if isinstance(cube.source, xr.Dataset | xr.DataArray):
                notify(f"{cube.id} was given as a Dataset: give its store to decode on the GPU")
            else:
                from eocube.gpu import NvdecDecoder

                self.decoder = NvdecDecoder(on_fallback=notify)
        self.ds = open_source(cube.source, cube.storage_options, frame_decoder=self.decoder)

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
        # the Variable, not the DataArray: the same lazily CF-decoded data, without
        # indexing the coordinates (about 0.5 ms per variable and chunk through a DataArray)
        var = self.ds.variables[name]
        sel = {roles["time"]: bounds[0], roles["y"]: bounds[1], roles["x"]: bounds[2]}
        # roles are in (time, [band,] y, x) order whatever the variable's own order
        values = np.asarray(var.isel(sel).transpose(*roles.values()).values)
        if "band" not in roles:
            values = values[:, None]
        elif self.cube.band_index is not None:
            values = values[:, list(self.cube.band_index)]
        # C order once per chunk (a transposed variable reads as a strided view), so that
        # each window is copied from contiguous rows
        return np.ascontiguousarray(values)

    def window(
        self, origin: tuple[int, int, int], size: tuple[int, int, int]
    ) -> dict[str, np.ndarray]:
        """Float32 (time, band, y, x) arrays of the window at ``origin`` per variable.

        The arrays are the caller's own, never views of cached chunks: samples (and
        transforms that work in place) cannot alter the values of later windows.
        """
        (t, y, x), (st, sy, sx), (ct, cy, cx) = origin, size, self.cube.chunks
        kt, lt = divmod(t, ct)
        ky, ly = divmod(y, cy)
        kx, lx = divmod(x, cx)
        if lt + st <= ct and ly + sy <= cy and lx + sx <= cx:
            # the common case: the window lies in one chunk (astype always copies)
            block = self.chunk((kt, ky, kx))
            return {
                n: b[lt : lt + st, :, ly : ly + sy, lx : lx + sx].astype(np.float32, order="C")
                for n, b in block.items()
            }
        first = [kt, ky, kx]
        last = [(o + s - 1) // c for o, s, c in zip(origin, size, self.cube.chunks, strict=True)]
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


def nan_policy(nan: Any) -> NanPolicy:
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


def valid_key(name: str, variables: Sequence[str]) -> str:
    """Sample key of the validity mask of variable ``name`` (under ``nan="mask"``)."""
    return "valid" if len(variables) == 1 else f"{name}_valid"


class WindowIndex:
    """The windows of some cubes: where each lies, which stored chunk holds it, its values.

    Shared by both datasets. Values come as float32 NumPy arrays in (time, band, y, x)
    order with ``nan=`` applied; the datasets turn them into tensors.
    """

    def __init__(
        self,
        cubes: list[Cube],
        window: Mapping[str, int],
        stride: Mapping[str, int] | None,
        cache_chunks: int,
        nan: NanPolicy = "keep",
        gpu: bool = False,
        notify: Notifier | None = None,
    ) -> None:
        self.cubes = cubes
        self.window = dict(window)
        self.nan = nan_policy(nan)
        if self.nan == "mask":
            for cube in cubes:
                masks = {valid_key(n, cube.variables) for n in cube.variables}
                data_keys = {"data"} if len(cube.variables) == 1 else set(cube.variables)
                clash = sorted(masks & (data_keys | {"cube", "offset"}))
                if clash:
                    raise ValueError(
                        f"nan='mask' adds the keys {sorted(masks)} to samples, but {clash} "
                        f"already name something in the samples of cube {cube.id!r}"
                    )
        self.cache_chunks = cache_chunks
        sizes = [window_sizes(window, c, stride) for c in cubes]
        self.win = [w for w, _ in sizes]
        self.origins = [origins(c, w, s) for c, (w, s) in zip(cubes, sizes, strict=True)]
        counts = [int(np.prod([len(o) for o in orig])) for orig in self.origins]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._starts: list[int] = self.starts.tolist()
        self._origins = [[o.tolist() for o in orig] for orig in self.origins]
        self.notify = notify if notify is not None else Notifier()
        self.gpu = gpu
        self._readers: dict[int, ChunkCache] = {}

    @property
    def n_windows(self) -> int:
        """Windows of all cubes."""
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[int, tuple[int, int, int]]:
        """Cube number and window origin of global window ``index``."""
        # Python ints and lists: called once per sample, NumPy scalars cost more here
        starts = self._starts
        c = 0 if len(starts) == 2 else bisect.bisect_right(starts, index) - 1
        ot, oy, ox = self._origins[c]
        it, rest = divmod(index - starts[c], len(oy) * len(ox))
        iy, ix = divmod(rest, len(ox))
        return c, (ot[it], oy[iy], ox[ix])

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

    def reader(self, c: int) -> ChunkCache:
        """The chunk reader of cube ``c`` (opened on first use, in this process)."""
        r = self._readers.get(c)
        if r is None:
            cube = self.cubes[c]
            r = self._readers[c] = ChunkCache(cube, self.gpu, self.notify, self.cache_chunks)
        return r

    def warm_up(self) -> bool:
        """Decode a stored chunk of the first eocube store, on the CPU, in this process.

        The video decoders' compiled kernels (Numba) load on a process's first decode,
        about a second on a small machine: DataLoader workers forked afterwards inherit
        them loaded instead of loading them each, at every epoch without
        ``persistent_workers``. Leaves this index's own readers as they were (workers
        open the stores again). False when no cube is an eocube store.
        """
        for cube in self.cubes:
            if cube.video:
                ChunkCache(cube, False, self.notify, cache_chunks=1).chunk((0, 0, 0))
                return True
        return False

    def chunk_key(self, c: int, origin: tuple[int, int, int]) -> tuple[int, int, int]:
        """The stored chunk of cube ``c`` holding ``origin``."""
        return tuple(o // k for o, k in zip(origin, self.cubes[c].chunks, strict=True))  # type: ignore[return-value]

    def values(self, c: int, origin: tuple[int, int, int]) -> dict[str, np.ndarray]:
        """The window of cube ``c`` at ``origin``: float32 (time, band, y, x) arrays keyed
        as in samples (``"data"``, or variable names), with ``nan=`` applied (and the
        validity masks it adds)."""
        cube = self.cubes[c]
        values = self.reader(c).window(origin, self.win[c])
        masks: dict[str, np.ndarray] = {}
        # window() hands out arrays of their own: replacing NaN in place is safe
        if self.nan == "mask":
            for name, array in values.items():
                valid = ~np.isnan(array)
                array[~valid] = 0.0
                masks[valid_key(name, cube.variables)] = valid
        elif isinstance(self.nan, float):
            for array in values.values():
                array[np.isnan(array)] = self.nan
        if len(cube.variables) == 1:
            values = {"data": values[cube.variables[0]]}
        return {**values, **masks}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = {}  # stores are opened again, lazily, in each worker
        return state


# --- the plan of an epoch ------------------------------------------------------------------


def split(sizes: np.ndarray, parts: int) -> np.ndarray:
    """Part of each group when consecutive groups of these sizes are cut into ``parts``."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(len(sizes), np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.minimum(starts * parts // total, parts - 1)


def buffer_shuffle(order: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
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


def deliveries(
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


@dataclass(frozen=True)
class EpochPlan:
    """Which windows a rank's DataLoader workers read in an epoch, and in what order.

    Each epoch orders the windows by a permutation seeded by ``seed + epoch``, the same
    on every rank: windows are grouped by the stored chunk holding their origin, the
    groups are shuffled and so are the windows inside each group. The sequence of groups
    is cut without overlap into one part per rank and each rank's part into one per
    worker, so every decoded chunk serves all its windows in one process; a shuffle
    buffer then mixes the windows of consecutive groups.

    With ``even_ranks`` (the default) and several ranks, every rank yields the same
    number of windows, and each of its workers the same number as the same worker of
    any other rank, so that every rank makes the same number of batches whatever the
    batch size (DDP hangs at a collective otherwise): ranks whose part is short repeat
    some of their own windows, those of their last chunks first (still decoded), up to
    the longest part, and a rank's part is cut into equal shares per worker (a chunk
    whose windows straddle two shares is decoded by both workers). Every window is read
    at least once per epoch, and each short rank's shortfall (about a chunk's windows at
    most) twice. Without ``even_ranks``, every window is read exactly once and each
    rank's part is within a chunk's windows of an even share.

    Parameters
    ----------
    groups : ndarray of int
        Per global window, the number of the stored chunk holding its origin
        (:meth:`WindowIndex.chunk_groups`).
    shuffle, seed, shuffle_buffer, rank, world_size, even_ranks :
        As for :class:`eocube.torch.StreamingCubeDataset`.
    """

    groups: np.ndarray
    shuffle: bool = True
    seed: int = 0
    shuffle_buffer: int = 256
    rank: int = 0
    world_size: int = 1
    even_ranks: bool = True

    @property
    def evened(self) -> bool:
        """Whether ranks are evened (``even_ranks`` with more than one rank)."""
        return self.even_ranks and self.world_size > 1

    def order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Global window order of an epoch and the group of each position."""
        groups = self.groups
        n = len(groups)
        if self.shuffle:
            rng = np.random.default_rng(self.seed + epoch)
            position = rng.permutation(int(groups.max()) + 1 if n else 0)
            order = np.lexsort((rng.random(n), position[groups]))
        else:
            order = np.lexsort((np.arange(n), groups))
        return order, groups[order]

    def rank_part(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's windows of an epoch (in order) and their groups."""
        order, groups = self.order(epoch)
        if len(order) == 0:
            return order, groups
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        part = np.repeat(split(sizes, self.world_size), sizes)
        mine = part == self.rank
        own, own_groups = order[mine], groups[mine]
        if not self.evened:
            return own, own_groups
        shortfall = int(np.bincount(part, minlength=self.world_size).max()) - len(own)
        if shortfall > 0:
            # repeat this rank's windows from its end backwards: the last chunk's windows
            # first, right after them (its decoded chunk serves them too); a rank without
            # windows (more ranks than chunks) repeats the epoch's last ones
            source, source_groups = (own, own_groups) if len(own) else (order, groups)
            pick = len(source) - 1 - np.arange(shortfall) % len(source)
            own = np.concatenate([own, source[pick]])
            own_groups = np.concatenate([own_groups, source_groups[pick]])
        return own, own_groups

    def worker_windows(self, epoch: int, workers: int) -> list[np.ndarray]:
        """This rank's windows of an epoch, one array per worker, in yield order."""
        shares = self._shares(epoch, workers)
        return [self._yield_order(epoch, len(shares), w, s) for w, s in enumerate(shares)]

    def _shares(self, epoch: int, workers: int) -> list[np.ndarray]:
        """This rank's windows of an epoch, one array per worker, before the shuffle
        buffer (which keeps their sizes)."""
        order, groups = self.rank_part(epoch)
        workers = max(1, workers)
        if len(order) and self.evened:
            # equal shares, the same sizes on every rank: the same batches per rank
            part = np.arange(len(order)) * workers // len(order)
        elif len(order):
            starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
            sizes = np.diff(np.r_[starts, len(order)])
            part = np.repeat(split(sizes, workers), sizes)
        else:
            part = np.zeros(0, np.int64)
        return [order[part == w] for w in range(workers)]

    def _yield_order(self, epoch: int, workers: int, worker: int, share: np.ndarray) -> np.ndarray:
        if not self.shuffle:
            return share
        rng = np.random.default_rng([self.seed + epoch, self.rank, worker, workers])
        return buffer_shuffle(share, self.shuffle_buffer, rng)

    def remaining(
        self, epoch: int, workers: int, worker: int, state: Mapping[str, Any] | None
    ) -> np.ndarray:
        """The windows worker ``worker`` (of ``workers``, 1 without worker processes)
        still yields this epoch after the consumption recorded in ``state`` (a
        ``state_dict`` of the dataset; None: from the start). Only that worker's
        share goes through the shuffle buffer."""
        shares = self._shares(epoch, workers)
        n = len(shares)
        if state is None:
            return self._yield_order(epoch, n, worker, shares[worker])
        saved_workers = max(1, int(state["num_workers"]))
        if saved_workers != workers:
            raise ValueError(
                f"this state was saved with num_workers={state['num_workers']}; resume with "
                f"the same number of DataLoader workers (now {workers if workers > 1 else 0})"
            )
        if saved_workers == 1:
            return self._yield_order(epoch, n, 0, shares[0])[int(state["samples"]) :]
        taken = [0] * workers
        last = -1
        batches = deliveries([len(s) for s in shares], int(state["batch_size"]), state["drop_last"])
        for _, (w, k) in zip(range(int(state["batches"])), batches, strict=False):
            taken[w] += k
            last = w
        # the worker after the last one served goes first, as it would have
        old = (last + 1 + worker) % workers
        return self._yield_order(epoch, n, old, shares[old])[taken[old] :]


def cubes_the_window_fits(
    cubes: list[Cube], window: Mapping[str, int], stride: Mapping[str, int] | None
) -> list[Cube]:
    """The cubes at least as large as the window; one warning names those left out.

    A release mixes cube sizes, and a window that suits most cubes should not make the
    whole release unusable: only when no cube is left is it an error.
    """
    fitting: list[Cube] = []
    too_small: list[Cube] = []
    for cube in cubes:
        win, _ = window_and_stride(window, cube, stride)
        fits = all(w <= n for w, n in zip(win, cube.sizes, strict=True))
        (fitting if fits else too_small).append(cube)
    if not too_small:
        return fitting
    asked = ", ".join(f"{k}={v}" for k, v in window.items())
    listed = "; ".join(f"{c.id!r} ({size_text(c)})" for c in too_small)
    if not fitting:
        raise ValueError(f"no cube is as large as the window ({asked}): {listed}")
    warnings.warn(
        f"skipping {len(too_small)} of {len(cubes)} cubes smaller than the window "
        f"({asked}): {listed}",
        UserWarning,
        stacklevel=3,
    )
    return fitting


# --- where the cubes are -------------------------------------------------------------------


def sources(
    catalog_or_stores: Any, storage_options: Mapping[str, Any] | None
) -> list[tuple[Any, str | None]]:
    """(source, cube id or None) of every cube: from a catalog URL, or a list of stores."""
    if isinstance(catalog_or_stores, str | os.PathLike):
        return catalog_sources(os.fspath(catalog_or_stores), storage_options)
    if isinstance(catalog_or_stores, xr.Dataset):
        return [(catalog_or_stores, None)]
    sources = list(catalog_or_stores)
    if not sources:
        raise ValueError("no cubes: the list of stores is empty")
    return [(s, None) for s in sources]


def catalog_sources(
    url: str, storage_options: Mapping[str, Any] | None
) -> list[tuple[Any, str | None]]:
    """(store path, cube id) of every cube a release catalog lists; relative paths resolve
    against the catalog's folder."""
    from eocube.catalog import STORE_COLUMN, open_catalog

    table = open_catalog(url, columns=["id", STORE_COLUMN], storage_options=storage_options)
    base = url.rstrip("/").rsplit("/", 1)[0] if "/" in url else "."
    out: list[tuple[Any, str | None]] = []
    for row in table.to_pylist():
        path = str(row[STORE_COLUMN])
        if "://" not in path and not os.path.isabs(path):
            path = f"{base}/{path}"
        out.append((path, str(row["id"])))
    if not out:
        raise ValueError(f"catalog {url} lists no cubes")
    return out

"""PyTorch datasets over eocube stores and releases, decoding on the CPU or on NVDEC.

- :class:`CubeDataset`: map-style, the windows of one cube.
- :class:`StreamingCubeDataset`: iterable over every window of many cubes (a release
  catalog or a list of stores), a new permutation each epoch, split across
  ``torch.distributed`` ranks (the same number of samples on every rank, as DDP needs)
  and DataLoader workers, read chunk by chunk so that each decoded chunk serves all its
  windows, resumable mid-epoch.
- :class:`CubeDataLoader`: a DataLoader that tells its StreamingCubeDataset how many
  batches the training loop took, so that ``dataset.state_dict()`` is exact with worker
  processes too, and hands batches over from worker processes with fewer tensors.

This module only adapts :mod:`eocube.windows` (window geometry, reading, the epoch plan;
no torch there) to torch: tensors, devices, ranks and workers.

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

import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

try:
    import torch
    from torch.utils.data import (
        DataLoader,
        Dataset,
        IterableDataset,
        default_collate,
        get_worker_info,
    )
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError(
        "eocube.torch needs PyTorch: install it with `pip install 'eocube[torch]'`"
    ) from exc

from eocube import windows
from eocube.errors import GPUFallbackWarning
from eocube.windows import DEFAULT_WINDOW, NanPolicy

Sample = dict[str, Any]


def _video_reader(var: Any) -> Any:
    """The :class:`eocube.reader.ChunkReader` under a lazily read variable of an eocube
    store (through xarray's CF-decoding and transposing wrappers), or None."""
    from eocube.reader import VideoArray

    data, seen = getattr(var, "_data", None), 0
    while data is not None and seen < 32:
        if isinstance(data, VideoArray):
            return data.reader
        data, seen = getattr(data, "array", None), seen + 1
    return None


class _DeviceChunks(windows.ChunkCache):
    """Windows of one cube as tensors on a device, read by the one chunk-read path.

    Each stored chunk is read by :meth:`eocube.reader.ChunkReader.read_tensor`: fetched
    and checked as any read, its frames decoded by NVDEC and kept on the GPU (or by the
    CPU, uploaded), unpacked in torch, CF-decoded in torch
    (:class:`eocube.device.CFDecoding`), all equal bit for bit to the CPU path. Variables
    that are not video-coded (or whose stored chunks differ from the windows' grid) are
    read by the CPU path and uploaded.
    """

    def __init__(
        self,
        cube: windows.Cube,
        gpu: bool,
        notify: windows.Notifier,
        cache_chunks: int,
        device: torch.device,
    ) -> None:
        super().__init__(cube, gpu, notify, cache_chunks)
        self.device = device
        self._plans: dict[str, Any] = {}

    def _plan(self, name: str, roles: Mapping[str, Any]) -> Any:
        if name not in self._plans:
            from eocube.device import CFDecoding

            var = self.ds.variables[name]
            reader = _video_reader(var)
            plan = None
            if reader is not None:
                dims = tuple(getattr(reader.array.metadata, "dimension_names", None) or ())
                grid = {roles[a]: c for a, c in zip(windows._AXES, self.cube.chunks, strict=True)}
                same_grid = all(
                    grid.get(d, c) == c for d, c in zip(dims, reader.chunk_shape, strict=False)
                )
                if set(dims) == set(roles.values()) and same_grid:
                    try:
                        cf = CFDecoding.from_encoding(var.encoding, reader.array.dtype, name)
                    except NotImplementedError:
                        cf = None
                    if cf is not None:
                        plan = (reader, dims, cf)
            self._plans[name] = plan
        return self._plans[name]

    def _read(self, name: str, roles: Mapping[str, Any], key: tuple[int, int, int]) -> Any:
        from eocube.device import as_tensor

        plan = self._plan(name, roles)
        if plan is None:
            return as_tensor(super()._read(name, roles, key), self.device)
        reader, dims, cf = plan
        role_of = {d: r for r, d in roles.items()}
        per_dim: list[Sequence[int]] = []
        band_axis = None
        for i, (d, c, n) in enumerate(
            zip(dims, reader.chunk_shape, reader.array.shape, strict=True)
        ):
            role = role_of[d]
            if role == "band":
                band_axis = i
                per_dim.append(range(-(-n // c)))
            else:
                per_dim.append([key[windows._AXES.index(role)]])
        import itertools

        coords = list(itertools.product(*per_dim))
        blocks = reader.read_tensors(coords, self.device)
        block = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=band_axis or 0)
        block = cf(block)
        block = block.permute(*(dims.index(d) for d in roles.values()))
        if "band" not in roles:
            block = block[:, None]
        elif self.cube.band_index is not None:
            index = torch.as_tensor(self.cube.band_index, device=block.device)
            block = block.index_select(1, index)
        return block.contiguous()

    def window(  # type: ignore[override]
        self, origin: tuple[int, int, int], size: tuple[int, int, int]
    ) -> dict[str, torch.Tensor]:
        """Float32 (time, band, y, x) tensors of the window at ``origin`` per variable, on
        the device, the caller's own (as :meth:`eocube.windows.ChunkCache.window`)."""
        first = [o // c for o, c in zip(origin, self.cube.chunks, strict=True)]
        last = [(o + s - 1) // c for o, s, c in zip(origin, size, self.cube.chunks, strict=True)]
        out: dict[str, torch.Tensor] = {}
        for kt in range(first[0], last[0] + 1):
            for ky in range(first[1], last[1] + 1):
                for kx in range(first[2], last[2] + 1):
                    key = (kt, ky, kx)
                    block: dict[str, Any] = self.chunk(key)
                    src, dst = [], []
                    for o, s, k, c in zip(origin, size, key, self.cube.chunks, strict=True):
                        a, b = max(o, k * c), min(o + s, (k + 1) * c)
                        src.append(slice(a - k * c, b - k * c))
                        dst.append(slice(a - o, b - o))
                    whole = all(d == slice(0, s) for d, s in zip(dst, size, strict=True))
                    for n, values in block.items():
                        part = values[src[0], :, src[1], src[2]]
                        if whole:  # the common case: the window lies in one chunk
                            out[n] = part.to(
                                torch.float32, memory_format=torch.contiguous_format, copy=True
                            )
                            continue
                        if n not in out:
                            out[n] = torch.empty(
                                (size[0], values.shape[1], size[1], size[2]),
                                dtype=torch.float32,
                                device=values.device,
                            )
                        out[n][dst[0], :, dst[1], dst[2]] = part.to(torch.float32)
        return out


class _DeviceWindows(windows.WindowIndex):
    """:class:`eocube.windows.WindowIndex` that also reads windows as tensors on a device."""

    def __init__(self, *args: Any, device: torch.device, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = device
        self.tensor_readers: dict[int, _DeviceChunks] = {}

    def tensor_reader(self, c: int) -> _DeviceChunks:
        """The device reader of cube ``c`` (opened on first use, in this process)."""
        r = self.tensor_readers.get(c)
        if r is None:
            cube = self.cubes[c]
            r = _DeviceChunks(cube, self.gpu, self.notify, self.cache_chunks, self.device)
            self.tensor_readers[c] = r
        return r

    def tensor_values(self, c: int, origin: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        """:meth:`values` as tensors on the device, ``nan=`` applied there."""
        cube = self.cubes[c]
        values = self.tensor_reader(c).window(origin, self.win[c])
        masks: dict[str, torch.Tensor] = {}
        if self.nan == "mask":
            for name, tensor in values.items():
                valid = ~torch.isnan(tensor)
                tensor.masked_fill_(~valid, 0.0)
                masks[windows.valid_key(name, cube.variables)] = valid
        elif isinstance(self.nan, float):
            for tensor in values.values():
                tensor.masked_fill_(torch.isnan(tensor), self.nan)
        if len(cube.variables) == 1:
            values = {"data": values[cube.variables[0]]}
        return {**values, **masks}

    def release(self, c: int, key: tuple[int, int, int]) -> None:
        """Drop the decoded chunk ``key`` of cube ``c`` (its last window was read)."""
        for readers in (self._readers, self.tensor_readers):
            if c in readers:
                readers[c].release(key)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["tensor_readers"] = {}
        return state


class _Samples:
    """Windows as samples of tensors on a device: shared by both datasets.

    With ``device="cuda"`` (and CUDA available), samples read in the main process go
    through the device path: NVDEC decodes (its sessions pooled, :mod:`eocube.gpu`), the
    frames stay on the GPU and are unpacked and CF-decoded there (:mod:`eocube.device`).
    In DataLoader worker processes the CPU decodes and samples are CPU tensors: a forked
    worker cannot use CUDA once the main process has, and a spawned one would hold a
    CUDA context and NVDEC sessions of its own per worker and hand CUDA tensors across
    processes; the CPU cores are what workers add.
    """

    def __init__(
        self,
        cubes: list[windows.Cube],
        window: Mapping[str, int],
        stride: Mapping[str, int] | None,
        transform: Callable[[Sample], Any] | None,
        device: str | torch.device,
        cache_chunks: int,
        nan: NanPolicy,
    ) -> None:
        notify = windows.Notifier()
        dev = torch.device(device)
        gpu = dev.type == "cuda"
        if gpu and not torch.cuda.is_available():
            notify("device='cuda' but CUDA is not available: decoding on the CPU, CPU tensors")
            gpu, dev = False, torch.device("cpu")
        self.device = dev
        self.transform = transform
        # the device path (decode and unpack on the device); tests set it on CPU tensors
        self.device_path = gpu
        self.index = _DeviceWindows(
            cubes, window, stride, cache_chunks, nan, gpu=gpu, notify=notify, device=dev
        )

    def sample(self, c: int, origin: tuple[int, int, int]) -> Any:
        worker = get_worker_info() is not None
        sample: Sample = {}
        if self.device_path and not worker:
            sample.update(self.index.tensor_values(c, origin))
        else:
            if worker and self.index.gpu:
                # worker processes decode on the CPU (see the class notes)
                self.index.gpu = False
                self.index._readers = {}
            on_gpu = self.device.type != "cpu" and not worker  # CPU: one test
            for name, array in self.index.values(c, origin).items():
                t = torch.from_numpy(array)
                sample[name] = t.to(self.device, non_blocking=True) if on_gpu else t
        sample["cube"] = self.index.cubes[c].id
        sample["offset"] = origin
        return self.transform(sample) if self.transform is not None else sample


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

    Notes
    -----
    Under DistributedDataParallel, give the DataLoader a
    ``torch.utils.data.DistributedSampler(dataset)``: by default (``drop_last=False``) it
    pads every rank to ``ceil(len(dataset) / world_size)`` indices by repeating a few from
    the start of its permutation, so every rank makes the same number of batches (uneven
    batch counts hang DDP at a collective); ``drop_last=True`` drops the surplus instead.
    Call its ``set_epoch`` before each epoch.
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
        nan = windows.nan_policy(nan)  # before opening anything: a typo fails fast
        cube = windows.describe(
            store_or_dataset,
            variables=variables,
            bands=bands,
            cube_id=cube_id,
            storage_options=storage_options,
        )
        self._s = _Samples([cube], window, stride, transform, device, cache_chunks, nan)

    @property
    def _w(self) -> _DeviceWindows:
        return self._s.index

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
        return self._s.sample(c, origin)


# --- the streaming dataset ---------------------------------------------------------------


class StreamingCubeDataset(IterableDataset):
    """Every window of many cubes, streamed, shuffled per epoch, split over ranks and workers.

    Each epoch orders the windows by a permutation seeded by ``seed + epoch`` that is the
    same on every rank: windows are grouped by the stored chunk holding their origin, the
    groups are shuffled and so are the windows inside each group. The sequence of groups
    is cut without overlap into one part per rank (``torch.distributed``) and each rank's
    part into one per DataLoader worker, so every decoded chunk serves all its windows in
    one process; a shuffle buffer then mixes the windows of consecutive groups. A decoded
    chunk is dropped after its last window. Parts are then evened across ranks (see
    ``even_ranks``).

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
        Default True: every rank yields the same number of samples per epoch, and so
        makes the same number of batches whatever ``batch_size``, ``drop_last`` and
        ``num_workers`` (the same on every rank): DistributedDataParallel hangs at a
        collective when one rank runs out of batches before the others. Ranks whose part
        is short repeat some of their own windows (those of their last chunk first,
        still decoded) up to the longest part, as ``DistributedSampler`` pads by default:
        every window is read at least once per epoch and a few (per rank, at most about
        one chunk's windows) twice; nothing is skipped (dropping the surplus instead, as
        ``drop_last=True`` does, would leave out a few windows each epoch), at the cost
        of those repeats weighing double. With DataLoader workers, each rank's part is then
        cut into equal shares (a chunk straddling two shares is decoded by both
        workers). ``even_ranks=False``: every window exactly once per epoch, each rank's
        part within a chunk's windows of an even share (so ranks may differ by a batch
        or more: use it without DDP, or with DDP's ``join`` for uneven inputs). Without
        several ranks this option changes nothing.
    cache_chunks : int
        The most decoded chunks a worker keeps.

    Notes
    -----
    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``); without it,
    a process that iterates the dataset itself moves to the next epoch after each full
    pass. :meth:`state_dict` is exact when the dataset is iterated in the process that
    calls it (``num_workers=0``) or through :class:`CubeDataLoader`; resume with the same
    ``num_workers``, batch size and ``even_ranks``. ``persistent_workers`` keep the epoch
    of their copy.
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
        even_ranks: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        cache_chunks: int = 16,
    ) -> None:
        super().__init__()
        nan = windows.nan_policy(nan)  # before opening every cube: a typo fails fast
        sources = windows.sources(catalog_or_stores, storage_options)
        ids = [cid if cid is not None else windows.default_id(src) for src, cid in sources]
        if len(set(ids)) != len(ids):
            ids = [cid if cid is not None else str(src) for src, cid in sources]
        cubes = [
            windows.describe(
                src, variables=variables, bands=bands, cube_id=cid, storage_options=storage_options
            )
            for (src, _), cid in zip(sources, ids, strict=True)
        ]
        cubes = windows.cubes_the_window_fits(cubes, window, stride)
        self._s = _Samples(cubes, window, stride, transform, device, cache_chunks, nan)
        if rank is None or world_size is None:
            dist_rank, dist_world = _distributed()
            rank = dist_rank if rank is None else rank
            world_size = dist_world if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
        self.plan = windows.EpochPlan(
            groups=self._w.chunk_groups(),
            shuffle=shuffle,
            seed=int(seed),
            shuffle_buffer=int(shuffle_buffer),
            rank=int(rank),
            world_size=int(world_size),
            even_ranks=even_ranks,
        )
        self.epoch = 0
        self._epoch_set = False
        self._resume: dict[str, Any] | None = None
        self._yielded = 0
        self._loader: dict[str, Any] | None = None

    @property
    def _w(self) -> _DeviceWindows:
        return self._s.index

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self.plan.rank

    @property
    def world_size(self) -> int:
        """The number of ranks."""
        return self.plan.world_size

    @property
    def seed(self) -> int:
        """Epoch ``e`` uses the permutation seeded by ``seed + e``."""
        return self.plan.seed

    @property
    def cube_ids(self) -> list[str]:
        """Ids of the cubes read, in catalog order (without those smaller than the window)."""
        return [c.id for c in self._w.cubes]

    def __len__(self) -> int:
        """Windows this rank yields in an epoch."""
        return len(self.plan.rank_part(self.epoch)[0])

    # -- iteration --

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` for the next pass (call before each epoch)."""
        self.epoch = int(epoch)
        self._epoch_set = True

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        resume = self._resume if self._resume and self._resume["epoch"] == self.epoch else None
        mine = self.plan.remaining(self.epoch, workers, worker, resume)
        if info is None:
            self._yielded = int(self._resume.get("samples", 0)) if self._resume else 0
        w = self._w
        # drop each decoded chunk after the last window whose origin it holds
        keys = self.plan.groups[mine]
        _, first_from_end = np.unique(keys[::-1], return_index=True)
        last_use = set((len(keys) - 1 - first_from_end).tolist())
        for i, index in enumerate(mine):
            c, origin = w.locate(int(index))
            sample = self._s.sample(c, origin)
            if i in last_use:
                w.release(c, w.chunk_key(c, origin))
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
            "even_ranks": self.plan.even_ranks,
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
        # a state without the key was saved when ranks were not evened by default
        if self.world_size > 1 and bool(state.get("even_ranks", False)) != self.plan.even_ranks:
            raise ValueError(
                f"state of even_ranks={bool(state.get('even_ranks', False))} cannot resume a "
                f"dataset of even_ranks={self.plan.even_ranks}: each rank's windows differ"
            )
        self.epoch = int(state["epoch"])
        self._resume = dict(state)
        self._yielded = int(state.get("samples", 0))

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CubeDataLoader(DataLoader):
    """A DataLoader that tells its :class:`StreamingCubeDataset` what the loop consumed.

    Takes the arguments of ``torch.utils.data.DataLoader``. Each batch handed to the
    training loop is counted, so that ``dataset.state_dict()`` (or this loader's
    :meth:`state_dict`) says exactly where to resume, whatever ``num_workers``; after a
    full pass the dataset moves to the next epoch unless :meth:`set_epoch` drives it.

    With worker processes and the default ``collate_fn``, batches are those of
    ``default_collate``, handed over with fewer tensors: each tensor crosses from a
    worker to the main process as a shared-memory file of its own, whose descriptor the
    main process fetches over a socket, so the offsets (three tensors of a few integers
    per batch) travel as one NumPy array inside the batch's pickle and become tensors in
    the main process. Works for :class:`CubeDataset` too.

    Before its first ``fork`` of worker processes, it decodes one stored chunk in the
    main process (:meth:`eocube.windows.WindowIndex.warm_up`), so that the workers
    inherit the video decoders loaded rather than load them each (about a second per
    worker and epoch on a small machine, without ``persistent_workers``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # pinned batches: default_collate's, pinned by the loader (its pin thread would
        # leave the NumPy offsets unpinned)
        self._compact = (
            self.collate_fn is default_collate and self.num_workers > 0 and not self.pin_memory
        )
        if self._compact:
            self.collate_fn = _collate_in_worker
        self._warm = False

    def _warm_up(self) -> None:
        """Load the video decoders in this process before workers are forked from it."""
        if self._warm or not self.num_workers:
            return
        self._warm = True
        samples = getattr(self.dataset, "_s", None)
        context = self.multiprocessing_context
        if isinstance(context, str):
            method = context
        elif context is not None:
            method = context.get_start_method()
        else:  # the default, without fixing it (the first of the list is the default)
            method = (
                multiprocessing.get_start_method(allow_none=True)
                or multiprocessing.get_all_start_methods()[0]
            )
        if isinstance(samples, _Samples) and method == "fork":
            samples.index.warm_up()

    def _batches(self) -> Iterator[Any]:
        self._warm_up()
        if not self._compact:
            yield from super().__iter__()
            return
        for batch in super().__iter__():
            yield _finish_batch(batch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        ds = self.dataset
        if not isinstance(ds, StreamingCubeDataset):
            yield from self._batches()
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
        for batch in self._batches():
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


class _Columns:
    """Tuples of ints of a batch's samples (the offsets), as one (len, batch) array."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(v) is int for v in value)


def _collate_in_worker(samples: list[Any]) -> Any:
    """``default_collate`` in a worker process, except that tuples of ints (the offsets)
    stay one NumPy array, made tensors in the main process (:func:`_finish_batch`)."""
    first = samples[0] if samples else None
    if type(first) is not dict:
        return default_collate(samples)
    out: dict[str, Any] = {}
    for key, value in first.items():
        column = [s[key] for s in samples]
        if _ints(value) and value and all(_ints(c) and len(c) == len(value) for c in column):
            out[key] = _Columns(np.array(column, dtype=np.int64).T.copy())
        else:
            out[key] = default_collate(column)
    return out


def _finish_batch(batch: Any) -> Any:
    """The batch ``default_collate`` makes, from :func:`_collate_in_worker`'s."""
    if type(batch) is dict:
        for key, value in batch.items():
            if isinstance(value, _Columns):
                batch[key] = list(torch.from_numpy(value.values))
    return batch


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()))
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    return len(batch)


__all__ = ["CubeDataLoader", "CubeDataset", "GPUFallbackWarning", "StreamingCubeDataset"]

"""eocube.torch: map-style and streaming datasets, workers, ranks, resuming, GPU fallback,
NaN handling, dims in any order, cubes smaller than the window."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

import eocube  # noqa: E402
from eocube.gpu import GPUFallbackWarning, NvdecDecoder  # noqa: E402
from eocube.torch import (  # noqa: E402
    CubeDataLoader,
    CubeDataset,
    StreamingCubeDataset,
)
from eocube.windows import ChunkCache, Notifier, WindowIndex, describe  # noqa: E402

DATA = Path(__file__).parent / "data"
# two 4-band Sentinel-2 cubes (uint16; the second cut to 20 dates), batched together
CUBES = {"s2_l2a_openeo_gfmap_19x4x52x46": None, "s2_l2a_worldcereal_118x4x64x64": slice(0, 20)}
NAN_CUBE = "s2_l2a_fusets_field_33x3x57x56"  # float32 with NaN
SST_CUBE = "stars_cmip3_tos_24x1x170x180"  # float32 sea-surface temperature, NaN over land
SST_WINDOW = {"time": 4, "y": 32, "x": 32}
WINDOW = {"time": 4, "y": 16, "x": 16}
CHUNKS = {"time": 8, "y": 32, "x": 32}


def _store(root: Path, name: str, time: slice | None = None) -> str:
    with xr.open_dataset(DATA / f"{name}.nc") as ds:
        path = root / f"{name}.eocube"
        eocube.to_eocube(
            ds.isel(time=time or slice(None)).load(), path, chunks=CHUNKS, measure=False
        )
    return str(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("torch")
    return [_store(root, name, time) for name, time in CUBES.items()]


@pytest.fixture(scope="module")
def nan_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _store(tmp_path_factory.mktemp("torch_nan"), NAN_CUBE)


@pytest.fixture(scope="module")
def sst() -> xr.Dataset:
    with xr.open_dataset(DATA / f"{SST_CUBE}.nc") as ds:
        return ds.load()


@pytest.fixture(scope="module")
def sst_store(tmp_path_factory: pytest.TempPathFactory, sst: xr.Dataset) -> str:
    path = tmp_path_factory.mktemp("torch_sst") / f"{SST_CUBE}.eocube"
    eocube.to_eocube(sst, path, chunks={"time": 8, "y": 96, "x": 96}, measure=False)
    return str(path)


def _window(store: str, offset: tuple[int, int, int], size: dict[str, int] = WINDOW) -> np.ndarray:
    t, y, x = offset
    with eocube.open_dataset(store) as ds:
        sel = ds["data"].isel(
            time=slice(t, t + size["time"]), y=slice(y, y + size["y"]), x=slice(x, x + size["x"])
        )
        return np.asarray(sel.values, dtype=np.float32)


def _all_windows(stores: list[str]) -> set[tuple[str, tuple[int, int, int]]]:
    out = set()
    for store in stores:
        ds = CubeDataset(store, window=WINDOW)
        out |= {(ds[0]["cube"], ds.offset(i)) for i in range(len(ds))}
    return out


def _keys(batch: dict) -> list[tuple[str, tuple[int, int, int]]]:
    t, y, x = (v.tolist() for v in batch["offset"])
    return list(zip(batch["cube"], zip(t, y, x, strict=True), strict=True))


def _first_batches(loader: Any, k: int) -> list[list[tuple[str, tuple[int, int, int]]]]:
    """The keys of the first ``k`` batches, the loop then left (as a training loop stops)."""
    head = []
    for batch in loader:
        head.append(_keys(batch))
        if len(head) == k:
            break
    return head


def test_cube_dataset_values_equal_open_dataset(stores: list[str], nan_store: str) -> None:
    for store in [*stores, nan_store]:
        ds = CubeDataset(store, window=WINDOW)
        with eocube.open_dataset(store) as ref:
            T, Y, X = (ref.sizes[d] for d in ("time", "y", "x"))
        assert len(ds) == ((T - 4) // 4 + 1) * ((Y - 16) // 16 + 1) * ((X - 16) // 16 + 1)
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["data"].dtype == torch.float32
            assert sample["cube"] == Path(store).name.removesuffix(".eocube")
            np.testing.assert_array_equal(sample["data"].numpy(), _window(store, sample["offset"]))


def test_cube_dataset_stride_bands_variables_transform(stores: list[str]) -> None:
    store = stores[0]
    with eocube.open_dataset(store) as ref:
        bands = list(ref.band.values[[2, 0]])
        mixed = ref[["data"]].assign(copy=ref["data"] * 2).load()
    ds = CubeDataset(
        store, window={"time": 3, "y": 20, "x": 20}, stride={"time": 5, "y": 9, "x": 7}, bands=bands
    )
    assert ds.offset(1) == (0, 0, 7)
    for i in (0, len(ds) - 1):
        sample = ds[i]
        full = _window(store, sample["offset"], {"time": 3, "y": 20, "x": 20})
        np.testing.assert_array_equal(sample["data"].numpy(), full[:, [2, 0]])
    two = CubeDataset(
        mixed, window=WINDOW, variables=["data", "copy"], transform=lambda s: {**s, "n": 1}
    )
    sample = two[3]
    assert set(sample) == {"data", "copy", "cube", "offset", "n"}
    np.testing.assert_array_equal(sample["copy"].numpy(), 2 * sample["data"].numpy())
    with pytest.raises(ValueError, match="larger than the cube"):
        CubeDataset(store, window={"time": 100})


def test_streaming_in_process_reads_each_chunk_once(
    stores: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _all_windows(stores)
    reads: list[tuple] = []
    original = ChunkCache._read
    monkeypatch.setattr(
        ChunkCache,
        "_read",
        lambda self, *a: reads.append((self.cube.id, a[0], a[2])) or original(self, *a),
    )
    ds = StreamingCubeDataset(stores, window=WINDOW, seed=3, shuffle_buffer=8, cache_chunks=64)
    samples = list(ds)
    assert {(s["cube"], s["offset"]) for s in samples} == expected
    assert len(samples) == len(expected)
    # windows lie inside one chunk each: every chunk is decoded once and serves all its windows
    assert len(reads) == len(set(reads))
    for s in samples[:: len(samples) // 5]:
        store = next(p for p in stores if s["cube"] in p)
        np.testing.assert_array_equal(s["data"].numpy(), _window(store, s["offset"]))


@pytest.mark.parametrize(
    "context",
    ["fork", pytest.param("spawn", marks=pytest.mark.slow)],  # spawn starts 4 interpreters
)
def test_streaming_two_ranks_two_workers_each_window_once(stores: list[str], context: str) -> None:
    # even_ranks=False: every window exactly once per epoch, ranks differing a little
    expected = _all_windows(stores)
    epochs: list[list] = [[], []]
    for rank in (0, 1):
        ds = StreamingCubeDataset(
            stores, window=WINDOW, seed=7, rank=rank, world_size=2, even_ranks=False
        )
        # spawn: workers start once (persistent) and move to the next epoch by themselves;
        # fork: new workers each epoch, driven by set_epoch
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=5,
            num_workers=2,
            multiprocessing_context=context,
            persistent_workers=context == "spawn",
        )
        for epoch in (0, 1):
            if context == "fork":
                ds.set_epoch(epoch)
            mine = [k for batch in loader for k in _keys(batch)]
            assert abs(len(mine) - len(expected) / 2) <= 16  # ranks differ by a chunk at most
            epochs[epoch] += mine
    for seen in epochs:
        assert len(seen) == len(expected)
        assert set(seen) == expected
    assert epochs[0] != epochs[1]


def test_streaming_order_is_the_same_on_every_rank_and_shuffles() -> None:
    data = xr.Dataset({"data": (("time", "band", "y", "x"), np.zeros((8, 1, 64, 64), np.float32))})
    parts = []
    for rank in range(3):
        ds = StreamingCubeDataset(
            [data],
            window={"time": 2, "y": 8, "x": 8},
            seed=5,
            rank=rank,
            world_size=3,
            even_ranks=False,
        )
        parts.append([s["offset"] for s in ds])
    flat = [o for p in parts for o in p]
    assert len(flat) == len(set(flat)) == 4 * 8 * 8
    assert flat != sorted(flat)
    even = [
        len(
            list(
                StreamingCubeDataset(
                    [data], window={"time": 3}, rank=r, world_size=2, even_ranks=True
                )
            )
        )
        for r in range(2)
    ]
    assert even[0] == even[1]


@pytest.mark.parametrize(("workers", "k"), [(0, 3), (2, 5)])
def test_resume_after_k_batches_continues_where_it_stopped(
    stores: list[str], workers: int, k: int
) -> None:
    def make() -> tuple[StreamingCubeDataset, CubeDataLoader]:
        ds = StreamingCubeDataset(stores, window=WINDOW, seed=11)
        ds.set_epoch(2)
        return ds, CubeDataLoader(
            ds,
            batch_size=6,
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )

    _, loader = make()
    full = [_keys(b) for b in loader]
    ds, loader = make()
    head = _first_batches(loader, k)
    state = ds.state_dict()
    assert state["epoch"] == 2
    ds2, loader2 = make()
    ds2.load_state_dict(state)
    tail = [_keys(b) for b in loader2]
    assert head + tail == full
    flat = [w for b in full for w in b]
    assert len(flat) == len(set(flat)) == len(_all_windows(stores))
    # a state taken after the resumed pass ended starts the next epoch from its beginning
    assert ds2.state_dict()["samples"] == 0


def test_resume_with_plain_dataloader_in_process(stores: list[str]) -> None:
    ds = StreamingCubeDataset(stores, window=WINDOW, seed=2)
    full = [k for b in torch.utils.data.DataLoader(ds, batch_size=4) for k in _keys(b)]
    ds.set_epoch(0)
    it = iter(torch.utils.data.DataLoader(ds, batch_size=4))
    head = [k for _ in range(3) for k in _keys(next(it))]
    state = ds.state_dict()
    again = StreamingCubeDataset(stores, window=WINDOW, seed=2)
    again.load_state_dict(state)
    tail = [k for b in torch.utils.data.DataLoader(again, batch_size=4) for k in _keys(b)]
    assert head + tail == full
    with pytest.raises(ValueError, match="seed"):
        StreamingCubeDataset(stores, window=WINDOW, seed=3).load_state_dict(state)


# --- ranks under DDP: the same number of batches on every rank -----------------------------

EVEN_WINDOW = {"time": 2, "y": 8, "x": 8}
Offsets = tuple[int, int, int]


def _chunked() -> xr.Dataset:
    """40 windows of EVEN_WINDOW (not a multiple of 3) in 12 stored chunks of 4, 4 and 2."""
    values = np.arange(8 * 16 * 40, dtype=np.float32).reshape(8, 1, 16, 40)
    ds = xr.Dataset({"data": (("time", "band", "y", "x"), values)})
    ds["data"].encoding["preferred_chunks"] = {"time": 2, "y": 16, "x": 16}
    return ds


def _rank_epochs(workers: int, epochs: int = 2, **kwargs: Any) -> list[list[list[Offsets]]]:
    """Per epoch, per rank of 3: the batches' offsets (batches of 4: with 2 workers and
    shares cut at chunk boundaries, ranks would make 5, 4 and 5 batches in epoch 1)."""
    data = _chunked()
    out: list[list[list[Offsets]]] = [[] for _ in range(epochs)]
    for rank in range(3):
        ds = StreamingCubeDataset(
            [data], window=EVEN_WINDOW, seed=1, rank=rank, world_size=3, **kwargs
        )
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=4,
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        for epoch in range(epochs):
            ds.set_epoch(epoch)
            batches = [[o for _, o in _keys(b)] for b in loader]
            assert sum(map(len, batches)) == len(ds)
            out[epoch].append(batches)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_every_rank_yields_as_many_samples_and_batches_by_default(workers: int) -> None:
    every = {(t, y, x) for t in range(0, 8, 2) for y in (0, 8) for x in range(0, 40, 8)}
    for epoch, ranks in enumerate(_rank_epochs(workers)):
        # each rank's part of the epoch without evening
        parts = []
        for rank in range(3):
            uneven = StreamingCubeDataset(
                [_chunked()], window=EVEN_WINDOW, seed=1, rank=rank, world_size=3, even_ranks=False
            )
            uneven.set_epoch(epoch)
            parts.append({o for s in uneven for o in [s["offset"]]})
        assert len({len(p) for p in parts}) > 1  # 40 windows, 3 ranks: uneven parts
        counts = [sum(map(len, batches)) for batches in ranks]
        assert counts == [max(map(len, parts))] * 3  # padded up to the longest part
        assert len({len(batches) for batches in ranks}) == 1  # the same number of batches
        seen = [{o for b in batches for o in b} for batches in ranks]
        assert seen == parts  # each rank reads its own part, repeating some of its windows
        assert set.union(*seen) == every


@pytest.mark.parametrize("workers", [0, 2])
def test_even_ranks_false_reads_every_window_once(workers: int) -> None:
    for ranks in _rank_epochs(workers, even_ranks=False):
        offsets = [o for batches in ranks for b in batches for o in b]
        assert len(offsets) == len(set(offsets)) == 40
        counts = [sum(map(len, batches)) for batches in ranks]
        assert len(set(counts)) > 1  # 40 windows cannot split evenly over 3 ranks
        assert all(abs(c - 40 / 3) <= 4 for c in counts)  # a chunk's windows from even


def test_even_ranks_is_part_of_the_state(stores: list[str]) -> None:
    state = StreamingCubeDataset(
        [_chunked()], window=EVEN_WINDOW, rank=1, world_size=3
    ).state_dict()
    assert state["even_ranks"] is True
    other = StreamingCubeDataset(
        [_chunked()], window=EVEN_WINDOW, rank=1, world_size=3, even_ranks=False
    )
    with pytest.raises(ValueError, match="even_ranks"):
        other.load_state_dict(state)
    # a state saved before even_ranks was saved (then not evened by default)
    other.load_state_dict({k: v for k, v in state.items() if k != "even_ranks"})
    # one rank: nothing to even, any state resumes
    StreamingCubeDataset(stores, window=WINDOW, even_ranks=False).load_state_dict(
        StreamingCubeDataset(stores, window=WINDOW).state_dict()
    )


@pytest.mark.parametrize(("workers", "k"), [(0, 2), (2, 3)])
def test_resume_on_an_evened_rank(workers: int, k: int) -> None:
    def make() -> tuple[StreamingCubeDataset, CubeDataLoader]:
        ds = StreamingCubeDataset([_chunked()], window=EVEN_WINDOW, seed=1, rank=2, world_size=3)
        ds.set_epoch(1)
        return ds, CubeDataLoader(
            ds,
            batch_size=2,
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )

    _, loader = make()
    full = [_keys(b) for b in loader]
    ds, loader = make()
    head = _first_batches(loader, k)
    ds2, loader2 = make()
    ds2.load_state_dict(ds.state_dict())
    assert head + [_keys(b) for b in loader2] == full


def test_map_style_under_a_distributed_sampler_pads_every_rank() -> None:
    # what CubeDataset's notes say: DistributedSampler pads every rank to ceil(n / ranks)
    ds = CubeDataset(_chunked(), window=EVEN_WINDOW)
    assert len(ds) == 40
    parts = []
    for rank in range(3):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=3, rank=rank, seed=2)
        loader = CubeDataLoader(ds, batch_size=4, sampler=sampler)
        parts.append([o for b in loader for _, o in _keys(b)])
    assert [len(p) for p in parts] == [14, 14, 14]
    assert {o for p in parts for o in p} == {ds.offset(i) for i in range(len(ds))}


# --- batches from worker processes ---------------------------------------------------------


def test_cube_dataloader_batches_equal_default_collate(sst_store: str) -> None:
    from eocube.torch import _collate_in_worker, _finish_batch

    ds = CubeDataset(sst_store, window=SST_WINDOW, nan="mask")
    samples = [ds[i] for i in range(5)]
    _assert_same_batch(
        _finish_batch(_collate_in_worker(samples)), torch.utils.data.default_collate(samples)
    )
    tensors = [s["data"] for s in samples]  # samples that a transform made tensors
    _assert_same_batch(_collate_in_worker(tensors), torch.stack(tensors))
    stream = StreamingCubeDataset([sst_store], window=SST_WINDOW, nan="mask", seed=3)
    plain = torch.utils.data.DataLoader(stream, batch_size=4, num_workers=2)
    ours = CubeDataLoader(stream, batch_size=4, num_workers=2)
    assert ours.collate_fn is _collate_in_worker
    for made, expected in zip(ours, plain, strict=True):
        _assert_same_batch(made, expected)
    # its own collate_fn, pinned batches or no workers: the loader's collate_fn as given
    assert CubeDataLoader(stream, batch_size=4).collate_fn is torch.utils.data.default_collate
    assert CubeDataLoader(stream, num_workers=2, collate_fn=list).collate_fn is list


def test_cube_dataloader_warms_the_decoders_before_forking_workers(
    stores: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = WindowIndex.warm_up
    monkeypatch.setattr(WindowIndex, "warm_up", lambda self: calls.append(1) or original(self))
    ds = StreamingCubeDataset(stores[:1], window=WINDOW)
    forked = CubeDataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork")
    for _ in range(2):  # workers forked anew each epoch, warmed once
        assert sum(len(b["cube"]) for b in forked) == len(ds)
    assert calls == [1]
    assert sum(len(b["cube"]) for b in CubeDataLoader(ds, batch_size=8)) == len(ds)
    assert calls == [1]  # no workers: nothing to warm


def _assert_same_batch(made: object, expected: object) -> None:
    assert type(made) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert isinstance(made, torch.Tensor)
        assert made.dtype == expected.dtype
        torch.testing.assert_close(made, expected, equal_nan=True, rtol=0, atol=0)
    elif isinstance(expected, dict):
        assert isinstance(made, dict)
        assert list(made) == list(expected)
        for key, value in expected.items():
            _assert_same_batch(made[key], value)
    elif isinstance(expected, list):
        assert isinstance(made, list)
        assert len(made) == len(expected)
        for a, b in zip(made, expected, strict=True):
            _assert_same_batch(a, b)
    else:
        assert made == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="covers machines without a GPU")
def test_gpu_fallback_warns_once_and_reads_the_same_values(
    stores: list[str], nan_store: str
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CubeDataset(nan_store, window=WINDOW, device="cuda")
        samples = [ds[i] for i in range(6)]
        streamed = list(StreamingCubeDataset(stores, window=WINDOW, device="cuda"))
    fallbacks = [w for w in caught if issubclass(w.category, GPUFallbackWarning)]
    assert len(fallbacks) == 2  # one per dataset
    assert "CUDA is not available" in str(fallbacks[0].message)
    assert all(s["data"].device.type == "cpu" for s in samples)
    assert len(streamed) == len(_all_windows(stores))
    for s in samples:
        np.testing.assert_array_equal(s["data"].numpy(), _window(nan_store, s["offset"]))


def test_gpu_decode_path_falls_back_to_cpu_frames_once(stores: list[str], nan_store: str) -> None:
    # the NVDEC path itself (payloads read from shards, decoded, CF-decoded) on a machine
    # whose NVDEC cannot open: frames go to the CPU, with one warning for the dataset
    for store in [stores[0], nan_store]:
        cube = describe(store, variables=None, bands=None, cube_id=None, storage_options=None)
        notify = Notifier()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = ChunkCache(cube, True, notify, cache_chunks=2)
            assert isinstance(reader.decoder, NvdecDecoder)
            for offset in [(0, 0, 0), (4, 16, 16), (8, 32, 16), (12, 16, 24)]:
                got = reader.window(offset, (4, 16, 16))["data"]
                np.testing.assert_array_equal(got, _window(store, offset))
        if not reader.decoder.gpu_frames:
            assert len([w for w in caught if issubclass(w.category, GPUFallbackWarning)]) == 1
            assert reader.decoder.cpu_frames > 0


def test_catalog_paths_resolve_against_the_catalog_folder(
    stores: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    from eocube import catalog

    # a relative path and an absolute one, as a catalog may list them
    hrefs = [Path(stores[0]).name, stores[1]]
    table = pa.table({"id": ["a", "b"], catalog.STORE_COLUMN: hrefs})
    monkeypatch.setattr(catalog, "open_catalog", lambda url, **kwargs: table)
    ds = StreamingCubeDataset(str(Path(stores[0]).parent / "catalog.parquet"), window=WINDOW)
    assert ds.cube_ids == ["a", "b"]
    assert {s["cube"] for s in ds} == {"a", "b"}


def test_streaming_from_a_release_catalog(tmp_path: Path) -> None:
    from eocube import release

    cubes = {}
    for name, time in CUBES.items():
        with xr.open_dataset(DATA / f"{name}.nc") as ds:
            cubes[name.split("_")[2]] = ds[["data"]].isel(time=time or slice(None)).load()
    release.write_release(cubes, tmp_path / "release", progress=False, chunks=CHUNKS)
    ds = StreamingCubeDataset(str(tmp_path / "release" / "catalog.parquet"), window=WINDOW, seed=1)
    assert sorted(ds.cube_ids) == sorted(cubes)
    seen = [(s["cube"], s["offset"]) for s in ds]
    assert len(seen) == len(set(seen)) == len(ds)
    assert {c for c, _ in seen} == set(cubes)


def test_import_error_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n import eocube.torch\nexcept ImportError as e: print(e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'eocube[torch]'" in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_decodes_on_nvdec_like_the_cpu(tmp_path: Path) -> None:  # pragma: no cover
    # NVDEC decodes HEVC frames of 144 px a side and more: a 170 x 180 cube in one chunk
    with xr.open_dataset(DATA / "stars_cmip3_tos_24x1x170x180.nc") as ds:
        for profile in ("hevc-12bit-420-luma", "hevc-12bit-444"):
            path = tmp_path / f"{profile}.eocube"
            eocube.to_eocube(ds.load(), path, profile=profile, chunks={"time": 8}, measure=False)
            cpu = CubeDataset(path, window={"time": 4, "y": 160, "x": 160})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                gpu = CubeDataset(path, window={"time": 4, "y": 160, "x": 160}, device="cuda")
                samples = [gpu[i] for i in range(len(gpu))]
            reader = gpu._w.reader(0)
            assert all(s["data"].device.type == "cuda" for s in samples)
            for i, s in enumerate(samples):
                np.testing.assert_array_equal(s["data"].cpu().numpy(), cpu[i]["data"].numpy())
            if profile == "hevc-12bit-420-luma":
                assert reader.decoder.gpu_frames > 0, [str(w.message) for w in caught]
                assert not [w for w in caught if issubclass(w.category, GPUFallbackWarning)]


# --- NaN handling --------------------------------------------------------------------------


def _sst_windows(store: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """Decoded SST values, the source's NaN positions, and window origins with land and sea."""
    with eocube.open_dataset(store) as ds:
        decoded = np.asarray(ds["data"].values, dtype=np.float32)
    with xr.open_dataset(DATA / f"{SST_CUBE}.nc") as ds:
        nan = np.isnan(ds["data"].values)
    np.testing.assert_array_equal(np.isnan(decoded), nan)  # the store keeps NaN where it was
    return decoded, nan, [(0, 0, 0), (4, 32, 64), (8, 96, 128), (20, 128, 0)]


def _at(array: np.ndarray, offset: tuple[int, int, int], size: dict[str, int]) -> np.ndarray:
    t, y, x = offset
    return array[t : t + size["time"], :, y : y + size["y"], x : x + size["x"]]


def test_nan_keep_number_and_mask_on_sea_surface_temperature(sst_store: str) -> None:
    decoded, nan, offsets = _sst_windows(sst_store)
    keep = CubeDataset(sst_store, window=SST_WINDOW)
    filled = CubeDataset(sst_store, window=SST_WINDOW, nan=-2)
    masked = CubeDataset(sst_store, window=SST_WINDOW, nan="mask")
    index = {keep.offset(i): i for i in range(len(keep))}
    partly_land = 0
    for offset in offsets:
        i = index[offset]
        where_nan = _at(nan, offset, SST_WINDOW)
        values = _at(decoded, offset, SST_WINDOW)
        partly_land += bool(where_nan.any() and not where_nan.all())
        sample = keep[i]
        assert set(sample) == {"data", "cube", "offset"}
        np.testing.assert_array_equal(sample["data"].numpy(), values)  # NaN where NaN
        np.testing.assert_array_equal(filled[i]["data"].numpy(), np.where(where_nan, -2, values))
        sample = masked[i]
        assert sample["valid"].dtype == torch.bool
        assert sample["valid"].shape == sample["data"].shape
        np.testing.assert_array_equal(sample["valid"].numpy(), ~where_nan)
        np.testing.assert_array_equal(sample["data"].numpy(), np.where(where_nan, 0, values))
    assert partly_land >= 2


def test_samples_do_not_share_memory_with_cached_chunks(sst_store: str) -> None:
    # a window covering whole stored chunks in y and x was a view of the cached chunk:
    # NaN replaced in place, or a transform working in place, changed later samples
    whole_chunk = {"time": 4, "y": 96, "x": 96}
    decoded, nan, _ = _sst_windows(sst_store)
    filled = CubeDataset(sst_store, window=whole_chunk, nan=-2, transform=lambda s: s["data"])
    filled[0].add_(1000)
    expected = np.where(nan[:4, :, :96, :96], -2, decoded[:4, :, :96, :96])
    np.testing.assert_array_equal(filled[0].numpy(), expected)


def test_nan_mask_is_collated_by_a_dataloader(sst_store: str) -> None:
    decoded, nan, _ = _sst_windows(sst_store)
    stream = StreamingCubeDataset([sst_store], window=SST_WINDOW, nan="mask", seed=4)
    batches = list(torch.utils.data.DataLoader(stream, batch_size=8))
    assert sum(len(b["cube"]) for b in batches) == len(stream)
    batch = batches[0]
    assert batch["valid"].dtype == torch.bool
    assert batch["valid"].shape == batch["data"].shape == (8, 4, 1, 32, 32)
    assert not any(torch.isnan(b["data"]).any() for b in batches)
    for k, (_, offset) in enumerate(_keys(batch)):
        np.testing.assert_array_equal(batch["valid"][k].numpy(), ~_at(nan, offset, SST_WINDOW))
        values = np.where(_at(nan, offset, SST_WINDOW), 0, _at(decoded, offset, SST_WINDOW))
        np.testing.assert_array_equal(batch["data"][k].numpy(), values)


def test_nan_mask_per_variable_when_several_are_read(sst: xr.Dataset) -> None:
    two = sst[["data"]].assign(warmer=sst["data"] + 1)
    ds = CubeDataset(two, window=SST_WINDOW, variables=["data", "warmer"], nan="mask")
    sample = ds[7]
    assert set(sample) == {"data", "warmer", "data_valid", "warmer_valid", "cube", "offset"}
    expected = ~np.isnan(_at(sst["data"].values, sample["offset"], SST_WINDOW))
    for name in ("data", "warmer"):
        np.testing.assert_array_equal(sample[f"{name}_valid"].numpy(), expected)
    np.testing.assert_array_equal(
        sample["warmer"].numpy(), np.where(expected, sample["data"].numpy() + 1, 0)
    )
    with pytest.raises(ValueError, match="data_valid"):
        CubeDataset(
            two.assign(data_valid=two["data"]),
            window=SST_WINDOW,
            variables=["data", "data_valid"],
            nan="mask",
        )


@pytest.mark.parametrize(
    ("nan", "error"),
    [
        ("drop", ValueError),
        ("Mask", ValueError),
        (float("nan"), ValueError),
        (None, TypeError),
        (True, TypeError),
        ([0], TypeError),
    ],
)
def test_nan_argument_is_checked(stores: list[str], nan: object, error: type) -> None:
    with pytest.raises(error, match="nan= takes 'keep', 'mask' or a number"):
        CubeDataset(stores[0], window=WINDOW, nan=nan)  # type: ignore[arg-type]
    with pytest.raises(error, match="nan= takes 'keep', 'mask' or a number"):
        StreamingCubeDataset(stores, window=WINDOW, nan=nan)  # type: ignore[arg-type]


# --- dims in another order ---------------------------------------------------------------


@pytest.fixture(scope="module")
def gfmap() -> xr.Dataset:
    with xr.open_dataset(DATA / f"{next(iter(CUBES))}.nc") as ds:
        return ds.load()


def _reordered(ds: xr.Dataset) -> xr.Dataset:
    """The cube with its variables' dims in other orders than (time, band, y, x)."""
    return ds.assign(
        data=ds["data"].transpose("band", "time", "y", "x"),
        mask=ds["mask"].transpose("y", "x", "time"),
    )


def _canonical_window(ds: xr.Dataset, name: str, offset: tuple[int, int, int]) -> np.ndarray:
    t, y, x = offset
    var = ds[name].transpose("time", ..., "y", "x")
    sel = var.isel(time=slice(t, t + 4), y=slice(y, y + 16), x=slice(x, x + 16))
    values = np.asarray(sel.values, dtype=np.float32)
    return values if "band" in var.dims else values[:, None]


def test_dims_in_another_order_store_and_dataset(gfmap: xr.Dataset, tmp_path: Path) -> None:
    store = tmp_path / "reordered.eocube"
    eocube.to_eocube(_reordered(gfmap), store, chunks=CHUNKS, measure=False)
    opened = eocube.open_dataset(store)
    assert opened["data"].dims == ("band", "time", "y", "x")  # read back in the user's order
    # the in-memory Dataset also uses other dim names: windows name the dims or their roles
    renamed = _reordered(gfmap).rename(time="t", y="lat", x="lon")
    cases = [
        (store, opened, WINDOW),
        (renamed, renamed.rename(t="time", lat="y", lon="x"), {"t": 4, "lat": 16, "x": 16}),
    ]
    for source, reference, window in cases:
        ds = CubeDataset(source, window=window, variables=["data", "mask"], bands=["B08", "B02"])
        assert len(ds) == 4 * 3 * 2
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["data"].shape == (4, 2, 16, 16)
            assert sample["mask"].shape == (4, 1, 16, 16)
            full = _canonical_window(reference, "data", sample["offset"])
            np.testing.assert_array_equal(sample["data"].numpy(), full[:, [3, 0]])
            mask = _canonical_window(reference, "mask", sample["offset"])
            np.testing.assert_array_equal(sample["mask"].numpy(), mask)
        streamed = list(StreamingCubeDataset([source], window=window, variables=["data"]))
        assert len(streamed) == len(ds)
        for sample in streamed[::5]:
            full = _canonical_window(reference, "data", sample["offset"])
            np.testing.assert_array_equal(sample["data"].numpy(), full)


def test_dims_in_another_order_gpu_payload_path(gfmap: xr.Dataset, tmp_path: Path) -> None:
    # the NVDEC path reads stored chunks, which are canonical whatever the written order;
    # without NVDEC its frames are decoded on the CPU, through the same code
    reordered = tmp_path / "reordered.eocube"
    eocube.to_eocube(_reordered(gfmap)[["data"]], reordered, chunks=CHUNKS, measure=False)
    # all NaN over its first 4 dates: that chunk is never written and reads as fill value
    values = np.random.default_rng(0).normal(280, 5, (8, 3, 32, 32)).astype(np.float32)
    values[:4] = np.nan
    gap = xr.Dataset({"data": (("time", "band", "y", "x"), values)})
    unwritten = tmp_path / "unwritten.eocube"
    eocube.to_eocube(
        gap.transpose("band", "time", "y", "x"), unwritten, chunks={"time": 4}, measure=False
    )
    offsets = {
        reordered: [(0, 0, 0), (4, 16, 16), (12, 32, 16)],
        unwritten: [(0, 0, 0), (4, 16, 0)],
    }
    for store, origins in offsets.items():
        cube = describe(store, variables=None, bands=None, cube_id=None, storage_options=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GPUFallbackWarning)
            reader = ChunkCache(cube, True, Notifier(), cache_chunks=2)
            assert isinstance(reader.decoder, NvdecDecoder)
            with eocube.open_dataset(store) as reference:
                assert reference["data"].dims[0] == "band"
                for offset in origins:
                    got = reader.window(offset, (4, 16, 16))["data"]
                    expected = _canonical_window(reference, "data", offset)
                    np.testing.assert_array_equal(got, expected)
    assert reader.window((0, 0, 0), (4, 16, 16))["data"].shape == (4, 3, 16, 16)
    assert np.isnan(reader.window((0, 0, 0), (4, 16, 16))["data"]).all()


# --- cubes smaller than the window -------------------------------------------------------


def test_streaming_skips_cubes_smaller_than_the_window(stores: list[str]) -> None:
    small_id, large_id = (Path(s).name.removesuffix(".eocube") for s in stores)
    tiny = xr.Dataset(
        {"data": (("time", "y", "x"), np.zeros((30, 64, 20), np.float32))}, attrs={"id": "tiny"}
    )
    window = {"time": 4, "y": 64, "x": 64}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = StreamingCubeDataset([*stores, tiny], window=window, shuffle=False)
    assert [w.category for w in caught] == [UserWarning]
    message = str(caught[0].message)
    assert "skipping 2 of 3 cubes smaller than the window (time=4, y=64, x=64)" in message
    assert f"'{small_id}' (time=19, y=52, x=46)" in message
    assert "'tiny' (time=30, y=64, x=20)" in message
    assert large_id not in message
    assert ds.cube_ids == [large_id]
    samples = list(ds)
    assert len(samples) == len(CubeDataset(stores[1], window=window)) == 5
    assert {s["cube"] for s in samples} == {large_id}
    np.testing.assert_array_equal(samples[1]["data"].numpy(), _window(stores[1], (4, 0, 0), window))
    with pytest.raises(ValueError, match=r"no cube is as large as the window \(time=30\)"):
        StreamingCubeDataset(stores, window={"time": 30})
    # one cube: the window must fit it
    with pytest.raises(ValueError, match=r"window y=64 is larger than the cube \(52\)"):
        CubeDataset(stores[0], window=window)


def test_packed_stores_stream_the_same_samples(stores: list[str], tmp_path: Path) -> None:
    zipped = []
    for store in stores:
        target = tmp_path / (Path(store).name + ".zip")
        eocube.pack(store, target)
        zipped.append(str(target))
    folder = list(StreamingCubeDataset(stores, window=WINDOW, seed=3, shuffle_buffer=8))
    packed = list(StreamingCubeDataset(zipped, window=WINDOW, seed=3, shuffle_buffer=8))
    assert [(s["cube"], s["offset"]) for s in packed] == [(s["cube"], s["offset"]) for s in folder]
    for a, b in zip(folder, packed, strict=True):
        np.testing.assert_array_equal(a["data"].numpy(), b["data"].numpy())
    mapped = CubeDataset(zipped[0], window=WINDOW)
    np.testing.assert_array_equal(
        mapped[0]["data"].numpy(), CubeDataset(stores[0], window=WINDOW)[0]["data"].numpy()
    )

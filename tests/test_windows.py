"""eocube.windows without torch: window geometry, the epoch plan, reading windows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cubes import open_cube

import eocube
from eocube import windows


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("windows") / "gfmap.eocube"
    cube = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")[["data"]]
    eocube.to_eocube(cube, path, crf=24, chunks={"time": 8, "y": 32, "x": 32}, measure=False)
    return str(path)


def test_the_module_needs_no_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import eocube.windows; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_describe_window_sizes_and_origins(store: str) -> None:
    cube = windows.describe(store, variables=None, bands=["B08", "B02"], cube_id=None,
                            storage_options=None)  # fmt: skip
    assert cube.id == "gfmap"
    assert cube.sizes == (19, 52, 46)
    assert cube.chunks == (8, 32, 32)
    assert cube.band_index == (3, 0)
    win, stride = windows.window_sizes({"time": 4, "y": 16, "x": 16}, cube, {"y": 8})
    assert (win, stride) == ((4, 16, 16), (4, 8, 16))
    starts = windows.origins(cube, win, stride)
    assert [o.tolist() for o in starts] == [[0, 4, 8, 12], [0, 8, 16, 24, 32], [0, 16]]
    with pytest.raises(ValueError, match="larger than the cube"):
        windows.window_sizes({"y": 64}, cube, None)


def test_window_values_equal_the_stores(store: str) -> None:
    cube = windows.describe(store, variables=None, bands=None, cube_id=None, storage_options=None)
    index = windows.WindowIndex([cube], {"time": 4, "y": 16, "x": 16}, None, cache_chunks=2)
    reference = eocube.open_dataset(store).data.values.astype(np.float32)
    for i in (0, 7, index.n_windows - 1):
        c, (t, y, x) = index.locate(i)
        got = index.values(c, (t, y, x))["data"]
        np.testing.assert_array_equal(got, reference[t : t + 4, :, y : y + 16, x : x + 16])


def test_warm_up_decodes_a_chunk_of_an_eocube_store_only(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[int, int, int]] = []
    original = windows.ChunkCache._read
    monkeypatch.setattr(
        windows.ChunkCache, "_read", lambda self, *a: reads.append(a[2]) or original(self, *a)
    )
    cube = windows.describe(store, variables=None, bands=None, cube_id=None, storage_options=None)
    assert cube.video
    index = windows.WindowIndex([cube], {"time": 4}, None, cache_chunks=2)
    assert index.warm_up()
    assert reads == [(0, 0, 0)]
    assert index._readers == {}  # its own readers untouched
    plain = windows.describe(open_cube("stars_bcsd_obs_12x2x33x81"), variables=None,
                             bands=None, cube_id=None, storage_options=None)  # fmt: skip
    assert not plain.video
    assert not windows.WindowIndex([plain], {"time": 4}, None, cache_chunks=2).warm_up()
    assert reads == [(0, 0, 0)]


def test_epoch_plan_covers_every_window_once_across_ranks_and_workers() -> None:
    groups = np.repeat(np.arange(12), [3, 1, 4, 2, 5, 1, 1, 2, 3, 3, 2, 1])
    seen = []
    for rank in range(2):
        plan = windows.EpochPlan(
            groups, seed=5, shuffle_buffer=4, rank=rank, world_size=2, even_ranks=False
        )
        parts = plan.worker_windows(epoch=3, workers=3)
        for part in parts:
            # a worker reads every window of a chunk group it holds
            for g in np.unique(groups[part]):
                assert np.isin(np.flatnonzero(groups == g), part).all()
        seen.extend(np.concatenate(parts).tolist())
    assert sorted(seen) == list(range(len(groups)))
    plan = windows.EpochPlan(groups, seed=5)
    assert not np.array_equal(plan.order(0)[0], plan.order(1)[0])  # a new order each epoch
    np.testing.assert_array_equal(plan.order(1)[0], windows.EpochPlan(groups, seed=5).order(1)[0])


def test_even_ranks_give_every_rank_and_worker_the_same_counts() -> None:
    # 31 windows (not a multiple of 3) in chunks of uneven sizes
    groups = np.repeat(np.arange(12), [3, 1, 4, 2, 5, 1, 1, 2, 3, 3, 2, 4])
    for epoch in range(3):
        plans = [windows.EpochPlan(groups, seed=5, rank=r, world_size=3) for r in range(3)]
        uneven = [
            windows.EpochPlan(groups, seed=5, rank=r, world_size=3, even_ranks=False)
            for r in range(3)
        ]
        parts = [p.rank_part(epoch)[0] for p in plans]
        own = [set(u.rank_part(epoch)[0].tolist()) for u in uneven]
        assert len({len(p) for p in parts}) == 1
        assert len(parts[0]) == max(map(len, own))
        assert [set(p.tolist()) for p in parts] == own  # repeats of the rank's own windows
        assert set.union(*own) == set(range(len(groups)))
        for workers in (1, 2, 3, 4):
            shares = [[len(w) for w in p.worker_windows(epoch, workers)] for p in plans]
            assert shares[0] == shares[1] == shares[2]  # the same batches on every rank
            for p, part in zip(plans, parts, strict=True):
                together = np.concatenate(p.worker_windows(epoch, workers))
                assert sorted(together.tolist()) == sorted(part.tolist())
    # more ranks than chunks: a rank without windows repeats some of the epoch's
    few = np.repeat(np.arange(2), [3, 2])
    parts = [windows.EpochPlan(few, rank=r, world_size=3).rank_part(0)[0] for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]
    # one rank: nothing to even
    plan = windows.EpochPlan(groups, seed=5, world_size=1)
    assert len(plan.rank_part(0)[0]) == len(groups)


def test_remaining_after_a_saved_state_replays_the_dataloader_order() -> None:
    groups = np.repeat(np.arange(6), 4)
    plan = windows.EpochPlan(groups, seed=1)
    whole = plan.worker_windows(0, 2)
    batches = list(windows.deliveries([len(w) for w in whole], 3, False))
    assert batches[:4] == [(0, 3), (1, 3), (0, 3), (1, 3)]
    state = {"num_workers": 2, "batches": 3, "batch_size": 3, "drop_last": False, "samples": 9}
    # worker 0 delivered 2 batches, worker 1 one: worker 1 goes first on resume
    np.testing.assert_array_equal(plan.remaining(0, 2, 0, state), whole[1][3:])
    np.testing.assert_array_equal(plan.remaining(0, 2, 1, state), whole[0][6:])
    with pytest.raises(ValueError, match="num_workers=2"):
        plan.remaining(0, 3, 0, state)


def test_buffer_shuffle_and_split() -> None:
    order = np.arange(100)
    shuffled = windows.buffer_shuffle(order, 10, np.random.default_rng(0))
    assert sorted(shuffled.tolist()) == order.tolist()
    assert not np.array_equal(shuffled, order)
    assert windows.split(np.array([5, 5, 5, 5]), 2).tolist() == [0, 0, 1, 1]


def test_cubes_smaller_than_the_window_are_left_out(store: str) -> None:
    cube = windows.describe(store, variables=None, bands=None, cube_id=None, storage_options=None)
    with pytest.warns(UserWarning, match="skipping 1 of 2 cubes"):
        kept = windows.cubes_the_window_fits(
            [cube, windows.describe(open_cube("stars_bcsd_obs_12x2x33x81"), variables=None,
                                    bands=None, cube_id="small", storage_options=None)],
            {"time": 16, "y": 40},
            None,
        )  # fmt: skip
    assert [c.id for c in kept] == ["gfmap"]
    assert Path(store).exists()

"""eocube.gpu's pool of decoder sessions, with a fake decoder: reuse, the bound, thread
safety, cleanup, eviction; and NvdecDecoder's CPU fallback for tensors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from eocube import gpu, video
from eocube.errors import NvdecError


class FakeContext:
    """Decodes 'packets' holding a frame's bytes; refuses to be used by two threads."""

    def __init__(self, key: gpu.SessionKey, log: FakeOpener) -> None:
        self.key = key
        self.log = log
        self.busy = False
        self.closed = False
        self.flushes = 0
        self.streams = 0

    def decode(self, packet: Any) -> list[bytes]:
        if self.busy:
            self.log.overlaps += 1
        if self.closed:
            self.log.used_closed += 1
        self.busy = True
        try:
            with self.log.lock:
                self.log.active += 1
                self.log.max_active = max(self.log.max_active, self.log.active)
            time.sleep(self.log.delay)
            if packet is None:
                self.streams += 1
                return []
            data = bytes(packet)
            if data == b"boom":
                raise RuntimeError("decoder failed")
            return [data]
        finally:
            with self.log.lock:
                self.log.active -= 1
            self.busy = False

    def flush_buffers(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class FakeOpener:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.contexts: list[FakeContext] = []
        self.active = 0
        self.max_active = 0
        self.overlaps = 0
        self.used_closed = 0

    def __call__(self, key: gpu.SessionKey) -> FakeContext:
        ctx = FakeContext(key, self)
        with self.lock:
            self.contexts.append(ctx)
        return ctx

    @property
    def opens(self) -> int:
        return len(self.contexts)


def _stream(
    frames: list[bytes], width: int = 256, pix_fmt: str = "yuv444p12le"
) -> video.EncodedStream:
    return video.EncodedStream("hevc", pix_fmt, 256, width, len(frames), tuple(frames), b"x")


def test_a_second_stream_of_the_same_key_reuses_the_context() -> None:
    opener = FakeOpener()
    pool = gpu.SessionPool(2, opener=opener)
    assert pool.frames(_stream([b"a", b"b"]), "hwaccel") == [b"a", b"b"]
    assert pool.frames(_stream([b"c"]), "hwaccel") == [b"c"]
    assert opener.opens == 1
    (ctx,) = opener.contexts
    assert ctx.streams == 2
    assert ctx.flushes == 2  # reset between streams
    # another key (frame size, method, device or output kind): another context
    pool.frames(_stream([b"d"], width=128), "hwaccel")
    pool.frames(_stream([b"e"]), "hwaccel", device=1)
    assert opener.opens == 3
    assert {c.key.width for c in opener.contexts} == {256, 128}
    assert pool.open_count == 2  # the bound: the first key's context made room
    pool.close()


def test_sessions_for_keys_and_the_process_pool() -> None:
    key = gpu.SessionKey.of(_stream([b"a"]), "hwaccel", 0)
    assert key == gpu.SessionKey("hwaccel", "hevc", "yuv444p12le", 256, 256, b"x", 0, False)
    assert gpu.default_pool() is gpu.default_pool()
    assert gpu.default_pool().max_sessions == gpu.DEFAULT_MAX_SESSIONS == 7
    with pytest.raises(ValueError, match="at least 1"):
        gpu.SessionPool(0)


def test_the_bound_holds_with_many_threads() -> None:
    opener = FakeOpener(delay=0.002)
    pool = gpu.SessionPool(2, opener=opener)
    streams = [
        _stream([bytes([i, j]) for j in range(4)], width=256 + 2 * (i % 3)) for i in range(24)
    ]
    with ThreadPoolExecutor(8) as threads:
        results = list(threads.map(lambda s: pool.frames(s, "hwaccel"), streams))
    assert results == [list(s.packets) for s in streams]
    assert opener.max_active <= 2
    assert pool.open_count <= 2
    assert pool.in_use == 0
    assert opener.overlaps == 0
    assert opener.used_closed == 0
    pool.close()


def test_many_threads_one_key_never_share_a_context() -> None:
    opener = FakeOpener(delay=0.001)
    pool = gpu.SessionPool(3, opener=opener)
    streams = [_stream([f"{i}:{j}".encode() for j in range(5)]) for i in range(40)]
    with ThreadPoolExecutor(16) as threads:
        results = list(threads.map(lambda s: pool.frames(s, "hwaccel"), streams))
    assert results == [list(s.packets) for s in streams]
    assert opener.overlaps == 0
    assert opener.max_active <= 3
    assert opener.opens <= 3  # reused, never more than the bound
    assert sum(c.streams for c in opener.contexts) == len(streams)
    pool.close()


def test_several_streams_in_flight_through_map() -> None:
    opener = FakeOpener(delay=0.01)
    pool = gpu.SessionPool(4, opener=opener)
    streams = [_stream([bytes([i])] * 3) for i in range(8)]
    t0 = time.perf_counter()
    got = pool.map(lambda s: pool.frames(s, "hwaccel"), streams)
    elapsed = time.perf_counter() - t0
    assert got == [list(s.packets) for s in streams]
    assert 1 < opener.max_active <= 4
    assert elapsed < 8 * 4 * 0.01  # not one after the other
    pool.close()


def test_close_closes_every_context_and_the_pool_stays_usable() -> None:
    opener = FakeOpener()
    pool = gpu.SessionPool(3, opener=opener)
    for width in (256, 258, 260):
        pool.frames(_stream([b"a"], width=width), "hwaccel")
    assert pool.idle == 3
    pool.close()
    assert all(c.closed for c in opener.contexts)
    assert pool.open_count == 0
    assert pool.closed == 3
    # a context in use when the pool closes is closed when it comes back
    with pool.session(gpu.SessionKey.of(_stream([b"a"]), "hwaccel", 0)) as ctx:
        pool.close()
        assert not ctx.closed
    assert ctx.closed
    assert pool.open_count == 0
    with gpu.SessionPool(2, opener=opener) as scoped:
        scoped.frames(_stream([b"b"]), "hwaccel")
    assert all(c.closed for c in opener.contexts)


def test_a_context_that_raised_is_discarded_not_reused() -> None:
    opener = FakeOpener()
    pool = gpu.SessionPool(2, opener=opener)
    with pytest.raises(NvdecError, match="decoder failed"):
        pool.frames(_stream([b"a", b"boom"]), "hwaccel")
    (bad,) = opener.contexts
    assert bad.closed
    assert pool.open_count == 0
    assert pool.frames(_stream([b"a"]), "hwaccel") == [b"a"]
    assert opener.opens == 2
    assert not opener.contexts[1].closed
    # a stream that decodes to too few frames raises, and its context goes too
    short = video.EncodedStream("hevc", "yuv444p12le", 256, 256, 3, (b"a",), b"x")
    with pytest.raises(NvdecError, match="returned 1 frames, 3 were encoded"):
        pool.frames(short, "hwaccel")
    assert opener.contexts[1].closed
    # an opener that fails frees its slot
    failing = gpu.SessionPool(1, opener=lambda key: (_ for _ in ()).throw(NvdecError("no GPU")))
    for _ in range(3):
        with pytest.raises(NvdecError, match="no GPU"):
            failing.frames(_stream([b"a"]), "hwaccel")
    assert failing.open_count == 0
    assert failing.in_use == 0


def test_idle_contexts_of_other_keys_are_evicted_least_recently_used_first() -> None:
    opener = FakeOpener()
    pool = gpu.SessionPool(2, opener=opener)
    a, b, c = (_stream([b"x"], width=w) for w in (256, 258, 260))
    pool.frames(a, "hwaccel")
    pool.frames(b, "hwaccel")
    pool.frames(a, "hwaccel")  # a is now the more recently used
    pool.frames(c, "hwaccel")  # evicts b
    ctx_a, ctx_b, ctx_c = opener.contexts
    assert ctx_b.closed
    assert not ctx_a.closed
    assert not ctx_c.closed
    assert pool.open_count == 2
    pool.frames(a, "hwaccel")
    assert opener.opens == 3  # a was kept
    pool.close()


def test_a_thread_waits_when_every_context_is_in_use() -> None:
    opener = FakeOpener()
    pool = gpu.SessionPool(1, opener=opener)
    key = gpu.SessionKey.of(_stream([b"a"]), "hwaccel", 0)
    other = gpu.SessionKey.of(_stream([b"a"], width=300), "hwaccel", 0)
    got: list[int] = []
    with pool.session(key):
        waiter = threading.Thread(
            target=lambda: got.append(len(pool.frames(_stream([b"q"], width=300), "hwaccel")))
        )
        waiter.start()
        time.sleep(0.05)
        assert not got  # waiting: the only context is in use
        assert pool.open_count == 1
    waiter.join(5)
    assert got == [1]
    assert opener.opens == 2  # the idle context of the other key made room
    assert opener.contexts[0].closed
    assert other == opener.contexts[1].key
    pool.close()


def test_nvdec_decoder_tensors_fall_back_to_the_cpu() -> None:
    torch = pytest.importorskip("torch")
    from eocube import chunk, device

    rng = np.random.default_rng(0)
    block = rng.integers(0, 4000, (2, 4, 32, 40)).astype(np.uint16)
    payload = chunk.encode_chunk(block)
    messages: list[str] = []
    decoder = gpu.NvdecDecoder(on_fallback=messages.append)
    got = device.decode_chunk_tensor(payload, "cpu", stream_decoder=decoder.decode_tensor)
    assert got.numpy().tobytes() == chunk.decode_chunk(payload).tobytes()
    assert decoder.gpu_frames == 0
    assert decoder.cpu_frames > 0
    if not torch.cuda.is_available():
        assert not messages  # CPU tensors asked for: no NVDEC tried, nothing to say


@pytest.mark.skipif(not gpu.nvdec_available(), reason="needs NVDEC")
def test_nvdec_sessions_are_reused_on_a_gpu() -> None:  # pragma: no cover
    from eocube import chunk

    rng = np.random.default_rng(0)
    payload = chunk.encode_chunk(rng.integers(0, 4000, (2, 3, 160, 160)).astype(np.uint16))
    pool = gpu.SessionPool(2)
    decoder = gpu.NvdecDecoder(pool=pool)
    for _ in range(3):
        np.testing.assert_array_equal(
            gpu.decode_chunk_with(payload, decoder), chunk.decode_chunk(payload)
        )
    assert pool.opened == 1
    pool.close()

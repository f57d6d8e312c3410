"""The hub double's network emulation: latency per request, one shared link of bandwidth.

Plain ``http.client`` requests for a file's bytes (``/resolve/``), timed. Only lower
bounds, which a slow machine cannot break, and one loose upper bound for plain loopback.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hub_server import HubServer

REPO = "eocube/network"
SIZE = 400_000
BLOB = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256)
PATH = f"/datasets/{REPO}/resolve/main/blob.bin"


def _add_blob(server: HubServer) -> HubServer:
    """A dataset repo ``REPO`` holding ``blob.bin`` (``BLOB``); uploads are not paced."""
    server.create_repo({"type": "dataset", "name": "network", "organization": "eocube"})
    op = {"path": "blob.bin", "content": base64.b64encode(BLOB).decode()}
    lines = [{"key": "header", "value": {"summary": "add blob"}}, {"key": "file", "value": op}]
    server.commit("dataset", REPO, "main", "\n".join(map(json.dumps, lines)).encode())
    return server


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield _add_blob(server)


def _connect(hub: HubServer) -> http.client.HTTPConnection:
    split = urlsplit(hub.url)
    assert split.hostname is not None
    return http.client.HTTPConnection(split.hostname, split.port, timeout=30)


def _get(conn: http.client.HTTPConnection, start: int = 0, end: int = SIZE) -> bytes:
    conn.request("GET", PATH, headers={"Range": f"bytes={start}-{end - 1}"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 206
    return body


def _sequential(hub: HubServer, n: int) -> float:
    conn = _connect(hub)
    try:
        _get(conn, 0, 10)  # connected, first answer in: the timing starts warm
        t0 = time.perf_counter()
        for i in range(n):
            assert _get(conn, i, i + 100) == BLOB[i : i + 100]
        return time.perf_counter() - t0
    finally:
        conn.close()


def test_off_by_default(hub: HubServer) -> None:
    assert hub.latency == 0
    assert hub.bandwidth is None
    # plain loopback: 5 small requests are far from 5 x 50 ms (loose: a slow machine)
    assert _sequential(hub, 5) < 0.25


def test_latency_is_added_per_request(hub: HubServer) -> None:
    hub.emulate(latency=0.05)
    assert hub.latency == 0.05
    assert hub.bandwidth is None
    assert _sequential(hub, 5) >= 0.25
    hub.emulate()  # off again on the running server
    assert hub.latency == 0
    assert _sequential(hub, 5) < 0.25


def test_bandwidth_caps_one_transfer() -> None:
    with HubServer(bandwidth=2e6) as server:
        assert server.bandwidth == 2e6
        conn = _connect(_add_blob(server))
        try:
            t0 = time.perf_counter()
            body = _get(conn)
            seconds = time.perf_counter() - t0
        finally:
            conn.close()
    assert body == BLOB
    assert seconds >= 0.9 * SIZE / 2e6  # 0.2 s at 2 MB/s


def test_concurrent_transfers_share_the_link(hub: HubServer) -> None:
    hub.emulate(bandwidth=2e6)
    conns = [_connect(hub) for _ in range(2)]
    for conn in conns:
        _get(conn, 0, 10)  # connected before the clock starts
    barrier = threading.Barrier(len(conns) + 1)
    bodies: dict[int, bytes] = {}

    def fetch(i: int) -> None:
        barrier.wait()
        bodies[i] = _get(conns[i])

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(conns))]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    assert bodies == {0: BLOB, 1: BLOB}
    # one link for both: the sum of their bytes at 2 MB/s (0.4 s), not 0.2 s each in parallel
    assert seconds >= 0.9 * 2 * SIZE / 2e6


def test_latency_and_bandwidth_add_up(hub: HubServer) -> None:
    hub.emulate(latency=0.05, bandwidth=4e6)
    assert (hub.latency, hub.bandwidth) == (0.05, 4e6)
    conn = _connect(hub)
    try:
        t0 = time.perf_counter()
        assert _get(conn) == BLOB
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    assert seconds >= 0.9 * (0.05 + SIZE / 4e6)  # 0.15 s


def test_bad_settings_are_refused(hub: HubServer) -> None:
    with pytest.raises(ValueError, match="latency"):
        hub.emulate(latency=-1)
    with pytest.raises(ValueError, match="bandwidth"):
        hub.emulate(bandwidth=0)
    with pytest.raises(ValueError, match="bandwidth"):
        HubServer(bandwidth=-5)

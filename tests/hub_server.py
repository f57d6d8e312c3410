"""A local stand-in for the Hugging Face hub, for tests and benchmarks without internet.

It answers the HTTP endpoints that the real ``huggingface_hub`` client uses to publish a
dataset and to read it back through ``HfFileSystem`` (``hf://`` URLs):

========================================================  ==================================
``POST /api/repos/create``                                create a repo (409 if it exists)
``POST /api/validate-yaml``                               check a dataset card's front matter
``GET  /api/<type>s/<repo>[/revision/<rev>]``             repo info: head sha, files
``POST /api/<type>s/<repo>/branch/<branch>``              create a branch
``POST /api/<type>s/<repo>/preupload/<rev>``              per file: upload mode (always
                                                          "regular") and the ``oid`` held
``POST /api/<type>s/<repo>/commit/<rev>``                 NDJSON commit (base64 "file" ops,
                                                          "deletedFile", "deletedFolder")
``GET  /api/<type>s/<repo>/tree/<rev>[/<path>]``          listing (``recursive``, cursor pages)
``POST /api/<type>s/<repo>/paths-info/<rev>``             info on given paths
``GET|HEAD /<type>s/<repo>/resolve/<rev>/<path>``         file bytes; ``Range`` -> 206
========================================================  ==================================

Every file is committed "regular" (its bytes inside the commit payload), so the client
needs no LFS or Xet transfer; the real hub sends large binary files through Xet instead,
which the client handles on its own. ``preupload`` answers the git ``oid`` of each file
the revision holds, from which ``HfApi.create_commit`` leaves unchanged files out (and
makes no commit when nothing is left). Every request is logged (:class:`Request`: method,
path, ``Range`` header, status, body bytes sent and received), every commit too
(:meth:`HubServer.history`: the files it brought and deleted), and the next commits can
be made to fail (:meth:`HubServer.fail_commit`) to test interrupted uploads.

Network emulation (off by default): ``HubServer(latency=0.02, bandwidth=100e6 / 8)``, or
:meth:`HubServer.emulate` on a running server, adds ``latency`` seconds to every request
(once, before its answer is sent) and sends every answer's body through one shared link
of ``bandwidth`` bytes/s, in pieces of :data:`PIECE_BYTES`: concurrent answers share it
(N transfers get about 1/N of it each) and together never exceed it. Loopback then
behaves like a remote hub behind a link of that latency and bandwidth, as far as the
client can tell; request bodies (uploads) and headers are not paced.

This is a test double written for eocube's tests, not a product feature. To try
publishing offline, run it in a terminal of its own from the repository's root::

    python -m tests.hub_server --port 8765      # serves until Ctrl-C

and point the client at it: ``export HF_ENDPOINT=http://127.0.0.1:8765`` (before Python
starts) or ``publish(..., endpoint=...)`` and ``storage_options={"endpoint": ...}``.
Everything it holds is lost when it stops.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
_SHA = re.compile(r"[0-9a-f]{40}")
_GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"


PIECE_BYTES = 32 * 1024
"""Bytes an emulated link sends at a time (the granularity of its sharing)."""


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's bytes (what the hub reports as a file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Request:
    """One logged request."""

    method: str
    path: str
    query: str
    range: str | None
    status: int
    sent: int
    received: int

    @property
    def is_data(self) -> bool:
        """A GET of file bytes (``/resolve/``), ranged or not."""
        return self.method == "GET" and "/resolve/" in self.path

    @property
    def is_listing(self) -> bool:
        """A tree or paths-info listing."""
        return "/tree/" in self.path or "/paths-info/" in self.path


@dataclass(frozen=True)
class CommitRecord:
    """What one commit did, for tests: the files whose bytes it brought, those it deleted."""

    sha: str
    message: str
    added: tuple[str, ...]
    deleted: tuple[str, ...]


@dataclass
class _Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    date: str
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> _Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if _SHA.fullmatch(revision):
            return self.commits.get(revision)
        return None


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """Tree entries under ``prefix`` (folders first, like the hub's "tree first" order)."""
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    dirs: dict[str, list[str]] = {}
    out_files = []
    for path in sorted(files):
        if not path.startswith(base):
            continue
        rest = path[len(base) :].split("/")
        for depth in range(1, len(rest)):
            if depth > 1 and not recursive:
                break
            dirs.setdefault(base + "/".join(rest[:depth]), []).append(path)
        if len(rest) == 1 or recursive:
            out_files.append(path)
    folders = [
        {"type": "directory", "oid": _tree_oid(files, d), "size": 0, "path": d}
        for d in sorted(dirs)
    ]
    return folders + [_file_entry(p, files[p]) for p in out_files]


def _file_entry(path: str, data: bytes) -> dict[str, Any]:
    return {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}


def _tree_oid(files: dict[str, bytes], folder: str) -> str:
    h = hashlib.sha1()
    for path in sorted(p for p in files if p.startswith(folder + "/")):
        h.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
    return h.hexdigest()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> [start, end) or None if unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise _HubError(400, f"unsupported Range {header!r}")
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    if start >= size or start >= end:
        return None
    return start, end


class _Link:
    """One link of fixed bandwidth shared by every answer: a virtual clock of when it is free.

    A sender books a piece at a time after everything booked before it
    (:meth:`reserve`), waits until that piece would be through, then writes it; so
    concurrent senders take turns piece by piece (each gets about 1/N of the link) and
    the bytes written by any time never exceed what the link could have carried.

    Parameters
    ----------
    bandwidth : float
        Bytes per second.
    """

    def __init__(self, bandwidth: float) -> None:
        if not bandwidth > 0:
            raise ValueError(f"bandwidth must be positive (bytes/s), got {bandwidth}")
        self.bandwidth = float(bandwidth)
        self._free_at = 0.0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> float:
        """Book ``nbytes`` of the link; the ``time.monotonic()`` at which they are through."""
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + nbytes / self.bandwidth
            return self._free_at

    def send(self, write: Callable[[memoryview], Any], data: bytes, piece: int) -> None:
        """Write ``data`` with ``write``, ``piece`` bytes at a time, paced by the link."""
        view = memoryview(data)
        for offset in range(0, len(view), piece):
            part = view[offset : offset + piece]
            delay = self.reserve(len(part)) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            write(part)


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once (default 5)


class HubServer:
    """A threaded HTTP server on a free loopback port that plays the hub.

    Parameters
    ----------
    token : str, optional
        When set, writes need ``Authorization: Bearer <token>``, and so do reads of
        private repos.
    tree_page_size : int
        Entries per page of a tree listing (the hub: 1000), followed by cursor links.
    port : int
        The port (0: a free one).
    latency : float
        Seconds added to every request before its answer is sent (0: none).
    bandwidth : float, optional
        Bytes per second of one link that all answers' bodies share (None: unpaced).
        ``100e6 / 8`` emulates a 100 Mbit/s link.

    Attributes
    ----------
    url : str
        The endpoint to give the client (``HfApi(endpoint=url)``).
    requests : list of Request
        Every request so far, in order of completion.
    """

    def __init__(
        self,
        token: str | None = None,
        tree_page_size: int = 1000,
        port: int = 0,
        *,
        latency: float = 0.0,
        bandwidth: float | None = None,
    ) -> None:
        self.token = token
        self.tree_page_size = tree_page_size
        self.requests: list[Request] = []
        self._commits_to_pass = 0
        self._commits_to_fail = 0
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._latency = 0.0
        self._link: _Link | None = None
        self.emulate(latency=latency, bandwidth=bandwidth)
        self._httpd = _ThreadingServer(("127.0.0.1", port), _make_handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True
        )  # polls for shutdown every 50 ms: stop() returns quickly
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_commit(self, after: int = 0, times: int = 1) -> None:
        """Let ``after`` commits through, then fail the next ``times`` ones.

        A failed commit is answered HTTP 500 once its whole payload was received, and
        changes nothing: as if the upload broke before the hub stored it.
        """
        with self._lock:
            self._commits_to_pass, self._commits_to_fail = after, times

    # -- network emulation ----------------------------------------------------------------

    def emulate(self, latency: float = 0.0, bandwidth: float | None = None) -> None:
        """Set the emulated network; ``emulate()`` turns it off (plain loopback).

        Takes effect for requests that arrive afterwards; answers being sent finish on
        the link they started on.

        Parameters
        ----------
        latency : float
            Seconds added to every request, once, before its answer is sent.
        bandwidth : float, optional
            Bytes per second of the one link all answers' bodies share; None: unpaced.

        Raises
        ------
        ValueError
            For a negative latency or a bandwidth that is not positive.
        """
        if not latency >= 0:
            raise ValueError(f"latency must be >= 0 seconds, got {latency}")
        link = None if bandwidth is None else _Link(bandwidth)
        with self._lock:
            self._latency, self._link = float(latency), link

    @property
    def latency(self) -> float:
        """Seconds added to every request (0: none)."""
        return self._latency

    @property
    def bandwidth(self) -> float | None:
        """Bytes per second of the emulated link, or None when answers are unpaced."""
        link = self._link
        return None if link is None else link.bandwidth

    # -- inspection, for tests ------------------------------------------------------------

    def clear_log(self) -> None:
        """Forget the logged requests."""
        with self._lock:
            self.requests.clear()

    def log_since(self, mark: int) -> list[Request]:
        """Requests logged after the first ``mark`` ones."""
        with self._lock:
            return list(self.requests[mark:])

    def files(
        self, repo_id: str, revision: str = "main", repo_type: str = "dataset"
    ) -> dict[str, bytes]:
        """Path -> bytes of every file of ``repo_id`` at ``revision``."""
        with self._lock:
            commit = self._repo(repo_type, repo_id).resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return dict(commit.files)

    def commits(self, repo_id: str, branch: str = "main", repo_type: str = "dataset") -> list[str]:
        """Commit messages of ``branch``, newest first."""
        return [c.message for c in self.history(repo_id, branch, repo_type)]

    def history(
        self, repo_id: str, branch: str = "main", repo_type: str = "dataset"
    ) -> list[CommitRecord]:
        """The commits of ``branch``, newest first."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            sha: str | None = repo.branches[branch]
            out = []
            while sha is not None:
                c = repo.commits[sha]
                out.append(CommitRecord(c.sha, c.message, c.added, c.deleted))
                sha = c.parent
            return out

    # -- state ----------------------------------------------------------------------------

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _readable(self, repo_type: str, repo_id: str, authorized: bool) -> _Repo:
        repo = self._repo(repo_type, repo_id)
        if repo.private and not authorized:
            raise _HubError(401, "Invalid credentials in Authorization header", "RepoNotFound")
        return repo

    def _commit_at(self, repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _new_commit(
        self,
        repo: _Repo,
        branch: str,
        message: str,
        files: dict[str, bytes],
        added: tuple[str, ...] = (),
        deleted: tuple[str, ...] = (),
    ) -> _Commit:
        parent = repo.branches.get(branch)
        h = hashlib.sha1(f"{parent}\n{message}\n{time.time_ns()}\n".encode())
        for path in sorted(files):
            h.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
        commit = _Commit(h.hexdigest(), parent, message, files, _now(), added, deleted)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    # -- endpoints ------------------------------------------------------------------------

    def create_repo(self, body: dict[str, Any]) -> dict[str, Any]:
        repo_type = body.get("type") or "model"
        name, org = body["name"], body.get("organization")
        repo_id = f"{org}/{name}" if org else f"user/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise _HubError(409, "You already created this repo", None, url=url)
            private = body.get("visibility", "public") == "private" or bool(body.get("private"))
            repo = _Repo(repo_type, repo_id, private)
            self._repos[(repo_type, repo_id)] = repo
            self._new_commit(repo, "main", "initial commit", {".gitattributes": _GITATTRIBUTES})
        return {"url": url, "name": repo_id, "id": repo_id}

    def repo_info(
        self, repo_type: str, repo_id: str, revision: str, authorized: bool
    ) -> dict[str, Any]:
        with self._lock:
            repo = self._readable(repo_type, repo_id, authorized)
            commit = self._commit_at(repo, revision)
            return {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.sha,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "lastModified": commit.date,
                "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            }

    def create_branch(
        self, repo_type: str, repo_id: str, branch: str, body: dict[str, Any]
    ) -> None:
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            if branch in repo.branches:
                raise _HubError(409, f"Reference refs/heads/{branch} already exists")
            start = self._commit_at(repo, body.get("startingPoint") or "main")
            repo.branches[branch] = start.sha

    def preupload(
        self, repo_type: str, repo_id: str, revision: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        with self._lock:
            files = self._commit_at(self._repo(repo_type, repo_id), revision).files
        return {
            "files": [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_oid(files[f["path"]]) if f["path"] in files else None,
                }
                for f in body["files"]
            ],
            "commitOid": None,
        }

    def commit(self, repo_type: str, repo_id: str, revision: str, payload: bytes) -> dict[str, Any]:
        header: dict[str, Any] = {}
        ops = []
        for line in payload.splitlines():
            if line.strip():
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                else:
                    ops.append(item)
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            if revision not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if self._commits_to_pass > 0:
                self._commits_to_pass -= 1
            elif self._commits_to_fail > 0:
                self._commits_to_fail -= 1
                raise _HubError(500, "Internal Error: commit interrupted (test server)")
            head = repo.branches[revision]
            parent = header.get("parentCommit")
            if parent is not None and not head.startswith(parent):
                raise _HubError(412, f"parent commit {parent} is not the head of {revision}")
            files = dict(repo.commits[head].files)
            added, deleted = [], []
            for op in ops:
                value = op["value"]
                path = value["path"]
                if op["key"] == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise _HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[path] = base64.b64decode(value["content"])
                    added.append(path)
                elif op["key"] == "deletedFile":
                    if files.pop(path, None) is None:
                        raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    deleted.append(path)
                elif op["key"] == "deletedFolder":
                    for p in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                        del files[p]
                        deleted.append(p)
                else:
                    raise _HubError(
                        400, f"operation {op['key']!r} is not supported by the test hub"
                    )
            commit = self._new_commit(
                repo, revision, header.get("summary", ""), files, tuple(added), tuple(deleted)
            )
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return {
            "success": True,
            "commitOid": commit.sha,
            "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{commit.sha}",
            "hookOutput": "",
        }

    def tree(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        path: str,
        recursive: bool,
        authorized: bool,
    ) -> list[dict[str, Any]]:
        with self._lock:
            files = self._commit_at(self._readable(repo_type, repo_id, authorized), revision).files
        path = path.strip("/")
        if path and (path in files or not any(p.startswith(path + "/") for p in files)):
            raise _HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        return _entries(files, path, recursive)

    def paths_info(
        self, repo_type: str, repo_id: str, revision: str, paths: list[str], authorized: bool
    ) -> list[dict[str, Any]]:
        with self._lock:
            files = self._commit_at(self._readable(repo_type, repo_id, authorized), revision).files
        out = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                out.append(_file_entry(path, files[path]))
            elif any(p.startswith(path + "/") for p in files):
                out.append(
                    {"type": "directory", "oid": _tree_oid(files, path), "size": 0, "path": path}
                )
        return out

    def file(
        self, repo_type: str, repo_id: str, revision: str, path: str, authorized: bool
    ) -> tuple[bytes, str]:
        with self._lock:
            commit = self._commit_at(self._readable(repo_type, repo_id, authorized), revision)
        if path not in commit.files:
            raise _HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        return commit.files[path], commit.sha


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms stalls
        server_version = "eocube-test-hub/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # every request goes to hub.requests instead

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        # -- plumbing ---------------------------------------------------------------------

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if hub.token is None:
                return True
            return auth == f"Bearer {hub.token}"

        def _require_write(self) -> None:
            if not self._authorized():
                raise _HubError(401, "Invalid credentials in Authorization header")

        def _send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str] | None = None,
            ctype: str = "application/json",
        ) -> int:
            sent = 0 if self.command == "HEAD" else len(body)
            # logged before the client can see the answer, so a test that reads the log
            # right after a call finds every request of that call
            split = urlsplit(self.path)
            hub._log(
                Request(
                    self.command,
                    unquote(split.path),
                    split.query,
                    self.headers.get("Range"),
                    status,
                    sent,
                    self._received,
                )
            )
            latency, link = hub._latency, hub._link
            if latency > 0:
                time.sleep(latency)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if sent and link is None:
                self.wfile.write(body)
            elif sent and link is not None:  # paced: the emulated link
                link.send(self.wfile.write, body, PIECE_BYTES)
            return sent

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> int:
            return self._send(status, json.dumps(obj).encode(), headers)

        def _serve(self) -> None:
            split = urlsplit(self.path)
            self._received = 0
            try:
                body = self._body() if self.command == "POST" else b""
                self._received = len(body)
                self._route(split.path, split.query, body)
            except _HubError as err:
                headers = {"X-Error-Message": err.message}
                if err.code:
                    headers["X-Error-Code"] = err.code
                self._json(err.status, {"error": err.message, **err.extra}, headers)
            except Exception as err:  # a bug in the double: answer 500 and say why
                self._json(500, {"error": f"test hub: {type(err).__name__}: {err}"})

        def _route(self, path: str, query: str, body: bytes) -> int:
            parts = [unquote(p) for p in path.strip("/").split("/")]
            params = parse_qs(query)
            authorized = self._authorized()
            if self.command == "POST" and parts == ["api", "repos", "create"]:
                self._require_write()
                return self._json(200, hub.create_repo(json.loads(body)))
            if self.command == "POST" and parts == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body))
            if len(parts) >= 4 and parts[0] == "api" and parts[1] in _TYPES:
                repo_type, repo_id = _TYPES[parts[1]], f"{parts[2]}/{parts[3]}"
                return self._api(repo_type, repo_id, parts[4:], params, body, authorized)
            # file bytes: /<type>s/<ns>/<name>/resolve/<rev>/<path>, models without prefix
            repo_type = "model"
            if parts and parts[0] in _TYPES and len(parts) > 1:
                repo_type, parts = _TYPES[parts[0]], parts[1:]
            if len(parts) >= 5 and parts[2] == "resolve" and self.command in ("GET", "HEAD"):
                repo_id, revision, file_path = (
                    f"{parts[0]}/{parts[1]}",
                    parts[3],
                    "/".join(parts[4:]),
                )
                return self._resolve(repo_type, repo_id, revision, file_path, authorized)
            raise _HubError(404, f"no such endpoint: {self.command} {path}")

        def _api(
            self,
            repo_type: str,
            repo_id: str,
            rest: list[str],
            params: dict[str, list[str]],
            body: bytes,
            authorized: bool,
        ) -> int:
            method = self.command
            if method == "GET" and not rest:
                return self._json(200, hub.repo_info(repo_type, repo_id, "main", authorized))
            if method == "GET" and rest[0] == "revision" and len(rest) == 2:
                return self._json(200, hub.repo_info(repo_type, repo_id, rest[1], authorized))
            if method == "GET" and rest[0] == "tree" and len(rest) >= 2:
                recursive = params.get("recursive", ["False"])[0].lower() == "true"
                entries = hub.tree(
                    repo_type, repo_id, rest[1], "/".join(rest[2:]), recursive, authorized
                )
                return self._paginated(entries, params)
            if method == "POST" and len(rest) == 2:
                action, revision = rest
                if action == "paths-info":
                    form = parse_qs(body.decode())
                    info = hub.paths_info(
                        repo_type, repo_id, revision, form.get("paths", []), authorized
                    )
                    return self._json(200, info)
                self._require_write()
                if action == "preupload":
                    return self._json(
                        200, hub.preupload(repo_type, repo_id, revision, json.loads(body))
                    )
                if action == "commit":
                    return self._json(200, hub.commit(repo_type, repo_id, revision, body))
                if action == "branch":
                    hub.create_branch(repo_type, repo_id, revision, json.loads(body or b"{}"))
                    return self._json(200, {})
            raise _HubError(404, f"no such endpoint: {method} /api/.../{'/'.join(rest)}")

        def _paginated(self, entries: list[dict[str, Any]], params: dict[str, list[str]]) -> int:
            start = int(params.get("cursor", ["0"])[0])
            page = entries[start : start + hub.tree_page_size]
            headers = {}
            if start + hub.tree_page_size < len(entries):
                query = {k: v[0] for k, v in params.items()}
                query["cursor"] = str(start + hub.tree_page_size)
                qs = "&".join(f"{k}={quote(v)}" for k, v in query.items())
                headers["Link"] = f'<{hub.url}{urlsplit(self.path).path}?{qs}>; rel="next"'
            return self._json(200, page, headers)

        def _validate_yaml(self, body: dict[str, Any]) -> int:
            content = body.get("content", "")
            match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
            errors = []
            if match:
                try:
                    meta = yaml.safe_load(match.group(1))
                except yaml.YAMLError as err:
                    errors.append({"message": f"invalid YAML: {err}"})
                else:
                    if not isinstance(meta, dict):
                        errors.append({"message": "metadata must be a mapping"})
            status = 400 if errors else 200
            return self._json(status, {"errors": errors, "warnings": []})

        def _resolve(
            self, repo_type: str, repo_id: str, revision: str, path: str, authorized: bool
        ) -> int:
            data, sha = hub.file(repo_type, repo_id, revision, path, authorized)
            headers = {
                "Accept-Ranges": "bytes",
                "ETag": f'"{git_blob_oid(data)}"',
                "X-Repo-Commit": sha,
            }
            header = self.headers.get("Range")
            if header is None:
                return self._send(200, data, headers, "application/octet-stream")
            span = _parse_range(header, len(data))
            if span is None:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(416, b"", headers, "application/octet-stream")
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            return self._send(206, data[start:end], headers, "application/octet-stream")

    return Handler


def iter_paths(requests: list[Request]) -> Iterator[str]:
    """``METHOD path [range]`` per request, for readable assertion messages."""
    for r in requests:
        query = "?" + r.query if r.query else ""
        yield f"{r.method} {r.path}{query} {r.range or ''} -> {r.status} ({r.sent} B)"


def main(argv: list[str] | None = None) -> None:
    """Serve the hub double in the foreground until Ctrl-C (``python -m tests.hub_server``)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tests.hub_server",
        description="A local stand-in for the Hugging Face hub (eocube's test double).",
    )
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    parser.add_argument("--token", help="a token the client must send (default: none)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added per request (default 0)"
    )
    parser.add_argument(
        "--mbit", type=float, default=None, help="emulated link in Mbit/s (default: unpaced)"
    )
    args = parser.parse_args(argv)
    bandwidth = None if args.mbit is None else args.mbit * 1e6 / 8
    hub = HubServer(token=args.token, port=args.port, latency=args.latency, bandwidth=bandwidth)
    print(f"hub double at {hub.url}: export HF_ENDPOINT={hub.url} (Ctrl-C stops it)", flush=True)
    try:
        hub._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub._httpd.server_close()


if __name__ == "__main__":
    main()

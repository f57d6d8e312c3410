"""Publishing stores and releases on the Hugging Face hub: :func:`publish`.

``publish`` uploads through ``huggingface_hub``'s ``HfApi.create_commit``, which asks the
hub (its ``preupload`` endpoint) which files it already holds with the same bytes, leaves
those out, and makes no commit at all when nothing is left. What the client cannot know
is the order a release must arrive in, so ``publish`` cuts the upload into commits:

- one cube store at a time, its chunk objects before its metadata and its root
  ``zarr.json`` in its last commit, together with the deletion of the store's remote
  objects that it no longer holds: a revision that holds a store's metadata holds
  every chunk it describes;
- the rest of the folder (catalog, dataset card) last: a revision that holds the
  catalog holds every cube it lists.

A re-run after an interruption cuts the same commits; those already on the hub are found
unchanged and skipped, so only what is missing is sent and the release ends complete.
With ``progress=True`` ``publish`` counts the bytes of the files committed
(:mod:`eocube.progress`); it logs each part on the ``eocube.hub`` logger at INFO (files and
bytes sent, files unchanged, deletions, the new head) and each unchanged file at DEBUG.
``huggingface_hub`` logs its own retries (``Retrying in ...``) at WARNING.

Read a published cube with ``xr.open_dataset("hf://datasets/<repo>@<sha>/cubes/<id>.eocube",
engine="eocube")`` (see :mod:`eocube.hubfs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.utils import RevisionNotFoundError

from eocube.packed import is_packed
from eocube.progress import track

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
MAX_COMMIT_FILES = 500
"""Files per commit, at most."""
MAX_COMMIT_BYTES = 256 * 2**20
"""Bytes added per commit, at most (a single larger file gets a commit of its own)."""

_METADATA = "zarr.json"

Operation = CommitOperationAdd | CommitOperationDelete


@dataclass(frozen=True)
class _Unit:
    """Files committed together, in commit order: one store, or the release's other files."""

    name: str
    files: dict[str, Path]  # path in repo -> local file
    prefix: str | None  # path in repo of a store, or None for loose files


def _is_store(folder: Path) -> bool:
    return (folder / _METADATA).is_file()


def _skipped(name: str) -> bool:
    return (name.startswith(".") and name != ".gitattributes") or name == "__pycache__"


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in sorted(files):
            if not _skipped(name):
                yield Path(root) / name


def _store_order(path_in_repo: str, prefix: str) -> tuple[int, str]:
    """Sort key of a store's file: chunk objects, then array metadata, the root's last."""
    if PurePosixPath(path_in_repo).name != _METADATA:
        return 0, path_in_repo
    return (2 if path_in_repo == f"{prefix}/{_METADATA}" else 1), path_in_repo


def _store_unit(prefix: str, files: dict[str, Path]) -> _Unit:
    ordered = sorted(files, key=lambda p: _store_order(p, prefix))
    return _Unit(prefix, {p: files[p] for p in ordered}, prefix)


def _warn_if_attributes_stay_behind(path: Path) -> None:
    """Warn when ``path`` is a store whose release keeps some of its attributes (they
    are in the release's ``cubes/zarr.json``, which publishing the store alone leaves
    out)."""
    if not _is_store(path):
        return
    import json
    import warnings

    from eocube import metadata
    from eocube.layout import MARKER

    try:
        marker = json.loads((path / _METADATA).read_text(encoding="utf-8"))["attributes"][MARKER]
        listed = marker.get(metadata.SHARED) or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return
    names = [f"{node}.{key}" if node else key for node, keys in listed.items() for key in keys]
    if names:
        warnings.warn(
            f"{path} keeps {len(names)} attributes ({', '.join(names[:6])}"
            f"{', ...' if len(names) > 6 else ''}) in its release's cubes/zarr.json: "
            "published alone, it opens without them; publish the release folder instead",
            UserWarning,
            stacklevel=3,
        )


def _units(path: Path) -> list[_Unit]:
    """The release's shared attributes first, then the stores (sorted), the packed stores
    (one unit: a commit holds many), then the loose files; a store at ``path`` goes under
    its name."""
    if _is_store(path):
        files = {f"{path.name}/{f.relative_to(path).as_posix()}": f for f in _walk(path)}
        return [_store_unit(path.name, files)]
    from eocube.release import CATALOG, CUBES_DIR, SHARED_METADATA

    # a release's cubes/zarr.json (the attributes its cubes share) makes cubes/ a zarr
    # group, not a store: it goes first, so that a revision holding a store that lists
    # shared attributes holds them too
    shared = path / SHARED_METADATA if (path / CATALOG).is_file() else None
    stores: dict[str, dict[str, Path]] = {}
    loose: dict[str, Path] = {}
    first: dict[str, Path] = {}
    packed: dict[str, Path] = {}
    for file in _walk(path):
        rel = file.relative_to(path)
        if shared is not None and file == shared:
            first[rel.as_posix()] = file
            continue
        if is_packed(file):  # a packed store is one file: with the others, before the rest
            packed[rel.as_posix()] = file
            continue
        store = next(
            (
                p
                for p in reversed(rel.parents)
                if p != Path(".")
                and not (shared is not None and p == Path(CUBES_DIR))
                and _is_store(path / p)
            ),
            None,
        )
        if store is None:
            loose[rel.as_posix()] = file
        else:
            stores.setdefault(store.as_posix(), {})[rel.as_posix()] = file
    units = [_store_unit(name, files) for name, files in sorted(stores.items())]
    if packed:
        units.append(_Unit("packed stores", dict(sorted(packed.items())), None))
    if first:
        units.insert(0, _Unit("shared attributes", first, None))
    if loose:
        units.append(_Unit("release files", loose, None))
    return units


@dataclass(frozen=True)
class _Commit:
    """One commit of a unit: files to add (the hub skips those it holds), paths to delete."""

    name: str
    adds: tuple[tuple[str, Path], ...]  # (path in repo, local file), in commit order
    deletes: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of the files the commit adds (sent, or found unchanged on the hub)."""
        return sum(file.stat().st_size for _, file in self.adds)

    def operations(self) -> list[Operation]:
        """The commit's operations (each added file is hashed here, when it is due)."""
        adds = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=f) for p, f in self.adds]
        return [*adds, *(CommitOperationDelete(path_in_repo=p) for p in self.deletes)]


def _commits(unit: _Unit, remote: set[str]) -> list[_Commit]:
    """The commits of ``unit``: its files in order, cut by :data:`MAX_COMMIT_FILES` and
    :data:`MAX_COMMIT_BYTES`; the last also deletes the store's remote objects it lacks.

    Every file is in some commit, changed or not: ``create_commit`` leaves out those the
    hub holds already, so the cut is the same on every run and a re-run resumes it.
    """
    batches: list[list[tuple[str, Path]]] = []
    current: list[tuple[str, Path]] = []
    nbytes = 0
    for path, file in unit.files.items():
        size = file.stat().st_size
        if current and (len(current) >= MAX_COMMIT_FILES or nbytes + size > MAX_COMMIT_BYTES):
            batches.append(current)
            current, nbytes = [], 0
        current.append((path, file))
        nbytes += size
    batches.append(current)
    stale: tuple[str, ...] = ()
    if unit.prefix is not None:
        stale = tuple(
            p
            for p in sorted(remote)
            if PurePosixPath(p).is_relative_to(unit.prefix) and p not in unit.files
        )
    last = len(batches) - 1
    return [
        _Commit(unit.name, tuple(batch), stale if i == last else ())
        for i, batch in enumerate(batches)
    ]


def _unchanged(operation: Operation) -> bool:
    """Whether ``create_commit`` left ``operation`` out: a file the hub holds already.

    The test is the client's own (the remote object id that ``preupload`` reported equals
    the local one); it reads private fields, so when a later ``huggingface_hub`` drops
    them every file counts as sent. It only feeds the log.
    """
    if not isinstance(operation, CommitOperationAdd):
        return False
    remote = getattr(operation, "_remote_oid", None)
    return remote is not None and remote == getattr(operation, "_local_oid", None)


def _log_part(part: str, operations: list[Operation], sha: str, branch: str) -> None:
    adds = [op for op in operations if isinstance(op, CommitOperationAdd)]
    found = [_unchanged(op) for op in adds]
    unchanged = [op for op, same in zip(adds, found, strict=True) if same]
    sent = [op for op, same in zip(adds, found, strict=True) if not same]
    deleted = len(operations) - len(adds)
    for op in unchanged:
        logger.debug("part %s: %s unchanged on the hub, not sent", part, op.path_in_repo)
    nbytes = sum(op.upload_info.size for op in sent)
    if not sent and not deleted:
        logger.info("part %s: all %d files unchanged on the hub, no commit", part, len(adds))
        return
    logger.info(
        "part %s: %d files sent (%d bytes), %d unchanged, %d deleted; %s is the head of %s",
        part,
        len(sent),
        nbytes,
        len(unchanged),
        deleted,
        sha,
        branch,
    )


def publish(
    path: str | os.PathLike[str],
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    private: bool = False,
    progress: bool = False,
) -> str:
    """Upload an eocube store or a release folder to a hub dataset repo.

    A release folder (:func:`eocube.write_release`) goes to the repo's root; a single
    store ``<name>.eocube`` goes to ``<name>.eocube/``, a packed store
    ``<name>.eocube.zip`` (:func:`eocube.pack`) to ``<name>.eocube.zip``. Each store is
    committed on its own (split when larger than :data:`MAX_COMMIT_FILES` files or
    :data:`MAX_COMMIT_BYTES` bytes, its root ``zarr.json`` in the last part), with the
    remote files of that store that are no longer in it deleted; the other files
    (catalog, card) are committed last. Files the hub already holds with the same bytes
    are not sent again and a part with nothing new makes no commit: re-running after an
    interruption completes the release.

    Parameters
    ----------
    path : str or os.PathLike
        The release folder, store or packed store.
    repo_id : str
        ``<namespace>/<name>`` of the dataset repo (created when missing).
    endpoint : str, optional
        The hub's URL (default: ``HF_ENDPOINT`` or https://huggingface.co).
    token : str, optional
        A write token (default: the one ``hf auth login`` saved).
    revision : str, optional
        The branch to commit to (created from ``main`` when missing); default ``main``.
    commit_message : str, optional
        Summary of the commits (each gets its part appended when there are several).
    private : bool
        Create the repo private (an existing repo keeps its visibility).
    progress : bool
        Show progress over the bytes of the files committed, part by part
        (:mod:`eocube.progress`).

    Returns
    -------
    str
        The sha of the commit that completes the release (the head of ``revision``): pin
        it in ``hf://datasets/<repo_id>@<sha>/...`` URLs.

    Raises
    ------
    FileNotFoundError
        When ``path`` is neither a folder nor a packed store.
    ValueError
        When ``path`` holds no file to publish.
    """
    root = Path(path)
    if root.is_file() and is_packed(root):
        units = [_Unit(root.name, {root.name: root}, None)]
    elif not root.is_dir():
        raise FileNotFoundError(
            f"publish: path {str(path)!r} is neither a folder nor a packed store (.zip)"
        )
    else:
        _warn_if_attributes_stay_behind(root)
        units = _units(root)
    if not units:
        raise ValueError(f"publish: path {str(path)!r} holds no file to publish")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    branch = revision or "main"
    try:
        remote = set(api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=branch))
    except RevisionNotFoundError:
        api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
        remote = set(api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=branch))
    message = commit_message or f"Publish {root.name} with eocube"
    commits = [commit for unit in units for commit in _commits(unit, remote)]
    sizes = [commit.nbytes for commit in commits]
    logger.info(
        "publishing %s to %s@%s: %d files, %d bytes, in %d parts",
        root,
        repo_id,
        branch,
        sum(len(commit.adds) for commit in commits),
        sum(sizes),
        len(commits),
    )
    sha = ""
    with track(sum(sizes), label="publish", unit="B", show=progress) as bar:
        for i, (commit, nbytes) in enumerate(zip(commits, sizes, strict=True), start=1):
            part = f"{i}/{len(commits)}: {commit.name}"
            operations = commit.operations()
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=message if len(commits) == 1 else f"{message} ({part})",
                repo_type=REPO_TYPE,
                revision=branch,
            )
            sha = info.oid
            _log_part(part, operations, sha, branch)
            bar.advance(nbytes)
    return sha

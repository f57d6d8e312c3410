"""Publishing stores and releases on the Hugging Face hub: :func:`publish`.

``publish`` uploads through the ``huggingface_hub`` client (``HfApi``): it creates the
dataset repo if needed, then commits one cube store at a time and the rest of the folder
(catalog, dataset card) last, so any revision that holds the catalog holds every cube it
lists. Files already on the hub with the same size and content id are skipped, so a
re-run after an interrupted upload sends only what is missing and ends complete.
Read a published cube with ``xr.open_dataset("hf://datasets/<repo>@<sha>/cubes/<id>.eocube",
engine="eocube")`` (see :mod:`eocube.hubfs`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import RevisionNotFoundError

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
MAX_COMMIT_FILES = 500
"""Files per commit, at most."""
MAX_COMMIT_BYTES = 256 * 2**20
"""Bytes added per commit, at most (a single larger file gets a commit of its own)."""

_CHUNK = 2**20


@dataclass(frozen=True)
class _Unit:
    """Files committed together: one store (its stale remote files deleted), or the rest."""

    name: str
    files: dict[str, Path]  # path in repo -> local file
    prefix: str | None  # path in repo of a store, or None for loose files


def _is_store(folder: Path) -> bool:
    return (folder / "zarr.json").is_file()


def _skipped(name: str) -> bool:
    return (name.startswith(".") and name != ".gitattributes") or name == "__pycache__"


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in sorted(files):
            if not _skipped(name):
                yield Path(root) / name


def _units(path: Path) -> list[_Unit]:
    """Stores first (sorted), then the loose files; a store at ``path`` goes under its name."""
    if _is_store(path):
        files = {f"{path.name}/{f.relative_to(path).as_posix()}": f for f in _walk(path)}
        return [_Unit(path.name, files, path.name)]
    stores: dict[str, dict[str, Path]] = {}
    loose: dict[str, Path] = {}
    for file in _walk(path):
        rel = file.relative_to(path)
        store = next(
            (p for p in reversed(rel.parents) if p != Path(".") and _is_store(path / p)), None
        )
        if store is None:
            loose[rel.as_posix()] = file
        else:
            stores.setdefault(store.as_posix(), {})[rel.as_posix()] = file
    units = [_Unit(name, files, name) for name, files in sorted(stores.items())]
    if loose:
        units.append(_Unit("release files", loose, None))
    return units


def _git_blob_oid(file: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % file.stat().st_size)
    with file.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _same(local: Path, remote: RepoFile) -> bool:
    """Whether the hub already holds ``local``'s bytes (size, then LFS sha256 or git oid)."""
    if remote.size != local.stat().st_size:
        return False
    if remote.lfs is not None:
        return bool(remote.lfs.sha256 == _sha256(local))
    return bool(remote.blob_id == _git_blob_oid(local))


def _batches(
    unit: _Unit, remote: dict[str, RepoFile]
) -> list[list[CommitOperationAdd | CommitOperationDelete]]:
    adds = [
        (path, file)
        for path, file in unit.files.items()
        if path not in remote or not _same(file, remote[path])
    ]
    deletes: list[CommitOperationAdd | CommitOperationDelete] = []
    if unit.prefix is not None:
        deletes = [
            CommitOperationDelete(path_in_repo=p)
            for p in sorted(remote)
            if PurePosixPath(p).is_relative_to(unit.prefix) and p not in unit.files
        ]
    batches: list[list[CommitOperationAdd | CommitOperationDelete]] = []
    current: list[CommitOperationAdd | CommitOperationDelete] = deletes
    nbytes = 0
    for path, file in adds:
        size = file.stat().st_size
        if current and (len(current) >= MAX_COMMIT_FILES or nbytes + size > MAX_COMMIT_BYTES):
            batches.append(current)
            current, nbytes = [], 0
        current.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(file)))
        nbytes += size
    if current:
        batches.append(current)
    return batches


def _remote_files(api: HfApi, repo_id: str, revision: str) -> dict[str, RepoFile]:
    tree = api.list_repo_tree(repo_id, recursive=True, repo_type=REPO_TYPE, revision=revision)
    return {entry.path: entry for entry in tree if isinstance(entry, RepoFile)}


def publish(
    path: str | os.PathLike[str],
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    private: bool = False,
) -> str:
    """Upload an eocube store or a release folder to a hub dataset repo.

    A release folder (:func:`eocube.write_release`) goes to the repo's root; a single
    store ``<name>.eocube`` goes to ``<name>.eocube/``. Each store is committed on its
    own (split when larger than :data:`MAX_COMMIT_FILES` files or
    :data:`MAX_COMMIT_BYTES` bytes), with the remote files of that store that are no
    longer in it deleted; the other files (catalog, card) are committed last. Files the
    hub already holds with the same bytes are not sent again: re-running after an
    interruption completes the release.

    Parameters
    ----------
    path : str or os.PathLike
        The release folder or store.
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

    Returns
    -------
    str
        The sha of the commit that completes the release (the head of ``revision``): pin
        it in ``hf://datasets/<repo_id>@<sha>/...`` URLs.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    units = _units(root)
    if not units:
        raise ValueError(f"{root} holds no file to publish")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
    branch = revision or "main"
    try:
        remote = _remote_files(api, repo_id, branch)
    except RevisionNotFoundError:
        api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
        remote = _remote_files(api, repo_id, branch)
    message = commit_message or f"Publish {root.name} with eocube"
    commits = [(unit.name, batch) for unit in units for batch in _batches(unit, remote)]
    sha = None
    for i, (name, operations) in enumerate(commits, start=1):
        summary = message if len(commits) == 1 else f"{message} ({i}/{len(commits)}: {name})"
        logger.info("commit %d/%d: %s, %d operations", i, len(commits), name, len(operations))
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=summary,
            repo_type=REPO_TYPE,
            revision=branch,
        )
        sha = info.oid
    if sha is None:
        logger.info("%s: nothing to upload, the hub already holds every file", root)
        sha = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=branch).sha
    assert sha is not None
    return sha

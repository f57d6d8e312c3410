"""Running one cube's points: in a child process, point by point, surviving codec crashes.

The parent runs each cube in a child process (``python -m benchmarks.rd ... --child
<cube>``); the child measures the cube's points one after another and appends each to
the cube's part file (benchmarks.rd.parts). When a codec kills the child (a native crash,
the watchdog), the point it was running is recorded as failed and a new child carries on
with the points left.
"""

from __future__ import annotations

import faulthandler
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import corpus
from benchmarks.common import fmt
from benchmarks.corpus import Cube
from benchmarks.rd import parts
from benchmarks.rd.methods import (
    Job,
    cube_jobs,
    is_selected,
    is_video,
    method_kind,
    setting_label,
)

MAX_RESTARTS = 8


def _record(base: dict[str, Any], job: Job, available: dict[str, Any]) -> dict[str, Any]:
    """A point's record before it is measured: the cube, the method and its setting."""
    rec = {
        **base,
        "method": job.method,
        "kind": method_kind(job.method),
        "video": is_video(job.method),
        "lossless": job.lossless,
        "setting": job.setting,
        "setting_label": setting_label(job.setting),
    }
    if job.method.startswith("eocube:"):
        prof = available[job.method.split(":", 1)[1]]
        rec.update(
            profile=prof.name,
            layout=prof.layout,
            encoder=prof.encoder,
            bits=prof.bits,
            gpu_decodable=prof.gpu_decodable,
        )
    return rec


def measured_at(meta: dict[str, Any]) -> str:
    """The commit a point is measured at (10 hex digits, ``+`` when eocube/ or codecs/ are
    modified) and the day, as each point of ``results.jsonl`` records it: a run limited
    to some methods keeps the other methods' earlier points, so the points of one summary
    can come from several commits."""
    git = (meta.get("machine") or {}).get("git") or {}
    commit = str(git.get("commit") or "?")[:10] + ("+" if git.get("dirty") else "")
    return f"{commit} {time.strftime('%Y-%m-%d', time.gmtime())}"


def _measure(job: Job, rec: dict[str, Any], watchdog: float) -> None:
    """Run a job into its record: a refusal is ``skipped``, any failure an ``error``."""
    from eocube.errors import UnsupportedDataError

    t0 = time.perf_counter()
    if watchdog:
        faulthandler.dump_traceback_later(watchdog, exit=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec.update(job.run())
    except UnsupportedDataError as exc:
        rec["skipped"] = str(exc)
    except Exception as exc:  # a codec failure is a result, not the end of the run
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc(limit=4)
    finally:
        if watchdog:
            faulthandler.cancel_dump_traceback_later()
    rec["seconds"] = time.perf_counter() - t0


def _progress(cube: Cube, rec: dict[str, Any]) -> str:
    """One line on stderr for a measured point."""
    what = f"{rec['method']} {rec['setting_label']}"
    if rec.get("skipped"):
        msg = f"skipped ({rec['skipped'][:90]})"
    elif rec.get("error"):
        msg = f"ERROR {rec['error'][:120]}"
    else:
        msg = (
            f"{rec['bpppb']:.3f} bpppb ({rec['bpppb_payload']:.3f} payload), "
            f"{fmt(rec['psnr'], '.2f')} dB, enc {fmt(rec['encode_mb_s'])} MB/s, "
            f"dec {fmt(rec['decode_mb_s'])} MB/s"
        )
    return f"  {cube.name} {what}: {msg} [{rec['seconds']:.1f} s]"


def run_cube(
    cube: Cube,
    *,
    quick: bool,
    methods: set[str] | None,
    decode_repeats: int,
    watchdog: float,
    emit: Callable[[dict[str, Any]], None],
    skip: set[str] | None = None,
) -> None:
    """Measure every point of a cube, handing each record to ``emit`` as it is done.

    Parameters
    ----------
    cube : Cube
        The cube.
    quick : bool
        The quick sweeps.
    methods : set of str, optional
        Only these methods (``eocube:`` for every eocube profile).
    decode_repeats : int
        Decodes timed per point.
    watchdog : float
        Seconds one point may take before the process dumps its stacks and exits (0: off).
    emit : callable
        Receives ``{"running": key}`` as a point starts, then its record.
    skip : set of str, optional
        Points (``method|setting``) measured already.
    """
    import eocube

    base = {**cube.describe(), "mode": "quick" if quick else "full"}
    available = eocube.available_profiles()
    for job in cube_jobs(cube, quick=quick, decode_repeats=decode_repeats):
        if methods and not is_selected(job.method, methods):
            continue
        if skip and job.key in skip:
            continue
        emit({"running": job.key})
        rec = _record(base, job, available)
        _measure(job, rec, watchdog)
        emit(rec)
        print(_progress(cube, rec), file=sys.stderr, flush=True)


def _child_args(argv: list[str], name: str) -> list[str]:
    """The parent's arguments for the child of cube ``name`` (no --resume, no --cubes)."""
    args = [a for a in argv if a not in ("--resume",)]
    if "--cubes" in args:  # the child gets its cube through --child
        k = args.index("--cubes")
        del args[k : k + 1]
        while k < len(args) and not args[k].startswith("--"):
            del args[k]
    return [*args, "--child", name]


def _death(returncode: int) -> str:
    """Why a child ended with ``returncode``: faulthandler's watchdog exits with 1 (a
    point that made no progress for ``--watchdog`` seconds), a native crash kills it with
    a signal."""
    if returncode == 1:
        return "no progress for the watchdog's time (a hang; its threads' stacks are in stderr)"
    if returncode < 0:
        return f"killed by signal {-returncode}: a native crash in the codec (see stderr)"
    return "see the run's stderr"


def _crash_record(lines: list[dict[str, Any]], key: str, returncode: int) -> dict[str, Any]:
    """The record of the point ``key`` that killed its process."""
    method, label = key.split("|", 1)
    info = lines[0].get("cube_info", {})
    return {
        **info,
        "mode": info.get("mode"),
        "method": method,
        "kind": method_kind(method),
        "video": is_video(method),
        "lossless": label == "lossless",
        "setting": {},
        "setting_label": label,
        "error": f"the process died (exit status {returncode}) during this point: "
        f"{_death(returncode)}",
    }


def run_child(name: str, argv: list[str], part: Path) -> None:
    """Run one cube in a child process; a native crash costs one point, not the run.

    When the child dies (a codec corrupting its heap, a watchdog exit), the point it was
    running is recorded as failed and a new child carries on with the next points.
    """
    args = _child_args(argv, name)
    t0 = time.perf_counter()
    for _attempt in range(MAX_RESTARTS + 1):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.rd", *args], check=False)
        lines = parts.part_lines(part)
        if proc.returncode == 0 and lines and lines[-1].get("cube_done"):
            break
        running = [x["running"] for x in lines if "running" in x]
        done = parts.measured_keys(lines)
        crashed = [k for k in running if k not in done]
        if not crashed or not lines:
            print(
                f"{name}: child failed (exit {proc.returncode}) before any point", file=sys.stderr
            )
            break
        method, label = crashed[-1].split("|", 1)
        if proc.returncode == 1 and running.count(crashed[-1]) == 1:
            # a hang (x265 hung once in a flush, in 23 cubes x 3 profiles, and not in 150
            # writes of the same chunk after): the next child measures the point again
            print(f"{name}: {method} {label} hung; measuring it again", file=sys.stderr)
            continue
        with part.open("a") as fh:
            fh.write(parts.dumps(_crash_record(lines, crashed[-1], proc.returncode)))
        print(
            f"{name}: {method} {label} ended the process ({_death(proc.returncode)}); carrying on",
            file=sys.stderr,
        )
    print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def child(
    name: str,
    *,
    quick: bool,
    methods: set[str],
    folder: Path | None,
    points: Path,
    max_values: int,
    max_time: int | None,
    decode_repeats: int,
    watchdog: float,
    meta: dict[str, Any],
) -> int:
    """The child process: measure the points of cube ``name`` not in its part yet.

    Parameters
    ----------
    name : str
        The cube.
    quick : bool
        The quick sweeps.
    methods : set of str
        Only these methods (empty: all).
    folder : Path, optional
        The corpus folder.
    points : Path
        The folder of part files.
    max_values, max_time : int
        The crop of the cube.
    decode_repeats : int
        Decodes timed per point.
    watchdog : float
        Seconds one point may take (0: no limit).
    meta : dict
        The run's description, written with the cube's last line.

    Returns
    -------
    int
        The exit status (0).
    """
    part = points / f"{name}.jsonl"
    lines = parts.part_lines(part)
    skip = parts.measured_keys(lines)
    t0 = time.perf_counter()
    stamp = measured_at(meta)
    cube = corpus.load_cube(name, folder, max_values=max_values, max_time=max_time)
    info = cube.describe()
    if not lines:
        print(
            f"{name}: {'×'.join(map(str, cube.shape))} {info['dtype']}"
            + (f" (cropped: {cube.crop})" if cube.crop else ""),
            file=sys.stderr,
        )
    with part.open("a") as fh:
        if not lines:
            parts.write_line(fh, {"cube": name, "cube_info": info})
        run_cube(
            cube,
            quick=quick,
            methods=methods,
            decode_repeats=decode_repeats,
            watchdog=watchdog,
            emit=lambda rec: parts.write_line(fh, {**rec, "measured_at": stamp}),
            skip=skip,
        )
        fh.write(
            parts.dumps(
                {
                    "cube": name,
                    "cube_done": True,
                    "seconds": time.perf_counter() - t0,
                    "meta": meta,
                }
            )
        )
    return 0

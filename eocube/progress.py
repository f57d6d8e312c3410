"""Showing the progress of long work: encodes, publishes, verifications.

:func:`compute` runs dask tasks and counts them as they finish, on the local schedulers
(a :class:`dask.callbacks.Callback`) and on a ``dask.distributed`` cluster (the tasks'
futures, as they complete), where dask's own local ``ProgressBar`` sees nothing.
:func:`track` counts any other loop: ``with track(total, label="verify", unit="chunks")
as bar: ... bar.advance(n)``.

How progress is shown is chosen once per bar:

- ``bar``: a ``tqdm`` bar on stderr (a widget in a notebook), when stderr is a terminal
  or the code runs in a Jupyter kernel;
- ``lines``: otherwise (a job log, a file, a pipe), plain lines without carriage
  returns, at each tenth of the work, every 30 s in between and at the
  end, such as ``eocube: encode 40/120 shards (33%), 12.3 s, about 24.6 s left``.
  They go to the ``eocube.progress`` logger at INFO when the application's logging
  would show them (a handler is configured and the logger is enabled for INFO),
  else to stderr: never both, and never lost because logging was left unconfigured;
- ``off``: nothing.

The environment variable ``EOCUBE_PROGRESS`` (``auto``, ``bar``, ``lines`` or ``off``)
forces a mode wherever progress is asked for; code that asks for none (``show=False``)
shows none whatever it says.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, TextIO

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "EOCUBE_PROGRESS"
Mode = Literal["bar", "lines", "off"]
MODES: tuple[str, ...] = ("auto", "bar", "lines", "off")
"""Values of :data:`ENVIRONMENT_VARIABLE`; ``auto`` (or unset) picks by the output."""


@dataclass(frozen=True)
class LineCadence:
    """When the ``lines`` mode writes a line (besides the first and the last).

    Parameters
    ----------
    steps : int
        A line each time the work crosses another ``1/steps`` of its total.
    seconds : float
        A line when this long has passed since the last one, so that a slow job still
        shows it is alive between steps.
    """

    steps: int = 10
    seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"LineCadence steps must be at least 1, got {self.steps}")
        if not self.seconds >= 0:
            raise ValueError(f"LineCadence seconds must not be negative, got {self.seconds}")


DEFAULT_CADENCE = LineCadence()


def mode(show: bool = True, stream: TextIO | None = None) -> Mode:
    """How progress asked for with ``show`` is shown on ``stream`` (default: stderr).

    Raises
    ------
    ValueError
        When :data:`ENVIRONMENT_VARIABLE` holds none of :data:`MODES`.
    """
    forced = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if forced not in (*MODES, ""):
        raise ValueError(
            f"{ENVIRONMENT_VARIABLE}={os.environ[ENVIRONMENT_VARIABLE]!r} is not one of "
            f"{', '.join(MODES)}"
        )
    if not show or forced == "off":
        return "off"
    if forced in ("bar", "lines"):
        return "bar" if forced == "bar" else "lines"
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    terminal = bool(isatty()) if callable(isatty) else False
    return "bar" if terminal or _in_notebook() else "lines"


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose stderr is no terminal, yet shows bars)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class _Renderer(Protocol):
    def update(self, done: int) -> None: ...

    def close(self, done: int, failed: bool) -> None: ...


class _Silent:
    def update(self, done: int) -> None:
        pass

    def close(self, done: int, failed: bool) -> None:
        pass


class _Bar:
    """A tqdm bar; ``tqdm.auto`` draws a widget in notebooks (with ipywidgets)."""

    def __init__(self, total: int, label: str, unit: str) -> None:
        from tqdm.auto import tqdm

        in_bytes = unit == "B"
        self._bar = tqdm(
            total=total,
            desc=f"eocube: {label}",
            unit=unit or "it",
            unit_scale=in_bytes,
            unit_divisor=1000,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self._shown = 0

    def update(self, done: int) -> None:
        self._bar.update(done - self._shown)
        self._shown = done

    def close(self, done: int, failed: bool) -> None:
        self.update(done)
        self._bar.close()


def _amount(done: int, total: int, unit: str) -> str:
    """``40/120 shards``, or for bytes ``12.3/45.6 MB`` (decimal units, scaled by the total)."""
    if unit != "B":
        return f"{done}/{total} {unit}".rstrip()
    scale, name = next(
        ((s, n) for s, n in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")) if total >= s), (1.0, "B")
    )
    if scale == 1.0:
        return f"{done}/{total} B"
    return f"{done / scale:.1f}/{total / scale:.1f} {name}"


class _Lines:
    """Plain lines at a :class:`LineCadence`, to the ``eocube.progress`` logger or stderr."""

    def __init__(
        self,
        total: int,
        label: str,
        unit: str,
        cadence: LineCadence,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total, self._label, self._unit = total, label, unit
        self._cadence, self._clock = cadence, clock
        self._start = self._last = clock()
        self._step = 0
        self._written = False  # no line at the start: work that fails at once says nothing

    def _write(self, done: int, ending: str) -> None:
        elapsed = self._clock() - self._start
        percent = 100 * done // self._total if self._total else 100
        line = (
            f"eocube: {self._label} {_amount(done, self._total, self._unit)} ({percent}%), "
            f"{elapsed:.1f} s{ending}"
        )
        if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
            logger.info(line)
        else:  # logging unconfigured (or quieter than INFO): the line must still be seen
            print(line, file=sys.stderr, flush=True)
        self._last = self._clock()
        self._written = True

    def update(self, done: int) -> None:
        if done >= self._total:
            return  # the last line is close()'s
        step = done * self._cadence.steps // self._total
        if step > self._step or self._clock() - self._last >= self._cadence.seconds:
            self._step = step
            elapsed = self._clock() - self._start
            left = f", about {elapsed * (self._total - done) / done:.1f} s left" if done else ""
            self._write(done, left)

    def close(self, done: int, failed: bool) -> None:
        if failed and not self._written:
            return  # the error says it all
        self._write(done, ", stopped" if failed else "")


class Progress:
    """A count of work done out of a known total, shown as :func:`mode` says.

    Use it as a context manager (:func:`track` makes one): leaving it closes the bar, or
    writes the last line (``stopped`` when an exception left the block). Safe to
    advance from several threads.

    Parameters
    ----------
    total : int
        The amount of work, in ``unit``.
    label : str
        What the work is (``encode``, ``publish``, ``verify``).
    unit : str
        What is counted (``shards``, ``chunks``; ``B`` for bytes, shown in kB/MB/GB).
    show : bool
        Whether to show anything (:data:`ENVIRONMENT_VARIABLE` can still silence it).
    cadence : LineCadence
        When the ``lines`` mode writes.
    """

    def __init__(
        self,
        total: int,
        *,
        label: str,
        unit: str = "",
        show: bool = True,
        cadence: LineCadence = DEFAULT_CADENCE,
    ) -> None:
        if total < 0:
            raise ValueError(f"progress total must not be negative, got {total}")
        self.total = int(total)
        self.done = 0
        self.label = label
        self.mode = mode(show)
        self._lock = threading.Lock()
        self._renderer: _Renderer | None = None
        self._unit, self._cadence = unit, cadence

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            self._renderer = _Bar(self.total, self.label, self._unit)
        elif self.mode == "lines":
            self._renderer = _Lines(self.total, self.label, self._unit, self._cadence)
        else:
            self._renderer = _Silent()
        return self

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done (never beyond the total)."""
        with self._lock:
            self.done = min(self.total, self.done + n)
            if self._renderer is not None:
                self._renderer.update(self.done)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            if self._renderer is not None:
                self._renderer.close(self.done, failed=exc_type is not None)
            self._renderer = None


def track(total: int, *, label: str, unit: str = "", show: bool = True) -> Progress:
    """A :class:`Progress` over ``total`` units of work, to use in a ``with`` block.

    Examples
    --------
    >>> with track(3, label="verify", unit="chunks", show=False) as bar:
    ...     for _ in range(3):
    ...         bar.advance()
    >>> bar.done
    3
    """
    return Progress(total, label=label, unit=unit, show=show)


def compute(
    tasks: Sequence[Any], *, show: bool, label: str, unit: str = "tasks"
) -> tuple[Any, ...]:
    """Run dask objects as ``dask.compute(*tasks)`` does, counting them as they finish.

    On a ``dask.distributed`` cluster (the default client, when dask would use it) the
    tasks are submitted as futures and counted as they complete; otherwise dask's local
    scheduler runs them with a callback counting them. Only the objects given are
    counted, not every task of their graphs: the total is known before anything runs,
    is the same on both schedulers, and is in a unit the caller can name (one task per
    shard written, say) where a graph's inner tasks (reads, rechunks, chunk encodes)
    are not.

    Parameters
    ----------
    tasks : sequence
        Dask delayed objects or collections; anything else is returned as it is.
    show : bool
        Whether to show progress (see :func:`mode`).
    label : str
        What the work is, shown first (``encode``).
    unit : str
        What one task is (``shards``).

    Returns
    -------
    tuple
        The results, in the order of ``tasks``.

    Raises
    ------
    Exception
        The first error a task raised, as ``dask.compute`` raises it; on a cluster the
        other tasks are cancelled.
    """
    import dask

    counted = [i for i, task in enumerate(tasks) if dask.is_dask_collection(task)]
    with track(len(counted), label=label, unit=unit, show=show) as progress:
        if progress.mode == "off":
            return tuple(dask.compute(*tasks))
        client = _distributed_client()
        if client is None:
            return _compute_locally(tasks, [tasks[i] for i in counted], progress)
        results = list(tasks)
        values = _compute_on_cluster(client, [tasks[i] for i in counted], progress)
        for i, value in zip(counted, values, strict=True):
            results[i] = value
        return tuple(results)


def _distributed_client() -> Any | None:
    """The ``dask.distributed`` client ``dask.compute`` would run on now, or None.

    distributed is optional and costly to import: when it was never imported there is
    no client, so this does not import it.
    """
    if sys.modules.get("distributed") is None:
        return None
    import dask.base
    from distributed import Client

    client = getattr(dask.base.get_scheduler(), "__self__", None)
    return client if isinstance(client, Client) else None


def _compute_locally(
    tasks: Sequence[Any], counted: list[Any], progress: Progress
) -> tuple[Any, ...]:
    import dask
    import dask.base
    import dask.threaded
    from dask.callbacks import Callback
    from dask.core import flatten

    # the keys of the tasks given are known only once dask has optimized their graph
    # (array expressions are renamed, a final task joins an array's chunks): the
    # scheduler is handed them, so a thin scheduler takes note of them first
    scheduler = dask.base.get_scheduler(collections=counted) or dask.threaded.get
    outputs: set[Any] = set()

    def noting_outputs(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        outputs.update(flatten(keys))
        return scheduler(dsk, keys, **kwargs)

    def finished(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        # callbacks are global to the process while active: the tasks of another
        # computation (nested or concurrent), and the inner tasks of ours, are not counted
        if key in outputs:
            progress.advance()

    with Callback(posttask=finished):
        return tuple(dask.compute(*tasks, scheduler=noting_outputs))


def _compute_on_cluster(client: Any, tasks: list[Any], progress: Progress) -> list[Any]:
    from distributed import as_completed

    futures = client.compute(tasks)
    try:
        for future in as_completed(futures):
            if future.status != "finished":
                future.result()  # raises the task's error, as dask.compute would
            progress.advance()
        return list(client.gather(futures))
    except BaseException:
        client.cancel(futures)  # no shard written after the caller has seen the error
        raise

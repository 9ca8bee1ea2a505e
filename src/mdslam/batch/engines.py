"""Where chunks are labelled: in this process, in joblib (loky) worker processes, or on Dask.

Every engine has ``run(tasks)``, yielding one :class:`Outcome` per chunk as
chunks finish (in any order), and ``close()``. A chunk whose labelling
raised is an Outcome with ``table=None`` and the error (its rows become
flagged placeholders); a chunk lost to the infrastructure (a worker killed,
the pool or the cluster gone) is an Outcome with ``lost=True``: no part is
written for it, the driver runs it again, and a chunk still lost leaves the
run unfinished for ``resume``. Workers get the *path* of the model file and
load it once per process (:func:`_get_model`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ..flags import LabelFlag
from .manifest import BatchError
from .sources import ChunkData, _Task

__all__ = ["ENGINES", "Outcome", "local_cluster", "make_engine"]

ENGINES = ("inprocess", "joblib", "dask")
"""Names of the execution engines of :func:`predict_batch`."""


@dataclass
class Outcome:
    """What became of one chunk.

    Attributes
    ----------
    index : int
        Chunk index.
    table : Table or None
        Its catalogue rows; None if the chunk failed or was lost.
    error : str
        Why it failed ("" if it did not).
    lost : bool
        True when the infrastructure failed (not the chunk): nothing is
        written for it, it is run again.
    """

    index: int
    table: Table | None
    error: str = ""
    lost: bool = False


# --------------------------------------------------------------------------- #
# the worker side
# --------------------------------------------------------------------------- #
_MODEL_CACHE: dict[tuple, Any] = {}


def _get_model(model, options: dict):
    """The model with ``options`` set: loaded from its path once per process (or copied)."""
    from ..slam import SLAM

    if isinstance(model, SLAM):
        m = copy.copy(model)
        m.set_params(**options)
        return m
    path = Path(model)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(sorted(options.items())))
    if key not in _MODEL_CACHE:
        m = SLAM.load(path)
        m.set_params(**options)
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = m
    return _MODEL_CACHE[key]


def _finish_table(tab: Table, data: ChunkData) -> Table:

    tab.add_column(np.asarray(data.files, str), name="file", index=1)
    err = np.asarray(data.errors, str)
    tab["error"] = err
    tab["error"].description = "why a spectrum could not be read or labelled ('' if it was)"
    bad = np.char.str_len(err) > 0
    tab["flag"][bad] |= LabelFlag.FAILED
    if data.extra is not None:
        for name in data.extra.colnames:
            tab[name] = data.extra[name]
    return tab


def _label_task(model, task: _Task, options: dict) -> tuple[int, Table | None, str]:
    """Label one chunk: ``(index, table, "")``, or ``(index, None, error)`` if the chunk failed."""
    try:
        m = _get_model(model, options)
        data = task.load(m.wavelength_)
        if len(data.ids) != task.n:
            raise RuntimeError(f"chunk has {len(data.ids)} spectra, {task.n} expected")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tab = m.predict_table(data.flux, data.ivar, snr=data.snr, ids=data.ids)
        return task.index, _finish_table(tab, data), ""
    except Exception as exc:  # noqa: BLE001 - a failed chunk is recorded, the batch goes on
        return task.index, None, f"chunk {task.index} failed: {type(exc).__name__}: {exc}"


def _failed_table(model, task: _Task, options: dict, error: str) -> Table:
    """Rows flagged LabelFlag.FAILED (NaN labels) for every spectrum of a chunk that failed as a whole."""
    m = _get_model(model, options)
    try:
        data = task.placeholder()
    except Exception:  # noqa: BLE001 - even the ids are unknown: one row per spectrum
        n = task.n
        data = ChunkData([np.zeros(0)] * n, None, np.array([f"chunk{task.index}:{i}" for i in range(n)]),
                         np.full(n, "", dtype="U1"), np.full(n, "", dtype="U1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tab = m.predict_table([np.zeros(0)] * len(data.ids), None, ids=data.ids)
    data.errors = np.full(len(data.ids), error)
    return _finish_table(tab, data)


# --------------------------------------------------------------------------- #
# engines
# --------------------------------------------------------------------------- #
def _outcome(res: tuple[int, Table | None, str]) -> Outcome:
    index, tab, err = res
    return Outcome(index, tab, err)


class InProcessEngine:
    """Chunks one after the other in this process."""

    name = "inprocess"

    def run(self, model, tasks: Iterable[_Task], options: dict) -> Iterator[Outcome]:
        for task in tasks:
            yield _outcome(_label_task(model, task, options))

    def close(self) -> None:
        pass


def _kill_loky_workers() -> None:
    """Terminate the worker processes of joblib's reusable loky executor, if it has any."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=False, kill_workers=True)


class JoblibEngine:
    """Chunks in ``n_workers`` loky processes; a crashed pool loses only its unfinished chunks."""

    name = "joblib"

    def __init__(self, n_workers: int):
        self.n_workers = n_workers

    def run(self, model, tasks: Iterable[_Task], options: dict) -> Iterator[Outcome]:
        from joblib import Parallel, delayed

        pending = {t.index: t for t in tasks}
        try:
            par = Parallel(n_jobs=self.n_workers, backend="loky", return_as="generator_unordered",
                           pre_dispatch="2*n_jobs")
            for res in par(delayed(_label_task)(model, t, options) for t in list(pending.values())):
                pending.pop(res[0], None)
                yield _outcome(res)
        except Exception as exc:  # noqa: BLE001 - a worker killed (OOM...) breaks the pool: chunks lost
            lost = list(pending)
            pending.clear()
            for i in lost:
                yield Outcome(i, None, f"chunk {i} not labelled: joblib worker pool failed "
                                       f"({type(exc).__name__}: {exc})", lost=True)
        finally:
            if pending:                     # interrupted (Ctrl-C, SIGTERM): leave no worker behind
                _kill_loky_workers()

    def close(self) -> None:
        pass


QUIET_DASK = {"distributed.admin.tick.interval": "1s", "distributed.admin.system-monitor.interval": "5s",
              "distributed.worker.profile.enabled": False}
"""Dask options of :func:`local_cluster`: the scheduler's and workers' background work, made rare.

Dask's defaults (an event-loop check every 20 ms, a system monitor every 0.5 s, a statistical
profiler sampling each worker every 10 ms) cost an idle 2-worker LocalCluster 2.2 s of CPU in
the calling process and 3.0 s in the workers per 30 s of wall time; with these, 0.8 s and 0.6 s
(measured on 2 cores at load 9-12).  They serve the dashboard, which batch labelling does not use.
"""


def local_cluster(n_workers: int = 2, **kwargs):
    """A ``dask.distributed.LocalCluster`` of single-threaded worker processes, tuned for labelling.

    Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    makes glibc map and unmap every large numpy temporary: preprocessing and
    labelling then cost twice the CPU time (measured on the mock stream). The
    cluster made here leaves that variable out (BLAS stays single-threaded),
    and runs the scheduler and the workers with :data:`QUIET_DASK` (no profiler,
    rare monitoring). For a cluster started elsewhere, set the Dask option
    ``distributed.nanny.pre-spawn-environ`` and those options the same way.

    Parameters
    ----------
    n_workers : int
        Worker processes (one thread each).
    **kwargs
        Passed to ``LocalCluster`` (e.g. ``host="127.0.0.1"``); defaults:
        ``threads_per_worker=1, processes=True, dashboard_address=None``.
    """
    import dask
    from dask.distributed import LocalCluster

    env = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ") or {}).items()
           if k != "MALLOC_TRIM_THRESHOLD_"}
    kw = dict(threads_per_worker=1, processes=True, dashboard_address=None)
    kw.update(kwargs)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env, **QUIET_DASK}):
        return LocalCluster(n_workers=n_workers, **kw)


CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a Dask scheduler given by address before giving up (at most)."""


class DaskEngine:
    """Chunks on a Dask cluster: a LocalCluster of ``n_workers`` processes, or ``scheduler``."""

    name = "dask"

    def __init__(self, n_workers: int, scheduler=None):
        from dask.distributed import Client

        self.cluster = None
        self.own = True
        if scheduler is None:
            self.cluster = local_cluster(n_workers)
            self.client = Client(self.cluster)
        elif isinstance(scheduler, str):
            import dask
            from dask.utils import parse_timedelta

            timeout = min(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")),
                          CONNECT_TIMEOUT)
            try:
                self.client = Client(scheduler, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - OSError/TimeoutError/ValueError: one message
                raise BatchError(f"scheduler {scheduler}: no Dask scheduler answered within {timeout:g} s "
                                 f"({type(exc).__name__}: {exc})") from None
        else:
            self.client, self.own = scheduler, False          # a dask.distributed.Client

    def run(self, model, tasks: Iterable[_Task], options: dict) -> Iterator[Outcome]:
        from dask.distributed import as_completed

        slots = max(2 * sum(self.client.nthreads().values()), 2)
        it = iter(tasks)
        by_key: dict[str, _Task] = {}
        ac = as_completed()

        def submit_next() -> bool:
            t = next(it, None)
            if t is None:
                return False
            fut = self.client.submit(_label_task, model, t, options, pure=False)
            by_key[fut.key] = t
            ac.add(fut)
            return True

        for _ in range(slots):
            if not submit_next():
                break
        for fut in ac:
            t = by_key.pop(fut.key)
            try:
                out = _outcome(fut.result())
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection: the chunk is lost
                out = Outcome(t.index, None, f"chunk {t.index} lost on the cluster: {type(exc).__name__}: {exc}",
                              lost=True)
            fut.release()
            submit_next()
            yield out

    def close(self) -> None:
        if self.own:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def make_engine(name: str, n_workers: int, scheduler=None) -> InProcessEngine | JoblibEngine | DaskEngine:
    """The engine ``name`` ready to run (a Dask scheduler is reached here, before any chunk).

    Each engine has ``run(model, tasks, options)``, yielding an
    :class:`Outcome` per chunk, and ``close()``.

    Parameters
    ----------
    name : {"inprocess", "joblib", "dask"}
    n_workers : int
        Worker processes (joblib, LocalCluster), >= 1.
    scheduler : str or Client, optional
        Dask scheduler address or client.

    Raises
    ------
    BatchError
        Unknown engine, or the scheduler cannot be reached.
    """
    if name == "inprocess":
        return InProcessEngine()
    if name == "joblib":
        return JoblibEngine(n_workers)
    if name == "dask":
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise BatchError("engine 'dask' needs dask.distributed (pip install 'mdslam[scale]')") from None
        return DaskEngine(n_workers, scheduler)
    raise BatchError(f"engine must be one of {ENGINES}, not {name!r}")

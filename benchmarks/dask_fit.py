"""Training throughput of ``SLAM.fit`` with its pixel blocks on a Dask cluster of 1 and 2 workers.

References, measured in the same run: the in-process fit with one thread (``n_jobs=1``) and
with two (``n_jobs=2``: pixel blocks in two threads of this process).  Measured:
``SLAM.fit(..., client=...)`` on a cluster of :func:`mdslam.batch.local_cluster` with 1 worker
*process* (``n_jobs=1``) and with 2 (``n_jobs=2``), one thread each: the layout of the pixel
blocks is that of the in-process fit with the same ``n_jobs`` (what ``n_jobs=None`` gives on
these clusters); the kernels and their eigen decompositions are computed in this process once
per (gamma, fold) and scattered.  The clusters are started, and the package imported on their
workers, before the clock starts (a one-off 2-3 s of CPU per worker).  Every Dask model must be bit-identical to the 2-thread in-process
model: the script checks it.

For each run: wall time of the fit, wall time of its block-solving phases (the CV grid search
and the final fits, the part that runs on the workers; the rest of ``fit``, the start grid and
the likelihood, runs in this process), and CPU time of this process plus its worker processes
(user + system; the workers' share apart) and, on a cluster, the fraction of the block phases'
wall time the workers spent in tasks (Dask's task stream: the sum of the tasks' compute times
over workers x wall; the rest is time a worker waited for this process or for the other
worker's last block of a kernel).  Printed ratios: in process 2 threads against 1
thread, Dask 1 worker against in process with 1 thread (like with like: one core solving, the
same blocks), Dask 2 workers against in process with 2 threads, and Dask 2 workers against 1
worker, each for the whole fit and for the block phases.  ``--repeat`` runs the four
configurations in turn that many times (alternating, for a machine shared with other jobs) and
prints each run; the ratios use the medians.

Data: mock LAMOST M dwarfs on the LAMOST grid (``realistic_grid.make_data``: known labels,
``--n-star`` stars, ``--n-pix`` evenly spaced pixels), grid 2 C x 2 epsilon x 2 gamma, 5-fold.
``--large`` (600 stars x 800 px) makes the per-pixel solves dominate the fixed costs of the
fit (the kernels' eigen decompositions and the in-process likelihood fit).

Usage::

    MDSLAM_DATA_MIRROR=... python benchmarks/dask_fit.py [--n-star 300] [--n-pix 400] [--repeat 1]
    python benchmarks/dask_fit.py --large
    python benchmarks/dask_fit.py --smoke          # 60 stars x 32 px, a check that the script runs

The ratio of 2 to 1 workers is bounded by the cores free on the machine: the 1-min load average
is printed beside every figure.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from bench_astroslam import LoadSampler  # noqa: E402
from realistic_grid import make_data  # noqa: E402

GRID = {"C": (1.0, 10.0), "epsilon": (0.05, 0.1), "gamma": (0.3, 1.0)}
FITTED = ("dual_coef_", "intercept_", "cv_mse_grid_", "C_", "epsilon_", "gamma_")
#: (name, n_jobs, Dask worker processes or 0 in process, index of the in-process run it must equal)
CONFIGS = (("in process, 1 thread", 1, 0, None), ("in process, 2 threads", 2, 0, None),
           ("Dask, 1 worker process", 1, 1, 0), ("Dask, 2 worker processes", 2, 2, 1))


def tree_cpu() -> np.ndarray:
    """User + system CPU seconds of this process (all threads) and of its live child processes, (2,)."""
    me = psutil.Process()
    out = np.array([sum(me.cpu_times()[:2]), 0.0])
    for child in me.children(recursive=True):
        try:
            out[1] += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return out


@contextmanager
def phase_clock(out: dict):
    """Add the wall time of the fit's block-solving phases (CV grid search, final fits) to ``out["blocks"]``."""
    from mdslam.slam import estimator

    originals = {name: getattr(estimator, name) for name in ("_grid_search_cv", "_refit_all")}

    def timed(fn):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                out["blocks"] += time.perf_counter() - t0
        return wrapper

    for name, fn in originals.items():
        setattr(estimator, name, timed(fn))
    try:
        yield out
    finally:
        for name, fn in originals.items():
            setattr(estimator, name, fn)


def timed_fit(d: dict, n_jobs: int, client=None) -> dict:
    """One fit: model, wall (s), block-phase wall (s), CPU of this process + its workers and of the workers (s), load."""
    from mdslam.slam import SLAM

    model = SLAM(**GRID, cv=5, random_state=0, n_jobs=n_jobs)
    times = {"blocks": 0.0}
    stream = task_stream(client)
    with LoadSampler(every=2.0) as load, phase_clock(times), stream as tasks:
        c0, t0 = tree_cpu(), time.perf_counter()
        model.fit(d["flux"], d["labels"], d["ivar"], wavelength=d["wave"], client=client)
        wall, cpu = time.perf_counter() - t0, tree_cpu() - c0
    busy = np.nan
    if client is not None:
        compute = sum(s["stop"] - s["start"] for t in tasks.data for s in t["startstops"] if s["action"] == "compute")
        busy = compute / (len(client.nthreads()) * times["blocks"])
    return {"model": model, "wall": wall, "blocks": times["blocks"], "cpu": cpu.sum(), "cpu_workers": cpu[1],
            "busy": busy, "load": load.summary()}


def task_stream(client):
    """Dask's record of the tasks run while it is open (``.data``), or a no-op without a client."""
    if client is None:
        return nullcontext(SimpleNamespace(data=[]))
    from distributed import get_task_stream

    return get_task_stream(client)


def run_config(d: dict, n_jobs: int, n_dask: int) -> dict:
    """A fit in process (``n_dask`` 0) or on a fresh ``local_cluster(n_dask)`` (started before the clock)."""
    if not n_dask:
        return timed_fit(d, n_jobs)
    from distributed import Client

    from mdslam.batch import local_cluster

    with local_cluster(n_dask) as cluster, Client(cluster) as client:
        client.run(importlib.import_module, "mdslam.slam.distribute")   # workers up, package imported
        return timed_fit(d, n_jobs, client)


def _ratio(runs: dict, a: str, b: str, key: str) -> float:
    """median(runs[a][key]) / median(runs[b][key])."""
    return float(np.median([r[key] for r in runs[a]]) / np.median([r[key] for r in runs[b]]))


def print_run(name: str, r: dict, n_pix: int, ref=None) -> bool | None:
    """One line for run ``r``; with ``ref`` (the in-process model of the same layout) whether it is bit-identical."""
    same = None
    if ref is not None:
        same = all(np.array_equal(getattr(r["model"], k), getattr(ref, k), equal_nan=True) for k in FITTED)
    print(f"{name:26s} wall {r['wall']:8.2f} s (blocks {r['blocks']:7.2f} s, {n_pix / r['wall']:6.2f} px/s)"
          f"  CPU {r['cpu']:8.2f} s (workers {r['cpu_workers']:7.2f})"
          + ("" if np.isnan(r["busy"]) else f"  workers busy {100 * r['busy']:5.1f} % of the block phases")
          + f"  load {r['load']['load1_mean']:.1f} (max {r['load']['load1_max']:.1f})"
          + ("" if same is None else f"  bit-identical to in process, same n_jobs: {same}"), flush=True)
    return same


def print_ratios(runs: dict) -> None:
    """The three ratios of the docstring, from the medians of the runs."""
    one, two, d1, d2 = (c[0] for c in CONFIGS)
    for label, a, b in (("in process 2 threads vs 1 thread (speed-up)", one, two),
                        ("Dask 1 worker vs in process 1 thread (speed)", one, d1),
                        ("Dask 2 workers vs in process 2 threads (speed)", two, d2),
                        ("Dask 2 workers vs 1 worker (speed-up)", d1, d2)):
        print(f"{label:46s} wall {_ratio(runs, a, b, 'wall'):5.2f}x  blocks {_ratio(runs, a, b, 'blocks'):5.2f}x  "
              f"CPU {_ratio(runs, b, a, 'cpu'):5.2f} (CPU of the second / the first)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-star", type=int, default=300)
    ap.add_argument("--n-pix", type=int, default=400)
    ap.add_argument("--large", action="store_true", help="600 stars x 800 px")
    ap.add_argument("--smoke", action="store_true", help="60 stars x 32 px (the script runs)")
    ap.add_argument("--repeat", type=int, default=1, help="cycles through the four configurations")
    args = ap.parse_args(argv)
    if args.large:
        args.n_star, args.n_pix = 600, 800
    if args.smoke:
        args.n_star, args.n_pix = 60, 32
    if args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: must be >= 1")
    import dask

    # on a loaded machine a busy worker can miss heartbeats and be dropped: no time-to-live here
    dask.config.set({"distributed.scheduler.worker-ttl": None, "distributed.comm.timeouts.connect": "120s",
                     "distributed.comm.timeouts.tcp": "600s"})
    d = make_data(args.n_star, args.n_pix)
    n_pix = d["flux"].shape[1]
    print(f"# {args.n_star} mock LAMOST stars x {n_pix} px, 2x2x2 grid, 5-fold; n_jobs = threads or Dask "
          f"workers (the block layout); {os.cpu_count()} CPUs; {args.repeat} cycle(s)", flush=True)
    runs = {c[0]: [] for c in CONFIGS}
    ok = True
    for cycle in range(args.repeat):
        for name, n_jobs, n_dask, same_as in CONFIGS:
            r = run_config(d, n_jobs, n_dask)
            runs[name].append(r)
            ref = None if same_as is None else runs[CONFIGS[same_as][0]][0]["model"]   # in-process runs come first
            ok &= print_run(name, r, n_pix, ref) is not False
            if same_as is not None or cycle:
                r["model"] = None                          # keep the first in-process models only
    print_ratios(runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

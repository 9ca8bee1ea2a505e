"""Training throughput of ``SLAM.fit`` with its pixel blocks on a Dask cluster of 1 and 2 workers.

References, measured in the same run: the in-process fit with one thread (``n_jobs=1``) and
with two (``n_jobs=2``: pixel blocks in two threads of this process).  Measured:
``SLAM.fit(..., client=...)`` with ``n_jobs=2`` (the block layout of the 2-thread fit) on a
cluster of :func:`mdslam.batch.local_cluster` with 1 and with 2 worker *processes* of one
thread each; the kernels and their eigen decompositions are computed in this process once per
(gamma, fold) and scattered.  The clusters are started, and the package imported on their
workers, before the clock starts (a one-off 2-3 s of CPU per worker).  Every Dask model must be bit-identical to the 2-thread in-process
model: the script checks it.

For each run: wall time of the fit, wall time of its block-solving phases (the CV grid search
and the final fits, the part that runs on the workers; the rest of ``fit``, the start grid and
the likelihood, runs in this process), and CPU time of this process plus its worker processes
(user + system).  Printed ratios: Dask 1 worker against in process with 1 thread (like with
like: one core solving), in process 2 threads against 1 thread, and Dask 2 workers against 1
worker, each for the whole fit and for the block phases.  ``--repeat`` runs the four
configurations in turn that many times (alternating, for a machine shared with other jobs) and
prints each run; the ratios use the medians.

Data: mock LAMOST M dwarfs on the LAMOST grid (``realistic_grid.make_data``: known labels,
``--n-star`` stars, ``--n-pix`` evenly spaced pixels), grid 2 C x 2 epsilon x 2 gamma, 5-fold.
``--large`` (800 stars x 800 px) makes the per-pixel solves dominate the fixed costs of the
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
from contextlib import contextmanager  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from bench_astroslam import LoadSampler  # noqa: E402
from realistic_grid import make_data  # noqa: E402

GRID = {"C": (1.0, 10.0), "epsilon": (0.05, 0.1), "gamma": (0.3, 1.0)}
FITTED = ("dual_coef_", "intercept_", "cv_mse_grid_", "C_", "epsilon_", "gamma_")
CONFIGS = (("in process, 1 thread", 1, 0), ("in process, 2 threads", 2, 0),
           ("Dask, 1 worker process", 2, 1), ("Dask, 2 worker processes", 2, 2))


def tree_cpu() -> float:
    """User + system CPU seconds of this process (all threads) and of its live child processes."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


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
    """One fit: model, wall (s), block-phase wall (s), CPU of this process and its workers (s), load."""
    from mdslam.slam import SLAM

    model = SLAM(**GRID, cv=5, random_state=0, n_jobs=n_jobs)
    times = {"blocks": 0.0}
    with LoadSampler(every=2.0) as load, phase_clock(times):
        c0, t0 = tree_cpu(), time.perf_counter()
        model.fit(d["flux"], d["labels"], d["ivar"], wavelength=d["wave"], client=client)
        wall, cpu = time.perf_counter() - t0, tree_cpu() - c0
    return {"model": model, "wall": wall, "blocks": times["blocks"], "cpu": cpu, "load": load.summary()}


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


def report(runs: dict, n_pix: int) -> bool:
    """Print the runs and the ratios; True if every Dask model is bit-identical to the 2-thread one."""
    ref = runs[CONFIGS[1][0]][0]["model"]
    ok = True
    for name, _, n_dask in CONFIGS:
        for r in runs[name]:
            same = ""
            if n_dask:
                s = all(np.array_equal(getattr(r["model"], k), getattr(ref, k), equal_nan=True) for k in FITTED)
                ok &= s
                same = f"  bit-identical to in process (2 threads): {s}"
            print(f"{name:26s} wall {r['wall']:8.2f} s (blocks {r['blocks']:7.2f} s, {n_pix / r['wall']:6.2f} px/s)"
                  f"  CPU {r['cpu']:8.2f} s  load {r['load']['load1_mean']:.1f} (max {r['load']['load1_max']:.1f})"
                  f"{same}", flush=True)
    one, two, d1, d2 = (c[0] for c in CONFIGS)
    for label, a, b in (("in process 2 threads vs 1 thread (speed-up)", one, two),
                        ("Dask 1 worker vs in process 1 thread (speed)", one, d1),
                        ("Dask 2 workers vs 1 worker (speed-up)", d1, d2)):
        print(f"{label:46s} wall {_ratio(runs, a, b, 'wall'):5.2f}x  blocks {_ratio(runs, a, b, 'blocks'):5.2f}x  "
              f"CPU {_ratio(runs, b, a, 'cpu'):5.2f} (CPU of the second / the first)")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-star", type=int, default=300)
    ap.add_argument("--n-pix", type=int, default=400)
    ap.add_argument("--large", action="store_true", help="800 stars x 800 px")
    ap.add_argument("--smoke", action="store_true", help="60 stars x 32 px (the script runs)")
    ap.add_argument("--repeat", type=int, default=1, help="cycles through the four configurations")
    args = ap.parse_args(argv)
    if args.large:
        args.n_star, args.n_pix = 800, 800
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
    print(f"# {args.n_star} mock LAMOST stars x {n_pix} px, 2x2x2 grid, 5-fold; Dask fits with n_jobs=2 "
          f"(the 2-thread block layout); {os.cpu_count()} CPUs; {args.repeat} cycle(s)", flush=True)
    runs = {name: [] for name, _, _ in CONFIGS}
    for _ in range(args.repeat):
        for name, n_jobs, n_dask in CONFIGS:
            runs[name].append(run_config(d, n_jobs, n_dask))
    return 0 if report(runs, n_pix) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of ``SLAM.fit`` with its pixel blocks on a Dask cluster of 1 and 2 workers.

Reference: the in-process fit (pixel blocks in threads of this process) of the same data, grid,
folds and block layout, measured in the same run.  Measured: ``SLAM.fit(..., client=...)`` on a
``LocalCluster`` of 1 and of 2 worker *processes* (one thread each); the kernels and their eigen
decompositions are computed in this process once per (gamma, fold) and scattered.  Every run uses
``n_jobs=2`` (the block layout), so all models must be bit-identical: the script checks it.

Data: mock LAMOST M dwarfs on the LAMOST grid (``realistic_grid.make_data``: known labels,
``--n-star`` stars, ``--n-pix`` evenly spaced pixels), grid 2 C x 2 epsilon x 2 gamma, 5-fold.
Throughput = pixels trained per second (CV over the whole grid plus the final fits).

Usage::

    MDSLAM_DATA_MIRROR=... python benchmarks/dask_fit.py [--n-star 400] [--n-pix 400]

The ratio of 2 to 1 workers is bounded by the cores free on the machine: the 1-min load average
is printed beside every figure.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from bench_astroslam import LoadSampler  # noqa: E402
from realistic_grid import make_data  # noqa: E402

GRID = {"C": (1.0, 10.0), "epsilon": (0.05, 0.1), "gamma": (0.3, 1.0)}
FITTED = ("dual_coef_", "intercept_", "cv_mse_grid_", "C_", "epsilon_", "gamma_")


def timed_fit(d: dict, client=None, n_jobs: int = 2):
    """One fit: (model, seconds, load summary)."""
    from mdslam.slam import SLAM

    model = SLAM(**GRID, cv=5, random_state=0, n_jobs=n_jobs)
    with LoadSampler(every=2.0) as load:
        t0 = time.perf_counter()
        model.fit(d["flux"], d["labels"], d["ivar"], wavelength=d["wave"], client=client)
        dt = time.perf_counter() - t0
    return model, dt, load.summary()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-star", type=int, default=400)
    ap.add_argument("--n-pix", type=int, default=400)
    args = ap.parse_args(argv)
    import dask
    from distributed import Client, LocalCluster

    # on a loaded machine a busy worker can miss heartbeats and be dropped: no time-to-live here
    dask.config.set({"distributed.scheduler.worker-ttl": None, "distributed.comm.timeouts.connect": "120s",
                     "distributed.comm.timeouts.tcp": "600s"})

    d = make_data(args.n_star, args.n_pix)
    n_pix = d["flux"].shape[1]
    print(f"# {args.n_star} mock LAMOST stars x {n_pix} px, 2x2x2 grid, 5-fold, n_jobs=2 (block layout); "
          f"{os.cpu_count()} CPUs")
    rows = []
    ref, t_ref, load = timed_fit(d)                       # in process, 2 threads
    rows.append(("in process, 2 threads (reference)", t_ref, load, True))
    _, t_1, load = timed_fit(d, n_jobs=1)                 # in process, 1 thread (own layout)
    rows.append(("in process, 1 thread (1 block)", t_1, load, None))
    for nw in (1, 2):
        with LocalCluster(n_workers=nw, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.submit(sum, [1]).result()              # workers up before the clock starts
            model, dt, load = timed_fit(d, client=client)
        same = all(np.array_equal(getattr(model, k), getattr(ref, k), equal_nan=True) for k in FITTED)
        rows.append((f"Dask LocalCluster, {nw} worker process{'es' if nw > 1 else ''}", dt, load, same))
    for name, dt, load, same in rows:
        ident = "" if same is None else f"  bit-identical to the reference: {same}"
        print(f"{name:40s} {dt:8.2f} s  {n_pix / dt:7.2f} px/s  ratio to reference {t_ref / dt:5.2f}x  "
              f"load {load['load1_mean']:.1f} (max {load['load1_max']:.1f}){ident}")
    print(f"Dask 2 workers / 1 worker throughput: {rows[2][1] / rows[3][1]:.2f}x")
    return 0 if all(r[3] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

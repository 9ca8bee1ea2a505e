"""Thread scaling of the Newton final fits (`solver="newton"`): one thread against two, same process.

16 targets (smooth functions of the points plus noise) on a Nystrom RBF kernel of ``--n``
random 3-D points (gamma 1, rank up to 2,000), C = 10, epsilon 0.05, solved by
:func:`mdslam.slam.primal.solve_svr_newton` through :class:`mdslam.slam.distribute.BlockRunner`
with one thread (the reference) and with two.  Prints wall, CPU and cores used of each, the
ratio of wall times, and the largest difference of the duals (the block layouts differ, so
they agree to rounding).  Meaningful only on free cores.

Usage::

    python benchmarks/newton_threads.py --n 3000
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mdslam.slam.distribute import BlockRunner  # noqa: E402
from mdslam.slam.primal import solve_svr_newton  # noqa: E402
from mdslam.svr import nystrom_kernel  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="training points")
    ap.add_argument("--n-target", type=int, default=16, help="targets (pixels)")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((args.n, 3))
    W = rng.standard_normal((args.n_target, 3))
    Y = np.sin(X @ W.T).T + 0.05 * rng.standard_normal((args.n_target, args.n))
    ke = nystrom_kernel(X, 1.0, 2000)
    eps = np.full(args.n_target, 0.05)
    wall, beta = {}, {}
    for nj in (1, 2):
        t, c = time.perf_counter(), _cpu()
        sol = BlockRunner(nj).solve(solve_svr_newton, ke, Y, 10.0, eps, tol=1e-3)
        wall[nj], cpu = time.perf_counter() - t, _cpu() - c
        beta[nj] = sol.beta
        print(f"{nj} thread(s): wall {wall[nj]:.1f} s, CPU {cpu:.1f} s, {cpu / wall[nj]:.2f} cores, "
              f"max KKT gap {sol.gap.max():.2e}", flush=True)
    print(f"two threads / one thread: {wall[1] / wall[2]:.2f}x less wall; duals max |diff| "
          f"{np.abs(beta[1] - beta[2]).max():.1e}; load {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()

"""SMO (libsvm's algorithm on the shared kernel) against the ADMM + polish path, per pixel-solve.

One CV fold and one gamma: the kernel of the fold's training stars is computed once, then every
pixel's SVR at each (C, epsilon) of the grid is solved by

* ``admm``: :func:`mdslam.svr.solve_svr_staged` (the exact path's CV solver),
* ``smo``: :func:`mdslam.slam.smo.solve_svr_smo` (each point from zero, float64 kernel),
* ``smo-f32``: the same with the kernel read in float32,
* ``smo-seed``: :func:`mdslam.slam.smo.solve_svr_smo_path`, the C ladder of each epsilon with
  alpha seeding (each C from the previous C's solution),
* ``admm-smo``: :func:`mdslam.slam.smo.solve_svr_admm_smo`, ADMM + polish to 3,000 iterations,
  then SMO from its solution where still above tol,

all in this process on one thread, CPU time (user + system).  Printed per solver: CPU per
pixel-solve, the ratio against ``admm`` in the same run, mean / max iterations (ADMM iterations
or SMO steps), the largest KKT gap, and the held-out CV-MSE of the fold against ``admm``'s
(fraction of (pixel, point) within 0.5 %).

Problems::

    python benchmarks/smo_solver.py reference --n-pix 300        # ../shared/bench/astroslam synth, 2x2 (C, eps)
    python benchmarks/smo_solver.py realistic --n-pix 64 --C 100 1000   # mock LAMOST, n = 900 (10-fold)
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("ASTROSLAM_BENCH_DIR", HERE.parent.parent / "shared" / "bench" / "astroslam"))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reference_data(results: Path, n_pix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (n, 3), flux and ivar (n, n_pix) of the reference set, ``n_pix`` evenly spaced pixels."""
    full = results / "synth.npz"
    if not full.exists():
        results.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(SHARED / "make_synth.py"), str(full)], check=True)
    d = np.load(full)
    pix = np.linspace(0, d["tr_flux"].shape[1] - 1, n_pix).round().astype(int)
    return d["tr_labels"], d["tr_flux"][:, pix], d["tr_ivar"][:, pix]


def realistic_data(n_star: int, n_pix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mock LAMOST set of ``realistic_grid.py`` (same seed), ``n_pix`` evenly spaced pixels."""
    sys.path.insert(0, str(HERE))
    from realistic_grid import make_data

    d = make_data(n_star, n_pix)
    return d["labels"], d["flux"], d["ivar"]


def fold_problem(labels, flux, ivar, folds: int, fold: int):
    """Standardised training/test arrays of one KFold (unshuffled) fold, as ``SLAM.fit`` builds them."""
    from sklearn.model_selection import KFold

    from mdslam.slam import inputs
    from mdslam.slam.training import _standardise

    flux, labels, good = inputs.check_training(flux, labels, ivar)
    Xs, Ys, _ = _standardise(flux, labels, good)
    tr, te = list(KFold(folds).split(Xs))[fold]
    Ytr = np.ascontiguousarray(Ys[tr].T)
    W = good[tr].T.astype(float)
    return Xs[tr], Xs[te], Ytr, Ys[te].T, good[te].T, W


def run(args) -> None:
    from mdslam.slam.smo import solve_svr_admm_smo, solve_svr_smo, solve_svr_smo_path, split_path
    from mdslam.svr import KernelEig, rbf_kernel, solve_svr_staged

    if args.problem == "reference":
        data = reference_data(Path(args.results), args.n_pix)
        Cs, es = np.array(args.C or (1.0, 10.0)), np.array(args.epsilon or (0.05, 0.1))
        folds = 5
    else:
        data = realistic_data(args.n_star, args.n_pix)
        Cs, es = np.array(args.C or (100.0, 1000.0)), np.array(args.epsilon or (0.03, 0.1))
        folds = 10
    Xtr, Xte, Ytr, Yte, gte, W = fold_problem(*data, folds, args.fold)
    print(f"{args.problem}: n_train {Xtr.shape[0]}, {Ytr.shape[0]} px, gamma {args.gamma}, C {Cs.tolist()}, "
          f"epsilon {es.tolist()}, fold {args.fold} of {folds}, load {os.getloadavg()[0]:.1f}")
    ke = KernelEig.from_kernel(rbf_kernel(Xtr, Xtr, args.gamma), rel_cut=1e-8)
    Kv = rbf_kernel(Xtr, Xte, args.gamma)
    solve_svr_smo(ke, Ytr[:2], Cs[0] * W[:2], es[0])                 # compile outside the timing
    solve_svr_smo(ke, Ytr[:2], Cs[0] * W[:2], es[0], kernel_dtype=np.float32)
    solve_svr_smo_path(ke, Ytr[:2], W[:2], es[0], Cs=Cs[:1])

    def mse(sol):
        res = (sol.beta @ Kv + sol.intercept[:, None] - Yte) * gte
        return (res * res).sum(axis=1)

    def per_point(fn):
        out = {}
        for e in es:
            for C in Cs:
                out[C, e] = fn(C, e)
        return out

    results = {}
    for name in args.solvers:
        c0 = _cpu()
        if name == "admm":
            sols = per_point(lambda C, e: solve_svr_staged(ke, Ytr, C * W, e, tol=1e-3))
        elif name == "admm-smo":
            sols = per_point(lambda C, e: solve_svr_admm_smo(ke, Ytr, C * W, e, tol=1e-3))
        elif name in ("smo", "smo-f32"):
            dt = np.float32 if name == "smo-f32" else np.float64
            sols = per_point(lambda C, e, dt=dt: solve_svr_smo(ke, Ytr, C * W, e, tol=1e-3, kernel_dtype=dt))
        else:
            seed = {"smo-seed": "keep", "smo-seed-scale": "scale"}[name]
            sols = {}
            for e in es:
                for C, s in zip(Cs, split_path(solve_svr_smo_path(ke, Ytr, W, e, Cs=Cs, seed=seed)), strict=True):
                    sols[C, e] = s
        cpu = _cpu() - c0
        results[name] = (cpu, sols)
    _report(results, mse, Ytr.shape[0], Cs, es)


def _report(results, mse, P, Cs, es) -> None:
    ref_cpu, ref = results.get("admm", next(iter(results.values())))
    n_solve = P * len(ref)
    ref_mse = {k: mse(s) for k, s in ref.items()}
    for name, (cpu, sols) in results.items():
        its = np.concatenate([s.n_iter.ravel() for s in sols.values()])
        gap = max(float(s.gap.max()) for s in sols.values())
        within = np.concatenate([np.abs(mse(s) / ref_mse[k] - 1) <= 0.005 for k, s in sols.items()])
        per_c = ", ".join(f"C={C:g}: {np.mean([sols[C, e].n_iter.mean() for e in es]):.0f}" for C in Cs)
        print(f"{name:15s} CPU per pixel-solve {1e3 * cpu / n_solve:8.3f} ms  ratio admm/this "
              f"{ref_cpu / cpu:6.2f}x  iterations mean {its.mean():7.0f} max {its.max():7d} ({per_c})  "
              f"max gap {gap:.2e}  unconverged {int(sum((~s.converged).sum() for s in sols.values()))}  "
              f"CV-MSE within 0.5 % of admm {within.mean():.4f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("problem", choices=("reference", "realistic"))
    ap.add_argument("--n-pix", type=int, default=300)
    ap.add_argument("--n-star", type=int, default=1000, help="realistic: mock stars (10-fold: n_train = 0.9 n)")
    ap.add_argument("--gamma", type=float, default=0.3)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--C", type=float, nargs="*", default=None)
    ap.add_argument("--epsilon", type=float, nargs="*", default=None)
    ap.add_argument("--solvers", nargs="*", default=["admm", "smo", "smo-f32", "smo-seed"],
                    choices=["admm", "admm-smo", "smo", "smo-f32", "smo-seed", "smo-seed-scale"])
    ap.add_argument("--results", default=str(HERE / "results"))
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

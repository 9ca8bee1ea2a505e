"""Warm starts across CV folds on the realistic grid: does fold k-1's solution speed up fold k's?

The 10 training sets of a 10-fold CV share 8/9 of their stars.  This script solves one
(gamma, C, epsilon) on 16 of the mock LAMOST pixels of ``realistic_grid.py`` (1,000 stars,
``KFold(10)`` unshuffled) in folds 0 and 1 from zero with ``solver="admm-smo"``
(:func:`mdslam.slam.smo.solve_svr_admm_smo`), then fold 1 again from fold 0's duals mapped onto
fold 1's training set (the shared stars keep their coefficient, the new ones start at 0; the
result clipped to the box with ``sum beta = 0`` restored, :func:`mdslam.slam.smo._feasible`):

* ``smo``: SMO from that point;
* ``admm``: ADMM from that point (``u`` from its gradient, ``rho`` the cold start's), with the
  KKT check and a polish attempt before the first iteration and at 80 / 160 / 320 iterations,
  ADMM to 3,000 iterations in all, then SMO, as ``admm-smo`` does from zero.

It prints CPU seconds per solve (one thread), mean iterations, the largest KKT gap, how many
warm solves the early polish finished, and the largest relative difference of the fold's
test MSE from the cold solve's.

Usage::

    python benchmarks/warm_folds.py --gamma 0.3 --C 10 100 1000 --epsilon 0.03
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402

import numpy as np  # noqa: E402
from realistic_grid import make_data  # noqa: E402


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def warm_admm_smo(ke, Y, C, eps, beta0, rho, tol=1e-3, stops=(0, 80, 160, 320), admm_max_iter=3000):
    """``admm-smo`` started from the feasible duals ``beta0`` (P, n); ``rho`` (P,) ADMM penalties."""
    from mdslam.slam.smo import solve_svr_smo
    from mdslam.svr import SVRBatchSolution, kkt_gap, polish_svr_batch, solve_svr_batch

    P = Y.shape[0]
    ef = np.full(P, eps)
    h = Y - ke.matmul(beta0)
    gap, b = kkt_gap(beta0, h, C, ef[:, None])
    sol = SVRBatchSolution(beta0.copy(), b, gap, np.zeros(P, int), gap <= tol,
                           (beta0.copy(), (h - b[:, None]) / rho[:, None], rho.copy()))
    used, n_polished = 0, 0

    def admm(todo, budget):
        z, u, r = sol.state
        cont = solve_svr_batch(ke, Y[todo], C[todo], ef[todo], tol=tol, max_iter=budget,
                               warm=(z[todo], u[todo], r[todo]))
        sol.beta[todo], sol.intercept[todo], sol.gap[todo] = cont.beta, cont.intercept, cont.gap
        sol.n_iter[todo] += cont.n_iter
        for i in range(3):
            sol.state[i][todo] = cont.state[i]

    for stop in stops:
        if stop > used and (sol.gap > tol).any():
            admm(np.flatnonzero(sol.gap > tol), stop - used)
            used = stop
        todo = np.flatnonzero(sol.gap > tol)
        if todo.size == 0:
            break
        sub = SVRBatchSolution(sol.beta[todo], sol.intercept[todo], sol.gap[todo], sol.n_iter[todo],
                               sol.converged[todo], tuple(a[todo] for a in sol.state))
        pol = polish_svr_batch(ke, Y[todo], C[todo], ef[todo], sub, steps=3, tol=tol)
        ok = pol.gap <= tol
        sol.beta[todo[ok]], sol.intercept[todo[ok]], sol.gap[todo[ok]] = pol.beta[ok], pol.intercept[ok], pol.gap[ok]
        n_polished += int(ok.sum())
    if (sol.gap > tol).any():
        admm(np.flatnonzero(sol.gap > tol), admm_max_iter - used)
    todo = np.flatnonzero(sol.gap > tol)
    if todo.size:
        sub = solve_svr_smo(ke, Y[todo], C[todo], ef[todo], tol=tol, warm=(sol.beta[todo],))
        sol.beta[todo], sol.intercept[todo], sol.gap[todo] = sub.beta, sub.intercept, sub.gap
        sol.n_iter[todo] += sub.n_iter
    return sol, n_polished


def main(argv=None) -> int:
    from sklearn.model_selection import KFold

    from mdslam.slam import inputs
    from mdslam.slam.estimator import DEFAULT_C
    from mdslam.slam.smo import _feasible, solve_svr_admm_smo, solve_svr_smo
    from mdslam.slam.training import _cv_rel_cut, _kernel, _standardise
    from mdslam.svr import rbf_kernel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamma", type=float, default=0.3)
    ap.add_argument("--C", type=float, nargs="+", default=[10.0, 100.0, 1000.0])
    ap.add_argument("--epsilon", type=float, default=0.03)
    ap.add_argument("--n-pix", type=int, default=16, help="pixels: every 4th of the 64-px subset")
    args = ap.parse_args(argv)
    d = make_data(1000, 64)
    flux, labels, good = inputs.check_training(d["flux"], d["labels"], d["ivar"])
    Xs, Ys, _ = _standardise(flux, labels, good)
    folds = list(KFold(10).split(Xs))
    pix = np.arange(0, 64, 64 // args.n_pix)[:args.n_pix]
    cut = _cv_rel_cut(np.asarray(DEFAULT_C))
    kes = [_kernel(Xs[folds[k][0]], args.gamma, None, rel_cut=cut) for k in (0, 1)]
    tr0, (tr1, te1) = folds[0][0], folds[1]
    Kv = rbf_kernel(Xs[tr1], Xs[te1], args.gamma)
    Yte = Ys[te1][:, pix].T
    print(f"gamma {args.gamma}, epsilon {args.epsilon}, {pix.size} px, folds 0 -> 1 of KFold(10) on 1000 stars; "
          f"load {os.getloadavg()[0]:.2f}")
    for C in args.C:
        cold = []
        for k, tr in enumerate((tr0, tr1)):
            t = _cpu()
            cold.append(solve_svr_admm_smo(kes[k], Ys[tr][:, pix].T, C * good[tr][:, pix].T, args.epsilon))
            dt = _cpu() - t
        Cm, Y1 = C * good[tr1][:, pix].T, Ys[tr1][:, pix].T
        full = np.zeros((pix.size, Xs.shape[0]))
        full[:, tr0] = cold[0].beta
        beta0 = _feasible(full[:, tr1], Cm)
        mse_cold = (((cold[1].beta @ Kv + cold[1].intercept[:, None]) - Yte) ** 2).mean(1)
        print(f"C {C:6g} cold    {dt / pix.size * 1e3:7.1f} ms/solve  it {cold[1].n_iter.mean():9.0f}  "
              f"max gap {cold[1].gap.max():.2e}")
        t = _cpu()
        sm = solve_svr_smo(kes[1], Y1, Cm, args.epsilon, warm=(beta0,))
        dts = _cpu() - t
        t = _cpu()
        rho = np.full(pix.size, float(np.clip(0.1 / C, 3e-4, 1.0)))
        ad, n_pol = warm_admm_smo(kes[1], Y1, Cm, args.epsilon, beta0, rho)
        dta = _cpu() - t
        for name, s, dtw, extra in (("smo", sm, dts, ""), ("admm", ad, dta, f"  polished early {n_pol}/{pix.size}")):
            mse = (((s.beta @ Kv + s.intercept[:, None]) - Yte) ** 2).mean(1)
            print(f"C {C:6g} warm {name:4s}{dtw / pix.size * 1e3:7.1f} ms/solve  it {s.n_iter.mean():9.0f}  "
                  f"max gap {s.gap.max():.2e}  test MSE vs cold max {np.abs(mse / mse_cold - 1).max():.1e}  "
                  f"cold/warm {dt / dtw:.2f}x{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

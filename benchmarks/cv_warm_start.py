"""Warm starts of the CV solves against cold starts, on the reference problem.

The five training sets of a 5-fold CV share three quarters of their stars.  For every
(gamma, C, epsilon) of the reference grid and every fold after the first, this solves the
fold's SVRs of all pixels with :func:`mdslam.svr.solve_svr_staged` from zero (the CV grid
search of ``SLAM.fit``) and from the previous fold's ADMM state ``(z, u, rho)`` on the shared
stars, 0 on the new ones, clipped to the box (:func:`mdslam.svr.warm_state_on_rows`); and, in
every fold, each C = 10 point from the same fold's C = 1 solution (``z = beta``, ``u = 0``, the
cold ``rho``; the whole ADMM state of C = 1 took 5-9x the iterations in a first trial):

* ``warm``, ``warm-C``: the polish schedule of the cold start (polish at iterations 80, 160, 320);
* ``warm-early``, ``warm-C-early``: KKT checks from iteration 10 and polish at 30, 60, 90, 160,
  320 (a near solution's bounded / free split should be right early);
* ``polish-at-0``: the fraction of fold-warm solves that one polish attempt (3 Newton steps)
  brings to ``tol`` straight from the mapped state, before any ADMM iteration.

Cold and warm solves of a point alternate in one process, one BLAS thread, no worker threads,
so their CPU times (``time.process_time``) compare at any load.  Prints one line per variant:
its CPU and that of the cold solves it replaces, the ratio cold / variant (> 1: the warm start
pays), mean ADMM iterations, the largest KKT gap, the fraction of (pixel, grid point, fold)
whose test MSE is within 0.1 % of the cold start's, and the pixels whose chosen grid point
(CV-MSE over the five folds, cold solutions where the variant has no start) is the cold
start's.  No ``cv_prune``: every point in every fold.  Writes
``benchmarks/results/cv_warm_start.json``.

Usage::

    python benchmarks/cv_warm_start.py                   # all 1500 px (~8 min at load 1)
    python benchmarks/cv_warm_start.py --pixel-step 5    # every 5th pixel
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from bench_astroslam import GRID, make_data
from sklearn.model_selection import KFold

from mdslam.slam._util import one_blas_thread
from mdslam.slam.inputs import check_training
from mdslam.slam.training import _cv_rel_cut, _iter_folds, _kernel, _standardise
from mdslam.svr import (
    SVRBatchSolution,
    kkt_gap,
    polish_svr_batch,
    rbf_kernel,
    solve_svr_staged,
    warm_state_on_rows,
)

HERE = Path(__file__).resolve().parent
EARLY = {"stops": (30, 60, 90, 160, 320), "first_check": 10}
#: variant: (start taken from the previous "fold" or from the next lower "C" of the same fold, solver options)
VARIANTS = {"warm": ("fold", {}), "warm-early": ("fold", EARLY), "warm-C": ("C", {}), "warm-C-early": ("C", EARLY)}


def polish_from(ke, Y, C: float, eps: float, state: tuple, tol: float) -> float:
    """Fraction of targets one polish attempt brings to ``tol`` from the ADMM state ``state``."""
    P, n = Y.shape
    Cf = np.full((P, n), C)
    z = state[0]
    gap, b = kkt_gap(z, Y - ke.matmul(z), Cf, np.full((P, 1), eps))
    sol = SVRBatchSolution(z.copy(), b, gap, np.zeros(P, int), gap <= tol, state)
    return float(np.mean(polish_svr_batch(ke, Y, Cf, np.full(P, eps), sol, steps=3, tol=tol).gap <= tol))


def _count(a: dict, s: SVRBatchSolution, cpu: float, rel: np.ndarray) -> None:
    """Add one solve's CPU, iterations and largest gap to the variant's totals ``a``; ``rel``:
    the test-MSE change against the cold start (kept for the warm variants only)."""
    a["cpu_s"] += cpu
    a["iters"] += int(s.n_iter.sum())
    a["solves"] += s.n_iter.size
    a["max_gap"] = max(a["max_gap"], float(s.gap.max()))
    if "rel" in a:
        a["rel"].append(np.abs(rel))


def _add_fold(acc: dict, sse: np.ndarray, sols: dict, cpu: dict, starts: dict, test: tuple) -> None:
    """Add one (grid point, fold)'s test squared errors to ``sse`` (one row per variant, the cold
    solution where a variant had no start) and its solves to the totals ``acc``; the cold solve
    counts towards the reference of each kind of start made (``cold-fold``, ``cold-C``)."""
    Kv, Yte, gte = test
    e2 = {}
    for i, v in enumerate(["cold", *VARIANTS]):
        s = sols.get(v, sols["cold"])
        res = (s.beta @ Kv + s.intercept[:, None] - Yte) * gte
        e2[v] = (res * res).sum(axis=1)
        sse[i] += e2[v]
        with np.errstate(invalid="ignore", divide="ignore"):   # 0 / 0: a pixel without good test stars
            rel = e2[v] / e2["cold"] - 1
        if v != "cold" and v in cpu:
            _count(acc[v], s, cpu[v], rel)
    for src in starts:
        _count(acc["cold-" + src], sols["cold"], cpu["cold"], e2["cold"])


def run(Xs, Ys, good, tol: float = 1e-3) -> dict:
    """Cold and warm CV solves of every grid point and fold; CPU, iterations and test errors per variant."""
    n, n_pix = Ys.shape
    folds = _iter_folds(n, KFold(5), None)
    Cs, es, gs = (np.asarray(GRID[k], float) for k in ("C", "epsilon", "gamma"))
    cut = _cv_rel_cut(Cs)
    names = ["cold", *VARIANTS]
    sse = np.zeros((len(names), Cs.size, es.size, gs.size, n_pix))
    acc = {v: {"cpu_s": 0.0, "iters": 0, "solves": 0, "max_gap": 0.0} for v in ["cold-fold", "cold-C", *VARIANTS]}
    for v in VARIANTS:
        acc[v]["rel"] = []
    p0 = []
    for gi, g in enumerate(gs):
        prev = {}
        for k, (tr, te) in enumerate(folds):
            ke = _kernel(Xs[tr], g, None, rel_cut=cut)
            Y = np.ascontiguousarray(Ys[tr].T)
            Kv = rbf_kernel(Xs[tr], Xs[te], g)
            now = {}
            for ci, C in enumerate(Cs):
                for ei, eps in enumerate(es):
                    t0 = time.process_time()
                    sols = {"cold": solve_svr_staged(ke, Y, C, eps, tol=tol)}
                    cpu = {"cold": time.process_time() - t0}
                    starts = {}
                    if k:
                        starts["fold"] = warm_state_on_rows(prev[ci, ei].state, folds[k - 1][0], tr, C)
                        p0.append(polish_from(ke, Y, C, eps, starts["fold"], tol))
                    if ci:                                  # the lower C's solution, u = 0, the cold rho
                        z = np.clip(now[ci - 1, ei].beta, -C, C)
                        starts["C"] = (z, np.zeros_like(z), np.full(z.shape[0], np.clip(0.1 / C, 3e-4, 1.0)))
                    for v, (src, kw) in VARIANTS.items():
                        if src in starts:
                            t0 = time.process_time()
                            sols[v] = solve_svr_staged(ke, Y, C, eps, tol=tol, warm=starts[src], **kw)
                            cpu[v] = time.process_time() - t0
                    prev[ci, ei] = now[ci, ei] = sols["cold"]
                    _add_fold(acc, sse[:, ci, ei, gi], sols, cpu, starts, (Kv, Ys[te].T, good[te].T))
    best = np.argmin(sse.reshape(len(names), -1, n_pix), axis=1)
    out = {"n_pix": n_pix, "polish_at_0_success": float(np.mean(p0))}
    for v, a in acc.items():
        out[v] = {"cpu_s": a["cpu_s"], "mean_iter": a["iters"] / max(a["solves"], 1), "max_gap": a["max_gap"]}
        if v in VARIANTS:
            out[v]["same_choice"] = float(np.mean(best[names.index(v)] == best[0]))
        if a.get("rel"):
            r = np.concatenate(a["rel"])
            r = r[np.isfinite(r)]
            out[v].update(within_0p1pct=float(np.mean(r <= 1e-3)), rel_max=float(r.max()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixel-step", type=int, default=1, help="every k-th pixel of the reference set")
    args = ap.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    d = np.load(make_data(results, False, args.pixel_step))
    flux, labels, good = check_training(d["tr_flux"], d["tr_labels"], d["tr_ivar"])
    Xs, Ys, _ = _standardise(flux, labels, good)
    load0 = os.getloadavg()[0]
    with one_blas_thread():
        out = run(Xs, Ys, good)
    out["load1"] = [load0, os.getloadavg()[0]]
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{out['n_pix']} px, 8 grid points, load {load0:.1f} -> {out['load1'][1]:.1f}")
    for v, (src, _) in VARIANTS.items():
        o, c = out[v], out["cold-" + src]
        print(f"{v} ({'folds 2-5' if src == 'fold' else 'C = 10 from C = 1'}): {o['cpu_s']:.1f} s CPU (cold "
              f"{c['cpu_s']:.1f} s), ratio cold/{v} {c['cpu_s'] / o['cpu_s']:.2f}, mean {o['mean_iter']:.1f} "
              f"iterations (cold {c['mean_iter']:.1f}), max gap {o['max_gap']:.1e} (cold {c['max_gap']:.1e}), "
              f"test MSE within 0.1 % of cold {100 * o['within_0p1pct']:.2f} % (max {100 * o['rel_max']:.2f} %), "
              f"same choice {100 * o['same_choice']:.2f} % of px")
    print(f"polish-at-0: {100 * out['polish_at_0_success']:.1f} % of the solves reach the tolerance")
    (results / "cv_warm_start.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Screened CV grid search: a cheap proxy ranks the grid, the full k-fold CV solves the best few points.

SLAM's exact hyperparameter search (:func:`mdslam.slam.training._grid_search_cv`) solves every
grid point in every fold.  The screened search (``SLAM(cv_screen=...)``) does it in two stages:

1. **proxy**: the whole grid with a few folds on a seeded random subsample of the training stars
   (:func:`mdslam.sampling.draw`), every point of every pixel; or the first fold(s) of the
   full CV itself, whose solves stage 2 then reuses;
2. **full CV on the kept points**: per pixel the ``keep`` points of lowest proxy CV-MSE get the
   full k-fold CV of the exact search (same folds, same solver, same ``tol``), all pixels'
   kept points with one gamma solved as one batch per (fold, gamma) kernel with per-target C
   and epsilon.

The choice is the kept point of lowest full CV-MSE; points not kept have NaN in ``sse``.
With ``prune`` (a factor ``f``) stage 2 also drops, after its first ``prune_after`` folds, the
kept points whose CV-MSE so far is above ``f`` times the pixel's best kept point (the rule of
``SLAM(cv_prune=f)`` applied to the kept points); ``f = inf`` drops none.  ``admm_iter`` is
the ``admm_max_iter`` of ``solver="admm-smo"`` in both stages (:func:`mdslam.slam.smo.solve_svr_admm_smo`:
ADMM iterations after its polish stops at 80 / 160 / 320, before the SMO finish; 3,000 in the
exact search): every solve still ends at ``tol``, fewer ADMM iterations only move where SMO
takes over (the CV-MSE then differs within the solver's tolerance, measured in
``benchmarks/README.md``).
Every stage-2 solve is checked against ``tol`` and counted per pixel, as in the exact search;
the proxy's solves above ``tol`` are counted apart (they only rank).  How often the choice
differs from the exact search's, and the CV-MSE regret, are measured in ``benchmarks/README.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..sampling import draw
from ..svr import rbf_kernel
from ._util import _progress
from .training import (
    _cv_rel_cut,
    _cv_solver,
    _grid_search_cv,
    _iter_folds,
    _kernel,
    _prune_alive,
    _solve_parallel,
    _support_index,
)

#: Defaults of the proxy: stars in the subsample, its folds, points kept per pixel; stage 2's
#: pruning factor (None: none), the folds it waits for, and the ADMM iterations of "admm-smo".
SCREEN_DEFAULTS = {"n_star": 300, "folds": 3, "keep": 5, "first_folds": 0, "prune": None, "prune_after": 2,
                   "admm_iter": 3000}


def check_screen(screen: Any) -> dict[str, Any]:
    """The screened search's settings from ``SLAM(cv_screen=...)``.

    Parameters
    ----------
    screen : int or mapping
        An int ``k``: keep ``k`` points per pixel, the proxy of :data:`SCREEN_DEFAULTS`.  A
        mapping with any of ``keep``, ``n_star`` (stars of the proxy's subsample),
        ``folds`` (its folds, >= 2) and ``first_folds`` (> 0: the proxy is instead the
        first ``first_folds`` folds of the full CV on all stars, whose solves the full CV
        reuses), ``prune`` (None, or a factor ``f > 1``, ``inf`` allowed: after ``prune_after``
        folds of the full CV, counting the ``first_folds`` ones, the kept points above ``f`` x the
        pixel's best so far get no more folds), ``admm_iter`` (the ``admm_max_iter`` of ``solver="admm-smo"``
        in both stages), the rest from :data:`SCREEN_DEFAULTS`.

    Returns
    -------
    dict with int ``keep``, ``n_star``, ``folds``, ``first_folds``, ``prune_after``, ``admm_iter``
    and ``prune`` (None or float).

    Raises
    ------
    ValueError
        An unknown key, a count that is not a positive int (``folds`` < 2), or a ``prune`` that is
        not None or a number > 1.
    """
    spec = {"keep": screen} if not isinstance(screen, Mapping) else dict(screen)
    bad = set(spec) - set(SCREEN_DEFAULTS)
    if bad:
        raise ValueError(f"cv_screen: unknown key(s) {sorted(bad)}; allowed: {sorted(SCREEN_DEFAULTS)}")
    out = {**SCREEN_DEFAULTS, **spec}
    f = out.pop("prune")
    for k, v in out.items():
        low = {"folds": 2, "first_folds": 0}.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"cv_screen {k}={v!r}: must be an int >= {low}")
    if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float, np.number)) or not f > 1):
        raise ValueError(f"cv_screen prune={f!r}: must be None or a factor > 1")
    return {**{k: int(v) for k, v in out.items()}, "prune": None if f is None else float(f)}


def keep_best(mse: np.ndarray, keep: int) -> np.ndarray:
    """Per pixel, the ``keep`` grid points of lowest proxy CV-MSE.

    Parameters
    ----------
    mse : (n_C, n_epsilon, n_gamma, n_pix) array
        Proxy CV-MSE (standardised flux^2; NaN or inf: not ranked).
    keep : int
        Points kept per pixel (all if >= the grid size).

    Returns
    -------
    (n_C, n_epsilon, n_gamma, n_pix) bool array.  A pixel without any finite proxy value keeps
    every point (its full search is the exact one).
    """
    flat = mse.reshape(-1, mse.shape[-1])
    m = np.where(np.isfinite(flat), flat, np.inf)
    order = np.argsort(m, axis=0, kind="stable")[:min(keep, m.shape[0])]
    alive = np.zeros(m.shape, bool)
    np.put_along_axis(alive, order, True, axis=0)
    alive[:, ~np.isfinite(m).any(axis=0)] = True
    return alive.reshape(mse.shape)


def screen_search(screen: Any, random_state: int | None = 0):
    """The screened search as a function with the signature of :func:`mdslam.slam.training._grid_search_cv`.

    Parameters
    ----------
    screen : int or mapping
        ``SLAM(cv_screen=...)``, checked by :func:`check_screen`.
    random_state : int or None
        Seed of the proxy's subsample and folds.

    Returns
    -------
    callable ``(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers=1, kernel_rank=None,
    prune=None, solver="admm")`` running :func:`screened_search_cv`; it raises ValueError for a
    ``kernel_rank`` or ``prune`` (the screen needs the exact kernel and no pruning).
    """
    check_screen(screen)

    def search(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers=1, kernel_rank=None, prune=None,
               solver="admm"):
        if kernel_rank is not None or prune is not None:
            raise ValueError("cv_screen needs the exact kernel of the CV (kernel_rank None or a cv_subsample) "
                             "and cv_prune None")
        return screened_search_cv(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers, solver, screen,
                                  random_state)
    return search


def screened_search_cv(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers=1, solver="admm",
                       screen: Any = 5, random_state=0):
    """The screened grid search: proxy on a subsample, full CV on each pixel's kept points.

    Arguments and returns as :func:`mdslam.slam.training._grid_search_cv` (exact kernel);
    ``screen`` as :func:`check_screen`, ``random_state`` seeds the subsample and its folds.
    ``sse`` and ``se`` are NaN at the points not kept.  ``info`` adds ``cv_screen`` (the
    settings), ``cv_screen_n_unconverged`` (the proxy's solves above ``tol``) and
    ``cv_screened_fraction`` (the full search's solves not made).
    """
    spec = check_screen(screen)
    n, n_pix = Ys.shape
    if spec["first_folds"]:
        return _screen_first_folds(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers, solver, spec)
    rows = draw(n, spec["n_star"], random_state)
    pfolds = _iter_folds(rows.size, spec["folds"], random_state)
    psse, _, pcnt, pinfo = _grid_search_cv(Xs[rows], Ys[rows], good[rows], pfolds, Cs, es, gs, tol, verbose,
                                           n_workers, solver=_proxy_solver(solver, spec["admm_iter"]))
    with np.errstate(invalid="ignore", divide="ignore"):
        alive = keep_best(psse / pcnt, spec["keep"])
    sse, se, cnt, info = masked_search_cv(Xs, Ys, good, folds, Cs, es, gs, alive, tol, verbose, n_workers, solver,
                                          prune=spec["prune"], prune_after=spec["prune_after"],
                                          admm_iter=spec["admm_iter"])
    info.update(cv_screen=spec, cv_screen_n_unconverged=pinfo["cv_n_unconverged"],
                cv_screened_fraction=float(1.0 - info.pop("cv_n_solves") / (alive.size * len(folds))))
    return sse, se, cnt, info


def _proxy_solver(solver: str, admm_iter: int):
    """The proxy's solver: ``solver``, with ``admm_max_iter=admm_iter`` if it is "admm-smo"."""
    if solver != "admm-smo":
        return solver
    return functools.partial(_cv_solver(solver), admm_max_iter=int(admm_iter))


def _screen_first_folds(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers, solver, spec):
    """The screened search whose proxy is the first ``spec["first_folds"]`` folds of ``folds`` (all points).

    Those folds' solves are part of the full CV: the kept points add the other folds' sums,
    and every solve above ``tol`` (both stages) counts in ``cv_unconverged_per_pixel``.
    """
    f = min(spec["first_folds"], len(folds) - 1)
    psse, pse, pcnt, pinfo = _grid_search_cv(Xs, Ys, good, folds[:f], Cs, es, gs, tol, verbose, n_workers,
                                             solver=_proxy_solver(solver, spec["admm_iter"]))
    with np.errstate(invalid="ignore", divide="ignore"):
        alive = keep_best(psse / pcnt, spec["keep"])
    sse, se, cnt, info = masked_search_cv(Xs, Ys, good, folds[f:], Cs, es, gs, alive, tol, verbose, n_workers, solver,
                                          prune=spec["prune"], prune_after=max(spec["prune_after"] - f, 0),
                                          prior=(psse, pcnt), admm_iter=spec["admm_iter"])
    n1, n2 = psse.size * f, info.pop("cv_n_solves")
    info.update(cv_mean_iterations=(pinfo["cv_mean_iterations"] * n1 + info["cv_mean_iterations"] * n2) / (n1 + n2),
                cv_max_kkt_gap=max(pinfo["cv_max_kkt_gap"], info["cv_max_kkt_gap"]),
                cv_unconverged_per_pixel=info["cv_unconverged_per_pixel"] + pinfo["cv_unconverged_per_pixel"],
                cv_screen=spec, cv_screen_n_unconverged=pinfo["cv_n_unconverged"],
                cv_screened_fraction=float(1.0 - (n1 + n2) / (psse.size * len(folds))))
    info["cv_n_unconverged"] = int(info["cv_unconverged_per_pixel"].sum())
    return sse + psse, se + pse, cnt + pcnt, info


def masked_search_cv(Xs, Ys, good, folds, Cs, es, gs, alive, tol, verbose, n_workers=1, solver="admm",
                     prune=None, prune_after=2, prior=None, admm_iter=None):
    """Full k-fold CV sums of the grid points ``alive`` only, one batched solve per (fold, gamma).

    Parameters
    ----------
    Xs : (n, L) array
        Standardised labels.
    Ys, good : (n, n_pix) arrays
        Standardised fluxes and their good-pixel mask.
    folds : list of (train, test) index arrays
    Cs, es, gs : (n_C,), (n_epsilon,), (n_gamma,) arrays
        The grid.
    alive : (n_C, n_epsilon, n_gamma, n_pix) bool array
        The (point, pixel) pairs solved.
    tol : float
        KKT gap of every solve (libsvm's criterion).
    verbose : bool
    n_workers : int or BlockRunner
    solver : str
        As :func:`mdslam.slam.training._grid_search_cv` (exact kernel).
    prune : float or None
        None: every ``alive`` point in every fold.  A factor ``f > 1``: before fold ``prune_after``
        (0-based) the points whose CV-MSE so far (with ``prior``) is above ``f`` times the
        pixel's best alive point are dropped from ``alive`` (:func:`mdslam.slam.training._prune_alive`);
        ``inf`` drops none.
    prune_after : int
        Folds of ``folds`` solved before the pruning.
    prior : (sse, cnt) or None
        Sums of folds solved before ``folds`` ((n_C, n_epsilon, n_gamma, n_pix) and (n_pix,)),
        added to the partial CV-MSE of the pruning only.
    admm_iter : int or None
        ``solver="admm-smo"``: its ``admm_max_iter`` (ADMM iterations after the polish stops, before
        the SMO finish; None: the solver's 3,000).

    Returns
    -------
    sse, se : (n_C, n_epsilon, n_gamma, n_pix) arrays, NaN where not ``alive`` or pruned.
    cnt : (n_pix,) array
        Test points per pixel.
    info : dict
        ``cv_mean_iterations``, ``cv_max_kkt_gap``, ``cv_n_unconverged``,
        ``cv_unconverged_per_pixel`` (n_pix,) and ``cv_n_solves`` of these solves.
    """
    n_pix = Ys.shape[1]
    sse = np.zeros((Cs.size, es.size, gs.size, n_pix))
    se = np.zeros_like(sse)
    cnt = sum(good[te].sum(axis=0) for _, te in folds).astype(float)
    unconv = np.zeros(n_pix, int)
    n_iter, n_solves, max_gap = 0, 0, 0.0
    fn, cut = _cv_solver(solver), _cv_rel_cut(Cs)
    kw = {"admm_max_iter": int(admm_iter)} if solver == "admm-smo" and admm_iter is not None else {}
    alive = alive.copy()
    steps = [(k, gi) for k in range(len(folds)) for gi in range(gs.size) if alive[:, :, gi].any()]
    pruned = prune is None
    for k, gi in _progress(steps, verbose, "SLAM screened CV", unit="kernel"):
        if not pruned and k >= prune_after:
            alive &= _pruned(sse, alive, good, folds[:k], float(prune), prior)
            pruned = True
        if not alive[:, :, gi].any():
            continue
        tr, te = folds[k]
        ci, ei, pix = np.nonzero(alive[:, :, gi])            # one target per kept (C, epsilon, pixel)
        ke = _kernel(Xs[tr], gs[gi], None, rel_cut=cut, decompose=solver != "smo")
        Kv = rbf_kernel(Xs[tr][_support_index(ke)], Xs[te], gs[gi])
        C = Cs[ci][:, None] * good[tr][:, pix].T
        sol = _solve_parallel(fn, ke, np.ascontiguousarray(Ys[tr][:, pix].T), C, es[ei], n_workers, tol=tol, **kw)
        res = (ke.expansion(sol.beta)[0] @ Kv + sol.intercept[:, None] - Ys[te][:, pix].T) * good[te][:, pix].T
        sse[ci, ei, gi, pix] += (res * res).sum(axis=1)
        se[ci, ei, gi, pix] += res.sum(axis=1)
        n_iter, n_solves = n_iter + int(sol.n_iter.sum()), n_solves + pix.size
        max_gap = max(max_gap, float(sol.gap.max(initial=0.0)))
        np.add.at(unconv, pix, ~sol.converged)
    sse[~alive] = np.nan
    se[~alive] = np.nan
    info = {"cv_mean_iterations": n_iter / max(n_solves, 1), "cv_max_kkt_gap": max_gap,
            "cv_n_unconverged": int(unconv.sum()), "cv_unconverged_per_pixel": unconv, "cv_n_solves": n_solves}
    return sse, se, cnt, info


def _pruned(sse, alive, good, done, factor, prior):
    """The ``alive`` points that stay after the folds ``done``: partial CV-MSE <= ``factor`` x the pixel's best alive."""
    part = np.where(alive, sse, np.nan)
    cnt = sum((good[te].sum(axis=0) for _, te in done), np.zeros(sse.shape[-1]))
    if prior is not None:
        part, cnt = part + prior[0], cnt + prior[1]
    return _prune_alive(part, cnt, factor)

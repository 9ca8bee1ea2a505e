"""SLAM training: standardisation, CV folds, the per-pixel grid search and the final SVR fits.

Pure functions on standardised arrays, called by :meth:`mdslam.slam.SLAM.fit`
and :meth:`mdslam.slam.SLAM.cv_predict`.  The SVR duals of many pixels are
solved together by :mod:`mdslam.svr`, over pixel blocks in threads or on a
Dask cluster (:mod:`mdslam.slam.distribute`).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.model_selection import KFold

from ..sampling import draw
from ..svr import (
    KernelEig,
    SVRBatchSolution,
    nystrom_kernel,
    rbf_kernel,
    solve_svr_exact,
    solve_svr_staged,
)
from ._util import _progress
from .distribute import BlockRunner


def _iter_folds(n: int, cv, random_state) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs: int -> shuffled KFold(seed), splitter, or explicit pairs."""
    if isinstance(cv, (int, np.integer)):
        if cv < 2 or cv > n:
            raise ValueError(f"cv={cv}: need 2 <= k <= n_train={n}")
        splitter = KFold(n_splits=int(cv), shuffle=True, random_state=random_state)
        return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros((n, 1)))]
    if hasattr(cv, "split"):
        return [(np.asarray(a), np.asarray(b)) for a, b in cv.split(np.zeros((n, 1)))]
    return [(np.asarray(a), np.asarray(b)) for a, b in cv]


def cv_rows(n: int, cv_subsample: int | None, random_state: int | None, cv=None) -> np.ndarray:
    """Training stars of the hyperparameter CV: all of them, or a seeded random subsample.

    Parameters
    ----------
    n : int
        Training stars.
    cv_subsample : None or int
        None: all ``n`` stars.  An int ``m``: ``m`` stars drawn without replacement by
        :func:`mdslam.sampling.draw` with seed ``random_state`` (all stars when ``m >= n``).
    random_state : int or None
        Seed of the draw (the model's ``random_state``).
    cv : int, splitter or iterable of (train, test), optional
        The model's folds; explicit (train, test) pairs index all ``n`` stars and cannot be
        used on a subsample.

    Returns
    -------
    (m,) int array
        Sorted row indices (``arange(n)`` without a subsample).

    Raises
    ------
    ValueError
        ``cv_subsample`` not None or a positive int, or explicit folds with a subsample.
    """
    m = cv_subsample
    if m is None:
        return np.arange(n)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"cv_subsample={m!r}: must be None (CV on all training stars) or a positive int")
    rows = draw(n, int(m), random_state)
    if rows.size < n and not (cv is None or isinstance(cv, (int, np.integer)) or hasattr(cv, "split")):
        raise ValueError("cv_subsample with explicit (train, test) folds: give cv as an int or a splitter")
    return rows


def _search_inputs(Xs, Ys, good, rows, folds, cv, random_state, kernel_rank, solver):
    """Data, folds, kernel rank and solver of the CV grid search: all stars, or the subsample ``rows``.

    On a subsample (``rows`` shorter than ``Xs``) the folds are drawn afresh on its stars
    (:func:`_iter_folds`) and the CV fits use the exact kernel and the ADMM solver (the
    subsample is meant to be small enough for it); ``kernel_rank`` and ``solver`` then
    apply to the final fits on all stars only.
    """
    if rows.size == Xs.shape[0]:
        return Xs, Ys, good, folds, kernel_rank, solver
    return Xs[rows], Ys[rows], good[rows], _iter_folds(rows.size, cv, random_state), None, "admm"


def _n_folds(cv) -> int | None:
    """Number of folds of ``cv`` (int or splitter with ``get_n_splits()``), None if unknown."""
    if isinstance(cv, (int, np.integer)):
        return int(cv)
    if hasattr(cv, "get_n_splits"):
        try:
            return int(cv.get_n_splits())
        except TypeError:
            return None
    return None


def _grid_edge_fraction(model) -> dict:
    """Fraction of usable pixels whose chosen value is the lowest or highest of its grid (NaN: < 3 values)."""
    out = {}
    use = model.pixel_usable_
    for k in ("C", "epsilon", "gamma"):
        g = np.asarray(model.param_grid_[k])
        v = getattr(model, k + "_")[use]
        out[k] = float(np.mean(np.isin(v, (g.min(), g.max())))) if g.size > 2 and v.size else float("nan")
    return out


def _solve_parallel(fn, ke, Y, C, eps, n_workers, **kw) -> SVRBatchSolution:
    """Run a batched SVR solver on pixel blocks: ``n_workers`` threads, or a :class:`BlockRunner` (Dask)."""
    runner = n_workers if isinstance(n_workers, BlockRunner) else BlockRunner(n_workers)
    return runner.solve(fn, ke, Y, C, eps, **kw)


def _solve_grid(fn, ke, Y, problems, n_workers, **kw):
    """Solutions for each (C, eps) of ``problems`` in order; on a cluster all are submitted before this returns."""
    runner = n_workers if isinstance(n_workers, BlockRunner) else BlockRunner(n_workers)
    return runner.submit_many(fn, ke, Y, problems, **kw)


def _kernel(X, gamma, kernel_rank, rel_cut=1e-12, decompose=True) -> KernelEig:
    """Exact RBF kernel of ``X`` and its eigen decomposition, or (``kernel_rank`` set) its Nystrom approximation.

    ``decompose=False``: the exact kernel alone (no eigenpairs), all that the SMO solver reads.
    """
    if kernel_rank is None and not decompose:
        return KernelEig(K=rbf_kernel(X, X, gamma), lam=np.zeros(0), U=np.zeros((X.shape[0], 0)))
    if kernel_rank is None:
        return KernelEig.from_kernel(rbf_kernel(X, X, gamma), rel_cut=rel_cut)
    return nystrom_kernel(X, gamma, int(kernel_rank), rel_cut=rel_cut)


def _cv_solver(solver):
    """The batched SVR solver of the CV and low-rank final fits: ADMM + polish, coordinate descent, primal Newton or SMO.

    ``solver`` is a name, or a callable with the solvers' signature (returned as it is).
    """
    if callable(solver):
        return solver
    if solver == "newton":
        from .primal import solve_svr_newton

        return solve_svr_newton
    if solver == "dcd":
        from .lowrank import solve_svr_dcd

        return solve_svr_dcd
    if solver == "smo":
        from .smo import solve_svr_smo

        return solve_svr_smo
    if solver == "admm-smo":
        from .smo import solve_svr_admm_smo

        return solve_svr_admm_smo
    return solve_svr_staged


def _smo_grid(ke, Ytr, Cmask, Cs, es, n_workers, tol):
    """SMO solutions of every (C, epsilon) point, in the order of ``_cv_kernel_step``'s points.

    Per epsilon the C values are solved in ascending order, each from the previous C's solution
    (alpha seeding, :func:`mdslam.slam.smo.solve_svr_smo_path`).
    """
    from .smo import solve_svr_smo_path, split_path

    order = np.argsort(Cs, kind="stable")
    by_point = {}
    for ei in range(es.size):
        path = _solve_parallel(solve_svr_smo_path, ke, Ytr, 1.0 if Cmask is None else Cmask, es[ei], n_workers,
                               tol=tol, Cs=Cs[order])
        for ci, sol in zip(order, split_path(path), strict=True):
            by_point[ci, ei] = sol
    return (by_point[ci, ei] for ci in range(Cs.size) for ei in range(es.size))


def _support_index(ke: KernelEig) -> np.ndarray:
    """Training points of the kernel expansion: all (exact kernel) or the Nystrom landmarks."""
    return np.arange(ke.U.shape[0]) if ke.landmarks is None else ke.landmarks


def _standardise(flux, labels, good):
    """Labels and per-pixel fluxes to mean 0, variance 1 (good pixels only; ddof=0)."""
    lm = labels.mean(axis=0)
    ls = labels.std(axis=0)
    ls = np.where(ls > 0, ls, 1.0)
    Xs = (labels - lm) / ls
    cnt = good.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fm = np.where(cnt > 0, (flux * good).sum(axis=0) / np.maximum(cnt, 1), 0.0)
        fv = np.where(cnt > 0, (((flux - fm) * good) ** 2).sum(axis=0) / np.maximum(cnt, 1), 1.0)
    fs = np.sqrt(fv)
    fs = np.where(fs > 1e-300, fs, 1.0)
    Ys = np.where(good, (flux - fm) / fs, 0.0)
    return Xs, Ys, (lm, ls, fm, fs)


def _prune_alive(sse, cnt_part, factor, alive=None):
    """Grid points still solved per pixel: partial CV-MSE <= ``factor`` x the pixel's best partial CV-MSE.

    Parameters
    ----------
    sse : (n_C, n_epsilon, n_gamma, n_pix) array
        Squared-error sums over the folds done so far.
    cnt_part : (n_pix,) array
        Test points in those folds.
    factor : float
        Pruning factor (> 1).
    alive : (n_C, n_epsilon, n_gamma, n_pix) bool array, optional
        Points still solved before this step (an earlier step of a schedule): the others stay
        dropped and do not count for the best (their sums stopped at an earlier fold).

    Returns
    -------
    (n_C, n_epsilon, n_gamma, n_pix) bool array; every point of a pixel without test points stays.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = sse / cnt_part
    if alive is not None:
        mse = np.where(alive, mse, np.nan)
    best = np.min(np.where(np.isfinite(mse), mse, np.inf), axis=(0, 1, 2))
    keep = mse <= factor * best
    keep |= ~np.isfinite(best) | (cnt_part <= 0)
    return keep if alive is None else keep & alive


def prune_schedule(prune, n_folds: int, prune_after: int = 2) -> dict[int, float]:
    """The pruning steps of ``SLAM(cv_prune=...)`` as ``{k: f}``: before fold ``k`` (after ``k`` folds), factor ``f``.

    ``prune``: None (no step); a factor ``f``: one step after ``prune_after`` folds; a
    sequence ``(f_1, f_2, ...)``: factor ``f_k`` after ``k`` folds (``inf`` skips that step;
    entries past the last fold are unused).  Steps after the last fold are dropped.
    """
    if prune is None:
        return {}
    if np.ndim(prune) == 0:
        steps = {int(prune_after): float(prune)}
    else:
        steps = {k + 1: float(f) for k, f in enumerate(prune)}
    return {k: f for k, f in steps.items() if 1 <= k < n_folds and np.isfinite(f)}


def check_prune(prune):
    """``SLAM(cv_prune=...)`` checked: None, a finite factor > 1, or a non-empty sequence of factors > 1 (``inf`` allowed).

    Returns the factor as a float or the sequence as a tuple of floats; raises a one-line
    ``ValueError`` naming the value otherwise.
    """
    def factor(f, allow_inf: bool) -> bool:                   # NaN fails ``f > 1``
        return (isinstance(f, numbers.Real) and not isinstance(f, bool) and f > 1
                and (allow_inf or bool(np.isfinite(f))))

    if prune is None:
        return None
    if np.ndim(prune) == 0 and factor(prune, allow_inf=False):
        return float(prune)
    if np.ndim(prune) == 1 and not isinstance(prune, (str, bytes)) and len(prune) \
            and all(factor(f, allow_inf=True) for f in prune):
        return tuple(float(f) for f in prune)
    raise ValueError(f"cv_prune={prune!r}: must be None (every grid point in every fold), a factor > 1, "
                     "or a sequence of factors > 1 (one per fold done; inf skips a step)")


def replay_prune(sse_per_fold, prune, cnt_per_fold=None, prune_after: int = 2) -> tuple[np.ndarray, float]:
    """The points a pruned grid search keeps, replayed on the per-fold sums of the exact search.

    A pruned search solves the same problems as the exact one for the points it keeps, so the
    exact search's squared-error sums per fold tell which points each step of
    :func:`prune_schedule` drops (:func:`_prune_alive`), without solving anything again.

    Parameters
    ----------
    sse_per_fold : (n_fold, n_C, n_epsilon, n_gamma, n_pix) array
    prune : as ``SLAM(cv_prune=...)``
    cnt_per_fold : (n_fold, n_pix) array, optional
        Test points per fold; None: equal counts (they cancel within a pixel).
    prune_after : int
        Folds before the single step of a factor.

    Returns
    -------
    alive : (n_C, n_epsilon, n_gamma, n_pix) bool array, the points solved in every fold;
    solved : float, the fraction of the exact search's (fold, point, pixel) solves made.
    """
    sse = np.asarray(sse_per_fold, float)
    n_fold = sse.shape[0]
    cnt = np.ones((n_fold, sse.shape[-1])) if cnt_per_fold is None else np.asarray(cnt_per_fold, float)
    steps = prune_schedule(prune, n_fold, prune_after)
    alive, solved = np.ones(sse.shape[1:], bool), 0
    for k in range(n_fold):
        if k in steps:
            alive = _prune_alive(sse[:k].sum(axis=0), cnt[:k].sum(axis=0), steps[k], alive)
        solved += int(alive.sum())
    return alive, solved / sse.size


def harmonic_prune(n_folds: int, c: float = 0.2) -> tuple[float, ...]:
    """The pruning schedule ``f_k = 1 + c / k`` after ``k = 1 .. n_folds - 1`` folds, for ``SLAM(cv_prune=...)``.

    A point is dropped once its CV-MSE over the folds done is more than ``c / k`` above the
    pixel's best: loose after one fold, where a fold's MSE is noisy, and tighter as the
    folds add up.  How far this can go depends on the problem: on the reference problem of
    ``benchmarks/`` (800 stars, 8 grid points, 5 folds; three synthetic sets) ``c = 0.2`` kept
    the exact search's choice on every pixel and skipped 36 % of the CV solves, while on the
    realistic grid (1,000 stars, 120 points, 10 folds of 100 stars) it kept it on 65 % of 48
    pixels only, and ``c = 1`` on 98 % (``benchmarks/README.md``, "Pruning schedule").  Replay
    a schedule on an exact search of your own problem before relying on it
    (``benchmarks/realistic_grid.py --simulate-prune``).
    """
    if not c > 0:
        raise ValueError(f"c={c!r}: must be > 0")
    return tuple(1.0 + c / k for k in range(1, int(n_folds)))


def _cv_rel_cut(Cs: np.ndarray) -> float:
    """Relative eigenvalue cut of the CV kernels' ADMM linear step for the grid's ``C`` values ``Cs``.

    Leaving out eigenvalues below ``cut * max`` moves a fitted function by up to ``cut * max * |beta|``,
    and ``|beta|`` grows with ``C``: ``1e-6 / max(C)``, kept within [1e-8, 1e-7].  On the reference
    problem (C <= 10) 1e-7 keeps 193 instead of 242 of 640 eigenvectors at gamma 0.3 with the same
    iterations (81.5 vs 81.9 mean on one fold); 1e-6 (147) stalls ADMM (~1000 iterations).
    """
    return float(np.clip(1e-6 / max(float(np.max(Cs)), 1e-30), 1e-8, 1e-7))


def _cv_kernel_step(ke, Kv, Ytr, Yte, gte, Cmask, Cs, es, gi, alive, sums, n_workers, tol, solver="admm"):
    """Solve every (C, epsilon) of one (gamma, fold) kernel; the returned function adds its test residuals to ``sums``.

    ``alive`` (n_C, n_epsilon, n_gamma, n_pix) bool or None selects the pixels solved per
    point (None: all).  ``sums`` = [sse, se, n_iter, n_solves, max_gap, n_unconv (n_pix,)],
    updated in place when the returned function is called.  On a Dask cluster the problems
    are submitted before this returns (:meth:`BlockRunner.submit_many`), so the caller can
    build the next kernel while they are solved.
    """
    points = [(ci, ei) for ci in range(Cs.size) for ei in range(es.size)]
    if alive is None:
        pix_of = {pt: slice(None) for pt in points}
    else:
        pix_of = {(ci, ei): np.flatnonzero(alive[ci, ei, gi]) for ci, ei in points}
        points = [pt for pt in points if pix_of[pt].size]
    if alive is None and solver == "smo":
        sols = _smo_grid(ke, Ytr, Cmask, Cs, es, n_workers, tol)
    elif alive is None:
        problems = ((Cs[ci] if Cmask is None else Cs[ci] * Cmask, es[ei]) for ci, ei in points)
        sols = _solve_grid(_cv_solver(solver), ke, Ytr, problems, n_workers, tol=tol)
    else:
        sols = (_solve_parallel(_cv_solver(solver), ke, Ytr[pix_of[ci, ei]],
                                Cs[ci] if Cmask is None else Cs[ci] * Cmask[pix_of[ci, ei]], es[ei],
                                n_workers, tol=tol) for ci, ei in points)
    return lambda: _cv_kernel_sums(ke, Kv, Yte, gte, gi, points, pix_of, sols, sums)


def _cv_kernel_sums(ke, Kv, Yte, gte, gi, points, pix_of, sols, sums):
    """Add the test residuals of one kernel's solutions ``sols`` (in the order of ``points``) to ``sums``."""
    sse, se = sums[0], sums[1]
    for (ci, ei), sol in zip(points, sols, strict=True):
        pix = pix_of[ci, ei]
        res = (ke.expansion(sol.beta)[0] @ Kv + sol.intercept[:, None] - Yte[pix]) * gte[pix]
        sse[ci, ei, gi, pix] += (res * res).sum(axis=1)
        se[ci, ei, gi, pix] += res.sum(axis=1)
        sums[2] += int(sol.n_iter.sum())
        sums[3] += sol.beta.shape[0]
        sums[4] = max(sums[4], float(sol.gap.max(initial=0.0)))
        sums[5][pix] += ~sol.converged


def _grid_search_cv(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers=1, kernel_rank=None,
                    prune=None, prune_after=2, solver="admm"):
    """Accumulate per-pixel CV sums over the grid: sse, se (nC, neps, ng, n_pix), count (n_pix,), info.

    ``kernel_rank``: None solves with the exact kernel; an int, with its Nystrom approximation
    of at most that many landmarks (:func:`mdslam.svr.nystrom_kernel`).  ``prune``: None solves
    every grid point in every fold (the exact grid search); a factor ``f > 1``: after the first
    ``prune_after`` folds, a pixel's grid points whose partial CV-MSE exceeds ``f`` times the
    pixel's best are not solved in the other folds, and their ``sse`` is NaN; a sequence of
    factors prunes after each fold in turn (:func:`prune_schedule`), each step against the best of
    the points still solved.
    ``info["cv_unconverged_per_pixel"]`` (n_pix,) counts each pixel's CV solves above ``tol``.
    ``solver``: "admm" (:func:`mdslam.svr.solve_svr_staged`), with ``kernel_rank`` "dcd"
    (:func:`mdslam.slam.lowrank.solve_svr_dcd`) or "newton" (:func:`mdslam.slam.primal.solve_svr_newton`), or with the exact kernel "smo"
    (:mod:`mdslam.slam.smo`, C ladders seeded) or "admm-smo" (ADMM to 3,000 iterations, then
    SMO from its solution); ``cv_mean_iterations`` counts ADMM iterations, coordinate-descent
    passes or SMO steps (both for "admm-smo").
    """
    n, n_pix = Ys.shape
    sse = np.zeros((Cs.size, es.size, gs.size, n_pix))
    se = np.zeros_like(sse)
    cnt = np.zeros(n_pix)
    for _, te in folds:
        cnt += good[te].sum(axis=0)
    sums = [sse, se, 0, 0, 0.0, np.zeros(n_pix, int)]
    schedule = prune_schedule(prune, len(folds), prune_after)
    alive, cnt_part = None, np.zeros(n_pix)
    steps = [(k, gi) for k in range(len(folds)) for gi in range(gs.size)]
    bar = _progress(steps, verbose, "SLAM CV grid", unit="kernel",
                    postfix=f"{n_pix} px x {Cs.size * es.size} (C, eps)")
    # on a cluster the sums of a kernel are added after the next kernel's problems are submitted
    ahead = isinstance(n_workers, BlockRunner) and n_workers.client is not None
    pending = []
    cut = _cv_rel_cut(Cs) if kernel_rank is None else 1e-8
    for k, gi in bar:
        tr, te = folds[k]
        if k in schedule and gi == 0:
            while pending:
                pending.pop()()
            alive = _prune_alive(sse, cnt_part, schedule[k], alive)
        if gi == 0:
            cnt_part += good[te].sum(axis=0)
        if alive is not None and not alive[:, :, gi].any():
            continue
        # small eigenvalues of an exact kernel are left out of the ADMM linear step only
        # (:func:`_cv_rel_cut`); the KKT gap and the polish always use the full kernel, so the
        # stopping rule is exact
        ke = _kernel(Xs[tr], gs[gi], kernel_rank, rel_cut=cut, decompose=solver != "smo")
        Kv = rbf_kernel(Xs[tr][_support_index(ke)], Xs[te], gs[gi])
        gtr = good[tr].T
        add = _cv_kernel_step(ke, Kv, np.ascontiguousarray(Ys[tr].T), Ys[te].T, good[te].T,
                              None if gtr.all() else gtr.astype(float), Cs, es, gi, alive, sums, n_workers, tol,
                              solver)
        while pending:
            pending.pop()()
        if ahead:
            pending.append(add)
        else:
            add()
    while pending:
        pending.pop()()
    info = {"cv_mean_iterations": sums[2] / max(sums[3], 1), "cv_max_kkt_gap": sums[4],
            "cv_n_unconverged": int(sums[5].sum()), "cv_unconverged_per_pixel": sums[5]}
    if alive is not None:
        sse[~alive] = np.nan
        se[~alive] = np.nan
        info["cv_pruned_fraction"] = 1.0 - sums[3] / (n_pix * Cs.size * es.size * gs.size * len(folds))
    return sse, se, cnt, info


def _refit_all(Xs, Ys, good, C_pix, eps_pix, gamma_pix, usable, tol, refit_tol, verbose, n_workers=1,
               kernel_rank=None, solver="admm"):
    """Final SVR of every pixel on all training stars, exact optimum where reachable.

    With ``kernel_rank`` set the fits use the Nystrom kernel, are solved to ``tol`` (ADMM and
    polish, as the CV fits), and the returned coefficients are those of the exact-kernel
    expansion over the landmarks (zero elsewhere); ``solver`` as for :func:`_grid_search_cv`.
    The gamma groups go to :meth:`BlockRunner.solve_groups`, largest gamma first (its pixels
    took the most solver time), so with several workers every group's pixel blocks share one
    pool and the next kernel is built while the earlier blocks run; each block is the one a
    group-by-group fit solves, so the duals are bit-identical to it.
    """
    n, n_pix = Ys.shape
    dual = np.zeros((n_pix, n))
    b = np.zeros(n_pix)
    info = {"refit_max_kkt_gap": 0.0, "refit_n_above_tol": 0}
    runner = n_workers if isinstance(n_workers, BlockRunner) else BlockRunner(n_workers)
    fn, kw = ((solve_svr_exact, {"tol": tol, "final_tol": refit_tol}) if kernel_rank is None
              else (_cv_solver(solver), {"tol": tol}))
    groups = [np.flatnonzero((gamma_pix == g) & usable) for g in np.unique(gamma_pix[usable])[::-1]]
    kes = []

    def problems():
        for g, pix in zip(_progress(np.unique(gamma_pix[usable])[::-1], verbose, "SLAM refit", unit="gamma"),
                          groups, strict=True):
            ke = _kernel(Xs, g, kernel_rank)
            kes.append(ke if ke.landmarks is not None else None)    # an exact kernel is not kept past its fit
            yield ke, np.ascontiguousarray(Ys[:, pix].T), C_pix[pix, None] * good[:, pix].T, eps_pix[pix]

    sols = runner.solve_groups(fn, problems(), **kw)
    for pix, ke, sol in zip(groups, kes, sols, strict=True):
        _store_refit(pix, ke, (sol,), dual, b, info, refit_tol if kernel_rank is None else tol)
    # unusable pixels: model = training mean (dual 0, b 0 in scaled units)
    return dual, b, info


def _store_refit(pix, ke, sols, dual, b, info, tol):
    """Put one gamma group's final fit (the single solution of ``sols``) into ``dual``, ``b`` and ``info``.

    ``ke`` None: an exact kernel (the duals are the coefficients as they are).
    """
    (sol,) = sols
    if ke is None or ke.landmarks is None:
        dual[pix] = sol.beta
    else:
        dual[np.ix_(pix, ke.landmarks)] = ke.expansion(sol.beta)[0]
    b[pix] = sol.intercept
    info["refit_max_kkt_gap"] = max(info["refit_max_kkt_gap"], float(sol.gap.max(initial=0.0)))
    info["refit_n_above_tol"] += int((sol.gap > tol).sum())

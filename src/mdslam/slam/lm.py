"""Batched Levenberg-Marquardt for weighted least squares, many independent problems at once.

Each row ``i`` minimises ``chi2_i(theta) = sum_j w_ij (y_ij - f_j(theta_i))^2``
(Li 2021 eq. 3 with ``w = 1/sigma^2``).  All rows take their step together,
one batched ``(L, L)`` solve per iteration; a row leaves the batch when its
step or its relative chi2 decrease is small, or (with ``sigma_tol``) when its
Gauss-Newton step is a small fraction of the parameters' formal uncertainty.  The model is any function that
returns the model values and their Jacobian for a batch of parameter vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

#: ``model(theta (k, L)) -> (f (k, n), J (k, n, L))``.
ModelFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: ``whiten(rows, X (k, n) or (k, n, L)) -> W_rows X``: a linear map per problem
#: (:class:`mdslam.slam.noise.Whitener`) applied to residuals and Jacobians.
Whiten = Callable[[object, np.ndarray], np.ndarray]
#: ``curvature(theta (k, L), u (k, n)) -> sum_j u_j d^2 f_j / d theta^2 (k, L, L)``.
Curvature = Callable[[np.ndarray, np.ndarray], np.ndarray]


class LMResult(NamedTuple):
    """Output of :func:`levenberg_marquardt` (``m`` problems, ``L`` parameters)."""

    theta: np.ndarray        #: (m, L) best parameters
    cov: np.ndarray          #: (m, L, L) ``(J^T W J)^-1`` at ``theta`` (NaN if singular)
    chi2: np.ndarray         #: (m,) weighted sum of squared residuals at ``theta``
    n_iter: np.ndarray       #: (m,) iterations taken
    converged: np.ndarray    #: (m,) bool, stopped by ``xtol``/``ftol`` (or damping cap), not by ``max_iter``
    failed: np.ndarray       #: (m,) bool, non-finite parameters or chi2


def grid_start(y: np.ndarray, w: np.ndarray, grid: np.ndarray, grid_model: np.ndarray,
               whiten: Whiten | None = None) -> np.ndarray:
    """Best starting point of each problem among precomputed model evaluations.

    Parameters
    ----------
    y, w : (m, n) arrays
        Data (0 where masked) and weights.
    grid : (g, L) array
        Parameter vectors.
    grid_model : (g, n) array
        Model values at ``grid``.
    whiten : Whitener, optional
        Correlated residuals (:class:`mdslam.slam.noise.Whitener`): its
        ``grid_chi2``, ``r^T Sigma^-1 r``, replaces the weighted sum.

    Returns
    -------
    (m, L) array, the grid point of lowest chi2 per row (by three matrix products).
    """
    return grid[grid_index(y, w, grid_model, whiten)]


def grid_index(y: np.ndarray, w: np.ndarray, grid_model: np.ndarray, whiten: Whiten | None = None) -> np.ndarray:
    """Row of ``grid_model`` (g, n) of lowest chi2 for each problem, (m,) int: :func:`grid_start`'s choice."""
    if whiten is not None:
        return np.argmin(whiten.grid_chi2(y, grid_model), axis=1)
    chi2_grid = ((w * y**2).sum(axis=1)[:, None] - 2.0 * (w * y) @ grid_model.T + w @ (grid_model**2).T)
    return np.argmin(chi2_grid, axis=1)


def levenberg_marquardt(model: ModelFn, y: np.ndarray, w: np.ndarray, theta0: np.ndarray, *,
                        max_iter: int = 100, xtol: float = 1e-7, ftol: float = 1e-10,
                        split: tuple[Callable, Callable] | None = None, sigma_tol: float | None = None,
                        whiten: Whiten | None = None, damping: str = "fixed",
                        curvature: Curvature | None = None, f0: np.ndarray | None = None) -> LMResult:
    """Minimise ``sum_j w_ij (y_ij - f_j(theta_i))^2`` for every row ``i`` together.

    With ``whiten``, residuals ``W_i (y_i - f)``, Jacobians ``W_i J``: ``r^T Sigma_i^-1 r`` for ``W^T W = Sigma^-1``, ``w = 1``.

    Parameters
    ----------
    model : callable
        ``model(theta)`` with ``theta`` (k, L) returns ``f`` (k, n) and ``J = df/dtheta`` (k, n, L).
    y, w : (m, n) arrays
        Data (0 where masked) and weights (0 = masked).
    theta0 : (m, L) array
        Starting parameters.
    max_iter : int or (m,) int array
        Iteration cap (an array: one per problem).
    xtol, ftol : float
        Stop when the largest step component is below ``xtol``, or an accepted step lowers chi2 by less than ``ftol * chi2``.
    split : (values, jacobian), optional
        ``values(theta) -> f`` and ``jacobian(theta) -> J``: trial points get ``values`` only, the Jacobian
        is computed for accepted steps, rows of the ``theta`` of the ``values`` call just before (a
        rejected step then costs one model evaluation instead of both).
    sigma_tol : float, optional
        Also stop (converged) when the Gauss-Newton step ``s = A^-1 g`` (``A = J^T W J``, ``g = J^T W r``)
        is below ``sigma_tol`` formal errors, ``s^T A s = g^T A^-1 g < sigma_tol^2`` (no parameter then moves
        by more than ``sigma_tol`` of its standard error); tested before the step.  None: ``xtol``/``ftol`` only.
    whiten : callable, optional
        ``whiten(rows, X)``: ``W`` of the problems ``rows`` applied to (k, n) or (k, n, L) arrays.
    damping : {"fixed", "nielsen"}
        Update of the damping ``mu`` (:func:`_next_damping`): "fixed" x0.3 / x10 after an accepted / rejected
        step; "nielsen" from the actual over the predicted chi2 decrease (Madsen, Nielsen & Tingleff 2004).
    curvature : callable, optional
        ``curvature(theta, u = w r) -> R`` (:data:`Curvature`): Newton steps where the Hessian of chi2 is
        positive definite (:func:`newton_matrix`); ``sigma_tol`` then measures ``H^-1 g``.  Not with ``whiten``.
    f0 : (m, n) array, optional
        The model at ``theta0`` if known (a grid of starting points, :func:`grid_index`): with ``split`` no ``values`` call there.

    Returns
    -------
    LMResult
    """
    m, theta = theta0.shape[0], np.array(theta0, float, copy=True)
    wh = whiten if whiten is not None else (lambda rows, X: X)
    start_fn = model if f0 is None or split is None else (lambda th: (np.asarray(f0, float), split[1](th)))
    chi2, A_all, g_all, R_all = _start(start_fn, y, w, theta, wh, curvature)
    mu, nu = np.full(m, 1e-3), np.full(m, 2.0)
    n_iter, converged = np.zeros(m, int), np.zeros(m, bool)
    active = np.arange(m)
    caps = None if np.ndim(max_iter) == 0 else np.broadcast_to(max_iter, (m,))   # one cap: the loop's own bound
    for _ in range(int(np.max(max_iter, initial=0))):
        active = active if caps is None else active[n_iter[active] < caps[active]]
        if active.size == 0:
            break
        A, g = A_all[active], g_all[active]
        dA = np.diagonal(A, axis1=1, axis2=2)
        M = A if R_all is None else newton_matrix(A, R_all[active], g)
        if sigma_tol is not None and (near := _decrement(M, A, g, dA, R_all is not None) < sigma_tol**2).any():
            converged[active[near]] = True
            active, A, g, dA, M = active[~near], A[~near], g[~near], dA[~near], M[~near]
            if active.size == 0:
                break
        step = _damped_step(M, g, dA, mu[active])
        th_new, r_new, J_new, chi2_new = _trial(theta[active] + step, active, model, split, wh, y, w)
        n_iter[active] += 1
        decrease = chi2[active] - chi2_new
        acc = np.isfinite(chi2_new) & (decrease >= 0)                 # = chi2_new <= chi2 where finite
        small_step = np.max(np.abs(step), axis=1) < xtol
        small_df = acc & (decrease <= ftol * np.maximum(chi2[active], 1e-300))
        if acc.any():
            _accept(active, acc, (th_new, chi2_new, r_new, J_new), w, (theta, chi2, A_all, g_all, R_all),
                    split, wh, curvature)
        mu[active], nu[active] = _next_damping(damping, mu[active], nu[active], acc, decrease, step, g, dA)
        done = small_step | small_df | (mu[active] > 1e12)
        converged[active[done]] = True
        active = active[~done]
    failed = ~np.all(np.isfinite(theta), axis=1) | ~np.isfinite(chi2)
    return LMResult(theta, _inverse(A_all), chi2, n_iter, converged & ~failed, failed)


def _start(model: ModelFn, y: np.ndarray, w: np.ndarray, theta: np.ndarray, wh: Callable,
           curvature: Curvature | None = None) -> tuple:
    """chi2 (m,), ``J^T W J`` (m, L, L), ``J^T W r`` (m, L) and the curvature (m, L, L) or None at ``theta``."""
    f, J = model(theta)
    r, J = wh(slice(None), y - f), wh(slice(None), J)
    A, g = _normal_equations(J, w, r)
    return (w * r * r).sum(axis=1), A, g, None if curvature is None else curvature(theta, w * r)


def _trial(th: np.ndarray, rows: np.ndarray, model: ModelFn, split: tuple | None, wh: Callable,
           y: np.ndarray, w: np.ndarray) -> tuple:
    """The model at trial points ``th`` of the problems ``rows``: (th, residuals, J or None with ``split``, chi2)."""
    f, J = model(th) if split is None else (split[0](th), None)
    r, J = wh(rows, y[rows] - f), (None if J is None else wh(rows, J))
    return th, r, J, (w[rows] * r * r).sum(axis=1)


def _accept(active: np.ndarray, acc: np.ndarray, trial: tuple, w: np.ndarray, state: tuple,
            split: tuple | None, wh: Callable, curvature: Curvature | None) -> None:
    """Move the problems ``active[acc]`` to their trial points (:func:`_trial`'s output): ``state``
    (theta, chi2, ``J^T W J``, ``J^T W r``, curvature) updated in place."""
    th, c2, r, J = trial
    theta, chi2, A_all, g_all, R_all = state
    sel = slice(None) if acc.all() else acc              # all accepted (the usual case): no row copies
    ia = active[sel]
    theta[ia], chi2[ia] = th[sel], c2[sel]
    _refresh(ia, th[sel], w[ia], r[sel], None if J is None else J[sel], (A_all, g_all, R_all), split, wh, curvature)


def _refresh(ia: np.ndarray, th: np.ndarray, w: np.ndarray, r: np.ndarray, J: np.ndarray | None, state: tuple,
             split: tuple | None, wh: Callable, curvature: Curvature | None) -> None:
    """``J^T W J``, ``J^T W r`` and the curvature (``state``, in place) of the accepted rows ``ia`` at ``th``.

    Without ``J`` (``split``) the Jacobian is computed here, and then the curvature, both reusing the
    kernel rows of the ``values`` call that tried ``th``.
    """
    A_all, g_all, R_all = state
    J = J if J is not None else wh(ia, split[1](th))
    A_all[ia], g_all[ia] = _normal_equations(J, w, r)
    if R_all is not None:
        R_all[ia] = curvature(th, w * r)


def _damping_diagonal(dA: np.ndarray) -> np.ndarray:
    """``D`` of the damped normal equations ``(A + mu D) s = g``: ``diag(A)`` kept positive, (k, L)."""
    return dA + 1e-12 * dA.sum(axis=1, keepdims=True) + 1e-300


def _next_damping(rule: str, mu: np.ndarray, nu: np.ndarray, acc: np.ndarray, decrease: np.ndarray,
                  step: np.ndarray, g: np.ndarray, dA: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Damping ``mu`` (k,) and its growth factor ``nu`` (k,) for the next LM iteration.

    ``"fixed"``: ``mu * 0.3`` after an accepted step, ``mu * 10`` after a rejected one.
    ``"nielsen"``: after an accepted step ``mu * max(1/3, 1 - (2 rho - 1)^3)`` with ``rho`` the
    actual chi2 ``decrease`` over the decrease ``s^T (g + mu D s)`` the linearised model
    predicts, and ``nu = 2``; after a rejected one ``mu * nu`` and ``nu * 2``.  Either way ``mu``
    stays >= 1e-12 after an accepted step.

    Raises
    ------
    ValueError
        An unknown ``rule``.
    """
    if rule == "fixed":
        return np.where(acc, np.maximum(mu * 0.3, 1e-12), mu * 10.0), nu
    if rule != "nielsen":
        raise ValueError(f"damping={rule!r}: must be 'fixed' or 'nielsen'")
    predicted = np.einsum("ij,ij->i", step, g + mu[:, None] * _damping_diagonal(dA) * step)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(decrease / np.maximum(predicted, 1e-300), 0.0, 1.0)
    shrink = np.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
    return (np.where(acc, np.maximum(mu * shrink, 1e-12), mu * nu), np.where(acc, 2.0, nu * 2.0))


def _damped_step(A: np.ndarray, g: np.ndarray, dA: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """LM steps ``(A + mu D)^-1 g`` (k, L), D the diagonal ``dA`` of ``A = J^T W J``, ``g = J^T W r``."""
    return np.linalg.solve(_plus_diagonal(A, mu[:, None] * _damping_diagonal(dA)), g[..., None])[..., 0]


def _plus_diagonal(A: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``A + diag(d)`` of each (L, L) matrix, A (k, L, L) and d (k, L) or (k, 1): a new array."""
    out = A.copy()
    np.einsum("kii->ki", out)[...] += d                  # a writable view of the diagonals
    return out


def _normal_equations(J: np.ndarray, w: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A = J^T W J`` (m, L, L) and ``g = J^T W r`` (m, L) of each row."""
    JW = (J * w[:, :, None]).transpose(0, 2, 1)
    return np.matmul(JW, J), np.matmul(JW, r[:, :, None])[..., 0]


#: Newton steps (``curvature``) only where the Gauss-Newton step is below this many formal
#: errors, ``g^T A^-1 g < NEWTON_RADIUS^2``: farther out the path stays Gauss-Newton's, which
#: decides the basin of chi2 it ends in; the Hessian then removes the slow linear tail.
NEWTON_RADIUS = 1.0


def newton_matrix(A: np.ndarray, R: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The matrix of LM's steps: ``H = A - R`` (the Hessian of chi2 / 2) where LM is near a minimum, else ``A``.

    Parameters
    ----------
    A : (k, L, L) array
        ``J^T W J``.
    R : (k, L, L) array
        ``sum_j w_j r_j d^2 f_j / d theta^2`` (the residual curvature).
    g : (k, L) array
        ``J^T W r``.

    Returns
    -------
    (k, L, L) array: ``H`` where the Gauss-Newton step is within :data:`NEWTON_RADIUS` formal
    errors and ``H`` is positive definite (its smallest eigenvalue above 1e-3 of ``A``'s
    largest diagonal element), else ``A``.
    """
    H = A - R
    near = _gn_decrement(A, g, np.diagonal(A, axis1=1, axis2=2)) < NEWTON_RADIUS**2
    ok = near & np.all(np.isfinite(H), axis=(1, 2))
    lam = np.full(A.shape[0], -np.inf)
    lam[ok] = np.linalg.eigvalsh(H[ok])[:, 0]
    pd = lam > 1e-3 * np.max(np.diagonal(A, axis1=1, axis2=2), axis=1)
    return np.where(pd[:, None, None], H, A)


def _decrement(M: np.ndarray, A: np.ndarray, g: np.ndarray, dA: np.ndarray, newton: bool) -> np.ndarray:
    """The step ``s = M^-1 g`` in formal errors squared, ``s^T A s`` (m,); ``g^T A^-1 g`` when ``M`` is ``A``."""
    if not newton:
        return _gn_decrement(A, g, dA)
    out = np.full(A.shape[0], np.inf)
    s, ok = _regularised_solve(M, g, dA)
    if s is not None:
        out[ok] = np.einsum("ilk,ilj,ijk->i", s, _rows(A, ok), s)
    return out


def _gn_decrement(A: np.ndarray, g: np.ndarray, dA: np.ndarray) -> np.ndarray:
    """``g^T A^-1 g`` per row (m,), the Gauss-Newton chi2 decrease; inf where ``A`` is singular."""
    out = np.full(A.shape[0], np.inf)
    s, ok = _regularised_solve(A, g, dA)
    if s is not None:
        out[ok] = np.einsum("ij,ij->i", s[..., 0], _rows(g, ok))
    return out


def _regularised_solve(M: np.ndarray, g: np.ndarray, dA: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``(M + eps I)^-1 g`` (``eps = 1e-12 trace(A) + 1e-300``, ``dA`` the diagonal of ``A``) on the rows where
    both are finite: (solutions (n_ok, L, 1), or None where a matrix is singular; the rows ``ok`` (m,) bool)."""
    reg = _plus_diagonal(M, (1e-12 * dA.sum(axis=1) + 1e-300)[:, None])
    ok = np.isfinite(reg).all(axis=(1, 2)) & np.isfinite(g).all(axis=1)
    try:
        return np.linalg.solve(_rows(reg, ok), _rows(g, ok)[..., None]), ok
    except np.linalg.LinAlgError:
        return None, ok


def _rows(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``x[ok]``, or ``x`` itself (no copy) when every row is ``ok``, the usual case."""
    return x if ok.all() else x[ok]


def covariance(J: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(J^T W J)^-1`` per problem: the covariance of least-squares parameters.

    Parameters
    ----------
    J : (m, n, L) array
        Model derivatives at the solution.
    w : (m, n) array
        Weights (inverse variances).

    Returns
    -------
    (m, L, L) array; NaN where ``J^T W J`` is singular or not finite.
    """
    return _inverse(np.matmul((J * w[:, :, None]).transpose(0, 2, 1), J))


def _inverse(A: np.ndarray) -> np.ndarray:
    """Inverse of each ``(L, L)`` matrix of ``A`` (m, L, L); NaN where singular or not finite."""
    m, L = A.shape[0], A.shape[1]
    cov = np.full((m, L, L), np.nan)
    okA = np.all(np.isfinite(A), axis=(1, 2))
    try:                                   # all at once (LAPACK per matrix, as below) unless one is singular
        cov[okA] = np.linalg.inv(A[okA])
        return cov
    except np.linalg.LinAlgError:
        pass
    for i in np.flatnonzero(okA):
        try:
            cov[i] = np.linalg.inv(A[i])
        except np.linalg.LinAlgError:
            pass
    return cov

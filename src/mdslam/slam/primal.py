"""Newton's method in the primal of epsilon-SVRs on a low-rank (Nystrom) kernel: the final fits at large n.

With a Nystrom kernel ``K~ = Phi Phi^T`` (:func:`mdslam.slam.lowrank.features`, ``Phi``
of shape ``(n, r)``) the SVR of one pixel is a linear SVR on ``r`` features::

    min_{w, b}  1/2 |w|^2 + sum_i C_i max(0, |y_i - phi_i . w - b| - epsilon),

the primal of the dual that :func:`mdslam.svr.solve_svr_batch` solves on that kernel
(``w = Phi^T beta``).  Here its loss is smoothed on a band of width ``delta`` beyond the
tube edge (quadratic for ``epsilon < |res| < epsilon + delta``, linear beyond), which is
the same as adding ``sum_i delta / (2 C_i) beta_i^2`` to the dual.  The smoothed objective
is piecewise quadratic in the ``r + 1`` unknowns; Newton's method with an exact line search
reaches its minimum in a finite number of steps (Keerthi & DeCoste 2005's finite Newton
method, here for the L1 loss), which on SLAM's pixels does not grow with ``n`` (50-70 on
all stars at n = 400-15,000, C = 10; ADMM needs 100-1,500 iterations): a step costs two products of the ``(P, r)`` parameters
with ``Phi`` over all pixels of the block (``O(n r)`` per pixel, as one ADMM iteration)
and, per pixel, an ``(r + 1)``-square Hessian ``I + Phi_B^T (C / delta) Phi_B`` over the
stars ``B`` in the band, which shrinks to the free support vectors (at most ``r + 1``) as
``delta`` does, but not with ``n`` (hundreds of stars at 15,000), and the line search, ~10
evaluations of the loss's derivative along the step over the ``n`` stars (one compiled loop
per pixel with numba, the ``scale`` extra; NumPy without it).  ``delta`` is lowered
stage by stage (continuation; a narrow band from a cold start takes many more steps) and
the first stages run on a random subsample of the stars with ``C`` scaled by ``n / m``
(the same objective per star); the stages before the last stop at a looser objective stall
(``stage_rtol``, they only hand a start to the next).  What that costs against ADMM is in
``benchmarks/README.md`` ("Training at 15,000 stars").

The dual point ``beta_i = C_i sign(res_i) min(1, (|res_i| - epsilon)_+ / delta)`` is
always inside the box, its ``sum`` is the ``b``-gradient, and every star in the band sits
within ``delta`` of the tube edge, so libsvm's maximal-violating-pair gap is at most about
``2 delta``: the last stage uses ``delta = 0.4 tol`` (one more at ``0.1 tol`` for a pixel still
above ``tol``) and a pixel is accepted when libsvm's
gap and ``|sum beta|`` recomputed in float64 from ``beta`` on every star
(:func:`mdslam.svr.kkt_gap` with ``h = y - K~ beta``) are <= ``tol``, as the other
solvers.  A last active-set step (the reduced KKT system of the stars strictly inside the
box, as :func:`mdslam.svr.polish_svr_batch`) then lands on the exact optimum of the
low-rank problem where the sets are right; it is kept only where it lowers the gap.  A
pixel still above ``tol`` is solved again by ADMM + polish (:func:`mdslam.svr.solve_svr_staged`).
"""

from __future__ import annotations

import numpy as np
from numpy.linalg import LinAlgError
from scipy.linalg.lapack import dpotrs

from ..svr import KernelEig, SVRBatchSolution, _as_target_array, _reduced_kkt_solve, kkt_gap
from ._util import numba_compile
from .lowrank import features

__all__ = ["solve_svr_newton"]

#: band widths of the continuation stages, in units of the pixel's epsilon
DELTA_STAGES = (1.0, 0.1)
#: band width of the last stage, in units of ``tol``: libsvm's gap there is about 2 delta (measured 0.9 tol
#: at 1 / 2.2 on 8 mock LAMOST pixels at 15,000 stars)
LAST_DELTA = 0.4


def _beta(R, C, eps, delta):
    """Dual point and band mask of the smoothed loss at residuals ``R`` (P, n)."""
    a = np.abs(R) - eps
    a /= delta
    np.clip(a, 0.0, 1.0, out=a)
    band = (a > 0.0) & (a < 1.0) & (C > 0)
    return C * np.sign(R) * a, band


def _objective(W, R, C, eps, delta):
    """Smoothed primal objective per pixel (P,)."""
    t = np.abs(R) - eps
    loss = np.where(t <= 0.0, 0.0, np.where(t < delta, t * t / (2 * delta), t - delta / 2))
    return 0.5 * np.einsum("pk,pk->p", W, W) + (C * loss).sum(axis=1)


def _ls_terms_numpy(R, dR, C, eps, delta, s, todo):
    """Loss parts of the derivative and curvature along the step at ``s`` for the pixels ``todo``.

    ``g_p = sum_i beta_i(R + s dR) dR_i`` and ``h_p = sum_{i in band} (C_i / delta) dR_i^2``,
    (len(todo),) each; NumPy, used where numba is missing (:func:`_ls_terms` is the compiled twin).
    """
    Rt, dRt, dt = R[todo], dR[todo], delta[todo, None]
    beta, band = _beta(Rt + s[todo, None] * dRt, C[todo], eps[todo], dt)
    return (beta * dRt).sum(axis=1), ((C[todo] / dt) * band * dRt * dRt).sum(axis=1)


def _ls_terms(R, dR, C, eps, delta, s, todo):
    """:func:`_ls_terms_numpy` as one loop over the stars per pixel, no temporaries (compiled by numba)."""
    g = np.zeros(todo.size)
    h = np.zeros(todo.size)
    for j in range(todo.size):
        p = todo[j]
        e, d, sp = eps[p, 0], delta[p], s[p]
        gp, hp = 0.0, 0.0
        for i in range(R.shape[1]):
            c = C[p, i]
            if c <= 0.0:
                continue
            r = R[p, i] + sp * dR[p, i]
            a = (abs(r) - e) / d
            if a <= 0.0:
                continue
            sg = c if r > 0.0 else -c
            if a >= 1.0:
                gp += sg * dR[p, i]
            else:
                gp += sg * a * dR[p, i]
                hp += c / d * dR[p, i] * dR[p, i]
        g[j], h[j] = gp, hp
    return g, h


_LS_KERNEL = None


def _ls_kernel():
    """The compiled :func:`_ls_terms` (numba, compiled once per process and cached), or the NumPy twin."""
    global _LS_KERNEL
    if _LS_KERNEL is None:
        try:
            _LS_KERNEL = numba_compile("solver='newton'", globals(), (), "_ls_terms")
        except ImportError:
            _LS_KERNEL = _ls_terms_numpy
    return _LS_KERNEL


def _line_search(W, dW, R, dR, C, eps, delta, n_eval=30):
    """Exact minimiser ``s`` in (0, 1] (or beyond 1 up to 4) of the convex piecewise-quadratic objective along the step.

    Newton's method on the monotone derivative, safeguarded by bisection of a bracket; O(n) per
    evaluation and pixel, evaluated only for the pixels not yet done.
    """
    terms = _ls_kernel()
    wd, dd = (np.einsum("pk,pk->p", a, b) for a, b in ((W, dW), (dW, dW)))
    lo = np.zeros(W.shape[0])
    hi = np.full(W.shape[0], 4.0)
    s = np.ones(W.shape[0])
    todo = np.arange(W.shape[0])
    for _ in range(n_eval):
        gl, hl = terms(R, dR, C, eps, delta, s, todo)
        st = s[todo]
        g = wd[todo] + st * dd[todo] + gl
        h = dd[todo] + hl
        lo[todo] = np.where(g < 0, st, lo[todo])
        hi[todo] = np.where(g > 0, st, hi[todo])
        done = (np.abs(g) <= 1e-12 * np.maximum(h, 1e-300) * np.maximum(st, 1e-3)) | (hi[todo] - lo[todo] <= 1e-10)
        sn = st - g / np.maximum(h, 1e-300)
        bad = ~((sn > lo[todo]) & (sn < hi[todo]))
        s[todo] = np.where(done, st, np.where(bad, 0.5 * (lo[todo] + hi[todo]), sn))
        todo = todo[~done]
        if todo.size == 0:
            break
    return s


def _solve_spd(H, G):
    """``H^-1 G`` for a symmetric positive definite ``H`` (Cholesky; LinAlgError otherwise).

    The factorisation is NumPy's, which releases the GIL; SciPy's LAPACK wrappers hold it, so
    two threads factorising at once ran one after the other (``benchmarks/README.md``).
    """
    x, info = dpotrs(np.linalg.cholesky(H), G, lower=1)
    return x


def _newton_direction(Phi, band, C, delta, GW, Gb, ridge):
    """Newton steps (dW, db) of every pixel from the Hessian over its band stars ``B``.

    The ``r``-block ``M = I + Phi_B^T D Phi_B`` (``D = C_B / delta``) is inverted by the
    Woodbury identity through ``S = D^-1 + Phi_B Phi_B^T`` when ``|B| < r`` (``O(|B|^2 r)``)
    and directly otherwise (``O(|B| r^2 + r^3)``); the intercept is eliminated by its Schur
    complement ``1^T D 1 + ridge - q^T M^-1 q``, ``q = Phi_B^T D 1``.
    """
    P, r = GW.shape
    dW, db = np.empty_like(GW), np.empty(P)
    for p in range(P):
        B = np.flatnonzero(band[p])
        dvec = C[p, B] / delta[p]
        A = Phi[B]
        q = A.T @ dvec
        G = np.column_stack([GW[p], q])                      # solve M x = [gw, q] at once
        if B.size == 0:
            X = G
        elif B.size < r:
            S = A @ A.T                                      # NumPy's syrk releases the GIL, SciPy's does not
            S[np.diag_indices(B.size)] += 1.0 / dvec
            try:
                X = G - A.T @ _solve_spd(S, A @ G)
            except LinAlgError:
                X = np.linalg.solve(np.eye(r) + (A.T * dvec) @ A, G)
        else:
            As = A * np.sqrt(dvec)[:, None]
            M = As.T @ As
            M[np.diag_indices(r)] += 1.0
            try:
                X = _solve_spd(M, G)
            except LinAlgError:
                X = np.linalg.lstsq(np.eye(r) + As.T @ As, G, rcond=None)[0]
        schur = dvec.sum() + ridge[p] - q @ X[:, 1]
        db[p] = (-Gb[p] + q @ X[:, 0]) / max(schur, ridge[p])
        dW[p] = -(X[:, 0] + X[:, 1] * db[p])
    return dW, db


def _newton_stage(Phi, Y, C, eps, W, b, delta, max_steps, rtol=1e-10):
    """Newton steps on the smoothed primal of band width ``delta`` (P,) until the objective stalls.

    A pixel stops when a step lowers its objective by less than ``rtol`` of its value.  ``W`` (P, r)
    and ``b`` (P,) are updated in place; returns the Newton steps taken per pixel.
    """
    P = Y.shape[0]
    R = Y - W @ Phi.T - b[:, None]
    steps = np.zeros(P, int)
    act = np.arange(P)
    ridge = 1e-10 * np.maximum(C.sum(axis=1), 1.0) / np.maximum(delta, 1e-300)
    f_old = _objective(W, R, C, eps, delta[:, None])
    for _ in range(max_steps):
        if act.size == 0:
            break
        Ra, Ca, ea, da = R[act], C[act], eps[act], delta[act]
        beta, band = _beta(Ra, Ca, ea, da[:, None])
        GW = W[act] - beta @ Phi
        Gb = -beta.sum(axis=1)
        dW, db = _newton_direction(Phi, band, Ca, da, GW, Gb, ridge[act])
        dR = -(dW @ Phi.T) - db[:, None]
        s = _line_search(W[act], dW, Ra, dR, Ca, ea, da)
        W[act] += s[:, None] * dW
        b[act] += s * db
        R[act] = Ra + s[:, None] * dR
        steps[act] += 1
        f_new = _objective(W[act], R[act], Ca, ea, da[:, None])
        stall = f_old[act] - f_new <= rtol * np.maximum(np.abs(f_new), 1e-300)
        f_old[act] = f_new
        act = act[~stall]
    return steps


def _continuation(Phi, Y, C, eps, W, b, tol, rows, max_steps, rtol):
    """The continuation stages before the last: ``delta`` = epsilon and epsilon / 10 on the stars ``rows``
    (None: skipped) with ``C`` scaled by ``n / len(rows)``, then down by 10 per stage on all stars
    to ``20 LAST_DELTA tol``; ``W``, ``b`` in place; returns the Newton steps on all stars per target."""
    P, n = Y.shape
    stages = [np.maximum(f * eps[:, 0], LAST_DELTA * tol) for f in DELTA_STAGES]
    if rows is not None:
        Ps, Ys, Cs = np.ascontiguousarray(Phi[rows]), Y[:, rows], C[:, rows] * (n / rows.size)
        for delta in stages:
            _newton_stage(Ps, Ys, Cs, eps, W, b, delta, max_steps, rtol)
        stages = stages[-1:]
    while stages[-1].max() > 20 * LAST_DELTA * tol:                 # down by 10 per stage
        stages.append(np.maximum(0.1 * stages[-1], LAST_DELTA * tol))
    steps = np.zeros(P, int)
    for delta in stages:
        steps += _newton_stage(Phi, Y, C, eps, W, b, delta, max_steps, rtol)
    return steps


def _finish(Phi, ke, Y, C, eps, beta, gap, bb, tol, fallback):
    """Exact active-set step, then ADMM for the targets still above ``tol``; ``beta``, ``gap``, ``bb`` in place.

    The step solves the reduced KKT system of the stars strictly inside the box
    (:func:`mdslam.svr.polish_svr_batch`'s) and is kept where it lowers libsvm's gap.
    Returns the (P,) bool mask of the targets solved again by ADMM + polish.
    """
    fp = (beta > 0) & (beta < C)
    fm = (beta < 0) & (beta > -C)
    start = np.where(beta >= C, C, np.where(beta <= -C, -C, 0.0))
    start[C <= 0] = 0.0
    fb, _ = _reduced_kkt_solve(ke, Y, start, fp, fm, eps[:, 0])
    fb = np.clip(fb, -C, C)
    fgap, fb_mid = kkt_gap(fb, Y - (fb @ Phi) @ Phi.T, C, eps)
    better = fgap < gap
    beta[better], gap[better], bb[better] = fb[better], fgap[better], fb_mid[better]
    went = (gap > tol) & fallback
    redo = np.flatnonzero(went)
    if redo.size:
        from ..svr import solve_svr_staged

        sub = solve_svr_staged(ke, Y[redo], C[redo], eps[redo, 0], tol=tol)
        beta[redo], gap[redo], bb[redo] = sub.beta, sub.gap, sub.intercept
    return went


def solve_svr_newton(ke: KernelEig, Y: np.ndarray, C, epsilon, *, tol: float = 1e-3, subsample: int | None = 2000,
                     max_steps: int = 60, seed: int = 0, fallback: bool = True, stage_rtol: float = 1e-6) -> SVRBatchSolution:
    """Solve ``n_target`` epsilon-SVRs on a low-rank kernel by Newton's method in the ``r + 1`` primal unknowns.

    The same problem and stopping rule as :func:`mdslam.svr.solve_svr_staged` with the
    kernel ``K~ = U diag(lam) U^T`` of ``ke`` (same signature, so
    :class:`mdslam.slam.distribute.BlockRunner` runs it on pixel blocks).  What it costs
    against ADMM at 15,000 stars is measured in ``benchmarks/README.md`` ("Training at
    15,000 stars").

    Parameters
    ----------
    ke : KernelEig
        Low-rank kernel of the ``n`` training points (:func:`mdslam.svr.nystrom_kernel`);
        an exact ``KernelEig`` is accepted too (its kept eigenpairs are the features).
    Y : (n_target, n) array
        Targets (standardised fluxes); entries with ``C == 0`` are ignored.
    C : float, (n_target,) or (n_target, n) array
        Box bounds; per-sample values are sample weights (0 = excluded).
    epsilon : float or (n_target,) array
        Tube half-widths, in the units of ``Y``.
    tol : float
        libsvm's tolerance: ``max(KKT gap, |sum beta|) <= tol`` on exit for converged targets.
    subsample : int or None
        Stars (seeded random draw) of the first continuation stages, with ``C`` scaled by
        ``n / subsample``; None or ``>= n``: all stages on all stars.
    max_steps : int
        Cap on Newton steps per stage and target.
    seed : int
        Seed of the subsample draw.
    fallback : bool
        Targets still above ``tol`` after the Newton stages and the active-set step are solved
        again by :func:`mdslam.svr.solve_svr_staged` (ADMM + polish) on the same kernel.
    stage_rtol : float
        Relative objective decrease below which a step ends a continuation stage other than the
        last (those only hand a start to the next); the last stages stop at 1e-10.

    Returns
    -------
    SVRBatchSolution
        ``beta`` (n_target, n), ``intercept`` (n_target,), ``gap`` (libsvm's KKT quantity,
        float64, recomputed from ``beta``), ``n_iter`` = Newton steps on all ``n`` stars per
        target, ``converged``, ``state = (W, b, fallback)``: the primal parameters (n_target, r)
        and (n_target,) of the last smoothed problem, and which targets went to ADMM.
    """
    Y = np.ascontiguousarray(Y, dtype=float)
    P, n = Y.shape
    Cf = np.ascontiguousarray(np.broadcast_to(_as_target_array(C, P, n), (P, n)), dtype=float)
    ef = np.ascontiguousarray(_as_target_array(epsilon, P), dtype=float)
    if np.any(Cf < 0) or np.any(ef < 0):
        raise ValueError("C and epsilon must be non-negative")
    Phi = features(ke)
    W, b = np.zeros((P, Phi.shape[1])), np.zeros(P)
    rows = None
    if subsample is not None and subsample < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, int(subsample), replace=False))
    steps = _continuation(Phi, Y, Cf, ef, W, b, tol, rows, max_steps, stage_rtol)
    steps += _newton_stage(Phi, Y, Cf, ef, W, b, np.full(P, LAST_DELTA * tol), max_steps, 1e-10)
    beta, gap, bb = _dual_point(Phi, Y, Cf, ef, W, b, LAST_DELTA * tol)
    again = np.flatnonzero(gap > tol)                             # one more stage, 4x narrower, for those
    if again.size:
        Wa, ba = W[again], b[again]
        steps[again] += _newton_stage(Phi, Y[again], Cf[again], ef[again], Wa, ba,
                                      np.full(again.size, LAST_DELTA * tol / 4), max_steps, 1e-10)
        W[again], b[again] = Wa, ba
        beta[again], gap[again], bb[again] = _dual_point(Phi, Y[again], Cf[again], ef[again], Wa, ba,
                                                         LAST_DELTA * tol / 4)
    went = _finish(Phi, ke, Y, Cf, ef, beta, gap, bb, tol, fallback)
    return SVRBatchSolution(beta=beta, intercept=bb, gap=gap, n_iter=steps, converged=gap <= tol,
                            state=(W, b, went))


def _dual_point(Phi, Y, C, eps, W, b, delta):
    """Dual point of the primal (W, b) at band width ``delta``, libsvm's gap on every star, and its intercept."""
    beta, _ = _beta(Y - W @ Phi.T - b[:, None], C, eps, delta)
    gap, bb = kkt_gap(beta, Y - (beta @ Phi) @ Phi.T, C, eps)
    return beta, gap, bb

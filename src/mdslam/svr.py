"""Batched epsilon-SVR with an RBF kernel: many regression targets sharing one kernel matrix.

SLAM fits one support vector regression per spectral pixel, all on the same
training labels.  For a given kernel width ``gamma`` (and CV fold) every pixel
therefore shares the same kernel matrix ``K``; only the targets (the pixel's
fluxes), ``C`` and ``epsilon`` differ.  This module solves the SVR dual of all
pixels at once, as matrix operations, instead of calling libsvm pixel by pixel.

The problem (identical to libsvm's / ``sklearn.svm.SVR``) for one target
``y`` of length ``n`` is, with ``beta = alpha - alpha*``::

    min_beta  1/2 beta^T K beta - y^T beta + epsilon * sum|beta_i|
    s.t.      -C_i <= beta_i <= C_i,   sum_i beta_i = 0

and the regression function is ``f(x) = sum_i beta_i k(x_i, x) + b``.

Solver: ADMM (the OSQP splitting) with over-relaxation and a per-target
penalty ``rho`` adapted on the fly.  The linear step needs
``(K + rho I)^{-1}`` restricted to ``sum beta = 0``; with the eigen
decomposition ``K = U diag(lam) U^T`` (computed once per kernel) it is two
matrix products for all targets at once, whatever each target's ``rho``.
The proximal step (soft threshold by ``epsilon/rho``, clip to the box) is
element-wise.  Iterations run in float32 by default and every target is
checked in float64 against libsvm's own stopping rule: the KKT gap
``max_{i in I_low} (y_i - f_i) - min_{i in I_up} (y_i - f_i) <= tol`` (the
"maximal violating pair" gap, with ``f`` without ``b``), so a solution
accepted here is at least as converged as libsvm's at the same ``tol``
(sklearn's default is 1e-3).  Targets that converge leave the batch.

Per-sample weights: ``C`` may be given per target *and* per sample, shape
``(n_target, n)``.  ``C_i = 0`` removes sample ``i`` from that target's
problem exactly (libsvm's ``sample_weight`` semantics); SLAM uses it for
masked training pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["rbf_kernel", "KernelEig", "SVRBatchSolution", "kkt_gap", "solve_svr_batch", "polish_svr_batch",
           "solve_svr_exact"]


def rbf_kernel(A: np.ndarray, B: np.ndarray, gamma: float) -> np.ndarray:
    """RBF kernel ``exp(-gamma * |a - b|^2)``.

    Parameters
    ----------
    A : (n_a, n_dim) array
    B : (n_b, n_dim) array
    gamma : float
        Kernel width parameter (inverse squared length), same convention as
        ``sklearn.svm.SVR``.

    Returns
    -------
    (n_a, n_b) float64 array.  Squared distances are summed dimension by
    dimension from differences (no ``|a|^2 + |b|^2 - 2 a.b`` cancellation).
    """
    A = np.asarray(A, float)
    B = np.asarray(B, float)
    d2 = np.zeros((A.shape[0], B.shape[0]))
    for k in range(A.shape[1]):
        diff = A[:, k, None] - B[None, :, k]
        d2 += diff * diff
    np.multiply(d2, -gamma, out=d2)
    return np.exp(d2, out=d2)


@dataclass
class KernelEig:
    """A kernel matrix with its truncated eigen decomposition.

    Attributes
    ----------
    K : (n, n) float64 kernel matrix.
    lam : (r,) eigenvalues kept (``lam > rel_cut * lam.max()``).
    U : (n, r) orthonormal eigenvectors.
    """

    K: np.ndarray
    lam: np.ndarray
    U: np.ndarray

    @classmethod
    def from_kernel(cls, K: np.ndarray, rel_cut: float = 1e-12) -> KernelEig:
        """Decompose ``K``; eigenvalues below ``rel_cut * max`` are dropped.

        Dropping them changes the fitted function by at most
        ``lam_cut * |beta|`` (~1e-7 for C = 10 and 800 samples), far below
        the solver tolerance.
        """
        K = np.asarray(K, float)
        lam, U = np.linalg.eigh(K)
        keep = lam > rel_cut * max(lam.max(), 1e-300)
        return cls(K=K, lam=lam[keep].copy(), U=np.ascontiguousarray(U[:, keep]))


@dataclass
class SVRBatchSolution:
    """Dual solutions for a batch of targets.

    Attributes
    ----------
    beta : (n_target, n) dual coefficients ``alpha - alpha*``.
    intercept : (n_target,) ``b``.
    gap : (n_target,) final KKT gap (float64, libsvm's criterion).
    n_iter : (n_target,) ADMM iterations used.
    converged : (n_target,) bool, ``gap <= tol``.
    state : (z, u, rho) ADMM state, for warm starts.
    """

    beta: np.ndarray
    intercept: np.ndarray
    gap: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    state: tuple[np.ndarray, np.ndarray, np.ndarray]


def kkt_gap(beta: np.ndarray, h: np.ndarray, C: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """libsvm's stopping quantity and the matching intercept.

    Parameters
    ----------
    beta : (P, n) dual coefficients (feasible: ``|beta| <= C``).
    h : (P, n) ``y - K beta`` (targets minus the kernel part of the fit).
    C : (P, n) or (P, 1) box bounds.
    eps : (P, 1) tube half-widths.

    Returns
    -------
    gap : (P,) ``max(lower bounds on b) - min(upper bounds on b)``, clipped at
        0 (the maximal-violating-pair gap of libsvm's SMO), or the residual
        ``|sum beta|`` of the equality constraint if that is larger (libsvm's
        iterates satisfy it exactly; ADMM's only in the limit).
    b : (P,) intercept, mid-point of the feasible interval (libsvm takes the
        mean over free support vectors; at convergence both agree to ``gap``).
    """
    pos = beta > 0
    neg = beta < 0
    at_up = beta >= C
    at_lo = beta <= -C
    lo = np.where(neg, h + eps, h - eps)
    lo[at_up] = -np.inf
    up = np.where(pos, h - eps, h + eps)
    up[at_lo] = np.inf
    LB = lo.max(axis=1)
    UB = up.min(axis=1)
    gap = np.maximum(LB - UB, 0.0)
    fl, fu = np.isfinite(LB), np.isfinite(UB)
    b = np.where(fl & fu, 0.5 * (LB + UB), np.where(fl, LB, np.where(fu, UB, 0.0)))
    gap = np.where(fl & fu, gap, 0.0)
    gap = np.maximum(gap, np.abs(beta.sum(axis=1)))
    return gap, b


def _as_target_array(v, P: int, n: int | None = None) -> np.ndarray:
    v = np.asarray(v, float)
    if n is not None and v.ndim == 2:
        return np.broadcast_to(v, (P, n))
    return np.broadcast_to(v.reshape(-1, 1) if v.ndim else v, (P, 1))


def solve_svr_batch(
    ke: KernelEig,
    Y: np.ndarray,
    C,
    epsilon,
    *,
    tol: float = 1e-3,
    max_iter: int = 20000,
    rho0: float = 0.03,
    alpha: float = 1.6,
    check_every: int = 10,
    adapt_every: int = 50,
    dtype=np.float32,
    warm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> SVRBatchSolution:
    """Solve ``n_target`` epsilon-SVR duals that share the kernel ``ke.K``.

    Parameters
    ----------
    ke : KernelEig
        Kernel matrix of the ``n`` training points and its eigen decomposition.
    Y : (n_target, n) array
        Targets (standardised fluxes, one row per pixel).  Entries with
        ``C == 0`` are ignored (may be anything finite).
    C : float, (n_target,) or (n_target, n) array
        Penalty; per-sample values implement sample weights (0 = excluded).
    epsilon : float or (n_target,) array
        Tube half-width, in the units of ``Y``.
    tol : float
        Stopping KKT gap (libsvm's ``tol``; sklearn's default is 1e-3).
    max_iter : int
        Iteration cap per target; targets that hit it are returned with
        ``converged = False``.
    rho0, alpha, check_every, adapt_every : ADMM controls
        Initial penalty, over-relaxation, how often the KKT gap is checked
        and how often ``rho`` is rebalanced.
    dtype : numpy dtype
        Arithmetic of the iterations (float32 by default: twice as fast).
        The KKT gap is always checked in float64; targets that float32 cannot
        bring below ``tol`` continue in float64.
    warm : (z, u, rho), optional
        State of a previous solve on the same kernel (e.g. a neighbouring
        ``C``/``epsilon``) to start from.

    Returns
    -------
    SVRBatchSolution
    """
    K, lam, U = ke.K, ke.lam, ke.U
    Y = np.asarray(Y, float)
    P, n = Y.shape
    Cfull = np.ascontiguousarray(_as_target_array(C, P, n))
    efull = np.ascontiguousarray(_as_target_array(epsilon, P))
    if np.any(Cfull < 0) or np.any(efull < 0):
        raise ValueError("C and epsilon must be non-negative")

    out_beta = np.zeros((P, n))
    out_b = np.zeros(P)
    out_gap = np.full(P, np.inf)
    out_it = np.zeros(P, int)
    out_z = np.zeros((P, n))
    out_u = np.zeros((P, n))
    out_rho = np.full(P, rho0, float)

    if warm is not None:
        z0, u0, r0 = (np.asarray(a, float) for a in warm)
        z0 = np.clip(z0, -Cfull, Cfull)
    else:
        z0 = np.zeros((P, n))
        u0 = np.zeros((P, n))
        r0 = np.full(P, rho0, float)

    remaining = np.arange(P)
    it_done = np.zeros(P, int)
    for phase_dtype in ([dtype, np.float64] if np.dtype(dtype) != np.float64 else [np.float64]):
        if remaining.size == 0:
            break
        res = _admm_phase(K, lam, U, Y[remaining], Cfull[remaining], efull[remaining],
                          z0[remaining], u0[remaining], r0[remaining], tol, max_iter,
                          alpha, check_every, adapt_every, np.dtype(phase_dtype))
        beta, b, gap, nit, z, u, rho = res
        idx = remaining
        out_beta[idx] = beta
        out_b[idx] = b
        out_gap[idx] = gap
        it_done[idx] += nit
        out_z[idx] = z
        out_u[idx] = u
        out_rho[idx] = rho
        # continue in float64 only those float32 could not finish (and had iterations left)
        again = (gap > tol) & (nit < max_iter)
        remaining = idx[again]
        z0[remaining] = z[again]
        u0[remaining] = u[again]
        r0[remaining] = rho[again]
    out_it[:] = it_done
    return SVRBatchSolution(beta=out_beta, intercept=out_b, gap=out_gap, n_iter=out_it,
                            converged=out_gap <= tol, state=(out_z, out_u, out_rho))


def _admm_phase(K, lam, U, Y, Cf, ef, z, u, rho, tol, max_iter, alpha, check_every,
                adapt_every, dt):
    """ADMM iterations in arithmetic ``dt``; returns float64 results per target.

    A target leaves the batch when its float64 KKT gap is <= tol, or when it
    stops improving in float32 (rounding floor), or at ``max_iter``.
    """
    P, n = Y.shape
    out_beta = np.zeros((P, n))
    out_b = np.zeros(P)
    out_gap = np.full(P, np.inf)
    out_it = np.zeros(P, int)
    out_z = np.zeros((P, n))
    out_u = np.zeros((P, n))
    out_rho = np.zeros(P)
    if P == 0:
        return out_beta, out_b, out_gap, out_it, out_z, out_u, out_rho

    Ut = U.astype(dt)
    UtT = np.ascontiguousarray(Ut.T)
    lamt = lam.astype(dt)
    c = Ut.sum(axis=0)                                    # U^T 1
    ones_n = dt.type(n)
    a = dt.type(alpha)

    active = np.arange(P)
    Ya = Y.astype(dt)
    Ca = Cf.astype(dt)
    ea = ef.astype(dt)
    zt = z.astype(dt)
    ut = u.astype(dt)
    rh = rho.astype(dt)
    best_gap = np.full(P, np.inf)
    stall = np.zeros(P, int)

    def factors(rh):
        D = (1.0 / (lamt[None, :] + rh[:, None]) - 1.0 / rh[:, None]).astype(dt)
        Dc = D * c
        den = ones_n / rh + Dc @ c
        return D, Dc, den

    D, Dc, den = factors(rh)
    it = 0
    x = np.empty_like(zt)
    zold = zt
    while active.size and it < max_iter:
        for _ in range(check_every):
            w = zt - ut
            r = w
            r *= rh[:, None]
            r += Ya                                       # r = y + rho (z - u)
            q = r @ Ut                                    # (P, r)
            nu = (r.sum(axis=1) / rh + np.einsum("pk,pk->p", q, Dc)) / den
            q *= D
            q -= nu[:, None] * Dc
            np.matmul(q, UtT, out=x)
            r -= nu[:, None]
            r /= rh[:, None]
            x += r                                        # x = (K+rho)^-1 (r - nu 1), sum x = 0
            v = x * a
            v += (1 - a) * zt
            v += ut
            zold = zt
            t = ea / rh[:, None]
            zt = np.clip(v, -t, t)
            np.subtract(v, zt, out=zt)                    # soft threshold by eps/rho
            np.clip(zt, -Ca, Ca, out=zt)                  # box
            ut = v
            ut -= zt
            it += 1
        # float64 KKT check
        z64 = zt.astype(float)
        h = Y[active] - z64 @ K
        gap, b = kkt_gap(z64, h, Cf[active], ef[active])
        improved = gap < 0.5 * best_gap[active]
        best_gap[active] = np.minimum(best_gap[active], gap)
        stall[active] = np.where(improved, 0, stall[active] + 1)
        done = (gap <= tol) | (it >= max_iter)
        if dt != np.float64:
            done |= stall[active] >= 30                   # float32 rounding floor: hand over
        if done.any():
            idx = active[done]
            out_beta[idx] = z64[done]
            out_b[idx] = b[done]
            out_gap[idx] = gap[done]
            out_it[idx] = it
            out_z[idx] = z64[done]
            out_u[idx] = ut[done]
            out_rho[idx] = rh[done]
            keep = ~done
            active = active[keep]
            zt, ut, rh, x, zold = zt[keep], ut[keep], rh[keep], x[keep], zold[keep]
            Ya, Ca, ea = Ya[keep], Ca[keep], ea[keep]
            D, Dc, den = D[keep], Dc[keep], den[keep]
        if active.size and adapt_every and it % adapt_every == 0:
            # OSQP-style rebalancing of primal and dual residuals, per target
            rp = np.abs(x - zt).max(axis=1) / np.maximum(
                np.maximum(np.abs(x).max(axis=1), np.abs(zt).max(axis=1)), 1e-30)
            rd = rh * np.abs(zt - zold).max(axis=1) / np.maximum(
                np.maximum(rh * np.abs(ut).max(axis=1), np.abs(Ya).max(axis=1)), 1e-30)
            fac = np.sqrt(rp / np.maximum(rd, 1e-30))
            fac = np.clip(fac, 0.2, 5.0)
            fac = np.where((fac > 2.0) | (fac < 0.5), fac, 1.0).astype(dt)
            if np.any(fac != 1):
                ut /= fac[:, None]
                rh = rh * fac
                D, Dc, den = factors(rh)
    if active.size:  # hit max_iter inside the inner loop
        z64 = zt.astype(float)
        h = Y[active] - z64 @ K
        gap, b = kkt_gap(z64, h, Cf[active], ef[active])
        out_beta[active] = z64
        out_b[active] = b
        out_gap[active] = gap
        out_it[active] = it
        out_z[active] = z64
        out_u[active] = ut
        out_rho[active] = rh
    return out_beta, out_b, out_gap, out_it, out_z, out_u, out_rho


def polish_svr_batch(
    ke: KernelEig,
    Y: np.ndarray,
    C,
    epsilon,
    sol: SVRBatchSolution,
    *,
    steps: int = 4,
    tol: float = 1e-3,
) -> SVRBatchSolution:
    """Refine ADMM solutions to the exact optimum by active-set Newton steps.

    From the ADMM state the samples are split into bounded (``beta = +-C``),
    zero, and free (on the tube edge, ``f_i - y_i = -+epsilon``) sets; the
    free coefficients and ``b`` then solve the reduced KKT system
    ``[[K_FF, 1], [1^T, 0]] [beta_F, b] = [y_F -+ eps - K_FB beta_B, -sum beta_B]``
    exactly (primal-dual active-set / semismooth Newton, OSQP's "polish").
    A target keeps the polished solution only if its KKT gap went down, so
    this never makes a solution worse.  When the sets are right the gap
    drops to rounding level (~1e-12), i.e. the exact optimum libsvm
    approaches.

    Parameters
    ----------
    ke, Y, C, epsilon : as for :func:`solve_svr_batch`.
    sol : SVRBatchSolution
        ADMM result to refine (its ``state`` gives the set estimates).
    steps : int
        Newton steps (each re-splits the sets at the previous iterate).
    tol : float
        KKT gap below which a target counts as converged.

    Returns
    -------
    SVRBatchSolution with updated ``beta``, ``intercept``, ``gap``.
    """
    K = ke.K
    Y = np.asarray(Y, float)
    P, n = Y.shape
    Cf = np.ascontiguousarray(np.broadcast_to(_as_target_array(C, P, n), (P, n)))
    ef = np.ascontiguousarray(_as_target_array(epsilon, P))
    z, u, rho = sol.state
    beta_best = sol.beta.copy()
    b_best = sol.intercept.copy()
    gap_best = sol.gap.copy()
    tinv = 1.0 / np.maximum(rho, 1e-30)[:, None]
    v = z + u                                         # = z - g / rho at a fixed point
    for _ in range(steps):
        todo = np.flatnonzero(gap_best > 1e-12)
        if todo.size == 0:
            break
        vt, Ct, et, tt, Yt = v[todo], Cf[todo], ef[todo], tinv[todo], Y[todo]
        thr = et * tt
        up = vt > Ct + thr
        lo = vt < -Ct - thr
        fp = (vt > thr) & ~up & (Ct > 0)
        fm = (vt < -thr) & ~lo & (Ct > 0)
        beta = np.where(up, Ct, np.where(lo, -Ct, 0.0))
        beta, b = _reduced_kkt_solve(K, Yt, beta, fp, fm, et[:, 0])
        beta = np.clip(beta, -Ct, Ct)
        h = Yt - beta @ K
        gap, bmid = kkt_gap(beta, h, Ct, et)
        better = gap < gap_best[todo]
        idx = todo[better]
        beta_best[idx] = beta[better]
        b_best[idx] = bmid[better]
        gap_best[idx] = gap[better]
        # next split from this iterate: v = beta - g / rho with g = K beta + b - y
        g = -h + b[:, None]
        v[todo] = beta - g * tt
    return SVRBatchSolution(beta=beta_best, intercept=b_best, gap=gap_best, n_iter=sol.n_iter,
                            converged=gap_best <= tol,
                            state=sol.state)


def _reduced_kkt_solve(K, Y, beta, fp, fm, eps, chunk: int = 32):
    """Solve the free-set KKT systems of many targets (batched LU, padded by size)."""
    P = Y.shape[0]
    free = fp | fm
    m = free.sum(axis=1)
    b = np.zeros(P)
    rhs_full = Y - eps[:, None] * np.where(fp, 1.0, -1.0) - beta @ K
    order = np.argsort(m)
    for start in range(0, P, chunk):
        ids = order[start:start + chunk]
        M = int(m[ids].max()) + 1
        A = np.zeros((len(ids), M, M))
        R = np.zeros((len(ids), M))
        frees = []
        for k, p in enumerate(ids):
            F = np.flatnonzero(free[p])
            mm = F.size
            frees.append(F)
            A[k, :mm, :mm] = K[np.ix_(F, F)]
            A[k, :mm, mm] = 1.0
            A[k, mm, :mm] = 1.0
            pad = np.arange(mm + 1, M)
            A[k, pad, pad] = 1.0
            R[k, :mm] = rhs_full[p, F]
            R[k, mm] = -beta[p].sum()
            if mm == 0:                      # no free sample: b is not fixed by equalities
                A[k, 0, 0] = 1.0
                R[k, 0] = np.nan
        try:
            S = np.linalg.solve(A, R[..., None])[..., 0]
        except np.linalg.LinAlgError:
            S = np.stack([np.linalg.lstsq(A[k], R[k], rcond=None)[0] for k in range(len(ids))])
        for k, p in enumerate(ids):
            F = frees[k]
            if F.size and np.all(np.isfinite(S[k, :F.size + 1])):
                beta[p, F] = S[k, :F.size]
                b[p] = S[k, F.size]
    return beta, b


def solve_svr_exact(
    ke: KernelEig,
    Y: np.ndarray,
    C,
    epsilon,
    *,
    tol: float = 1e-3,
    final_tol: float = 1e-8,
    max_iter: int = 20000,
) -> SVRBatchSolution:
    """Solve to the exact optimum: ADMM to ``tol``, active-set polish, then (for targets
    whose sets were not yet identified) float64 ADMM down to ``final_tol`` and polish again.

    Parameters
    ----------
    ke, Y, C, epsilon : as for :func:`solve_svr_batch`.
    tol : float
        KKT gap of the fast first stage.
    final_tol : float
        Target KKT gap; polished targets reach rounding level (~1e-12).
    max_iter : int
        Iteration cap of each ADMM stage.

    Returns
    -------
    SVRBatchSolution; ``converged`` means ``gap <= final_tol``.
    """
    Y = np.asarray(Y, float)
    P, n = Y.shape
    Cf = np.ascontiguousarray(np.broadcast_to(_as_target_array(C, P, n), (P, n)))
    ef = np.ascontiguousarray(_as_target_array(epsilon, P))[:, 0]
    sol = solve_svr_batch(ke, Y, Cf, ef, tol=tol, max_iter=max_iter)
    sol = polish_svr_batch(ke, Y, Cf, ef, sol, tol=final_tol)
    todo = np.flatnonzero(sol.gap > final_tol)
    if todo.size:
        z, u, r = sol.state
        sol2 = solve_svr_batch(ke, Y[todo], Cf[todo], ef[todo], tol=final_tol, max_iter=max_iter,
                               warm=(z[todo], u[todo], r[todo]), dtype=np.float64)
        sol2 = polish_svr_batch(ke, Y[todo], Cf[todo], ef[todo], sol2, tol=final_tol)
        better = sol2.gap < sol.gap[todo]
        idx = todo[better]
        sol.beta[idx] = sol2.beta[better]
        sol.intercept[idx] = sol2.intercept[better]
        sol.gap[idx] = sol2.gap[better]
        sol.n_iter[idx] += sol2.n_iter[better]
    sol.converged = sol.gap <= final_tol
    return sol

"""Dual coordinate descent for epsilon-SVRs on a low-rank (Nystrom) kernel, as liblinear does for linear SVRs.

With a Nystrom kernel ``K~ = Phi Phi^T`` (:func:`mdslam.svr.nystrom_kernel`,
``Phi = U diag(lam)^(1/2)``, shape ``(n, r)``) the SVR of one pixel is a
*linear* SVR on the ``r`` features ``phi_i`` of each star: its primal has
only ``r + 1`` unknowns ``(w, b)``.  This module solves its dual, the same
problem as :func:`mdslam.svr.solve_svr_batch` on that kernel::

    min_beta  1/2 |Phi^T beta|^2 - y^T beta + epsilon * sum|beta_i|
    s.t.      -C_i <= beta_i <= C_i,   sum_i beta_i = 0,

by dual coordinate descent as liblinear does for the L1-loss SVR (Ho & Lin
2012, "Large-scale linear support vector regression", JMLR 13, algorithm 3
with shrinking): ``w = Phi^T beta`` is kept, one coordinate update costs
``O(r)``, so a pass over the stars costs ``O(n r)``, and the number of
passes depends on the conditioning of the ``r``-dimensional problem, not on
``n``.  Bounded and zero coefficients that stay so are shrunk out of later
passes.  On SLAM's problems that conditioning is poor (the RBF features are
nearly collinear): 800-1,800 passes at C = 10, more at large C, several times the
CPU of the ADMM path (``benchmarks/README.md``, "Training at 15,000 stars").

The free intercept (``sum beta = 0``; liblinear instead regularises ``b``
through a constant feature) is handled exactly by the method of multipliers:
the constant feature ``sqrt(mu)`` adds ``mu/2 (sum beta)^2`` and the targets
are shifted by a multiplier ``nu``, which is updated ``nu += mu sum beta``
whenever the coordinate descent has converged for the current ``nu``; at the
end ``|sum beta| <= tol``.

Stopping rule: libsvm's, as in :mod:`mdslam.svr`.  The maximal-violating-pair
gap does not change when all gradients shift by a constant, so it is
computed from the coordinate-descent gradients; a pixel is accepted only
after a fresh float64 pass confirms ``max(gap, |sum beta|) <= tol`` on all
stars (:func:`mdslam.svr.kkt_gap`'s quantity).

The compiled inner loop needs ``numba`` (the ``scale`` extra); it is imported
when a solve is first asked for, so the rest of the package runs without it.
"""

from __future__ import annotations

import numpy as np

from ..svr import KernelEig, SVRBatchSolution, _as_target_array, kkt_gap
from ._util import numba_compile

__all__ = ["features", "solve_svr_dcd"]

_KERNEL = None
_HELPERS = ("_shuffle", "_epoch", "_fresh_gap")


def _compiled():
    """The numba-compiled solver (compiled once per process, cached on disk)."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = numba_compile("solver='dcd'", globals(), _HELPERS, "_dcd_pixels")
    return _KERNEL


def _shuffle(idx, active, state):
    """Shuffle ``idx[:active]`` in place (xorshift64, so the order does not depend on the pixel blocks)."""
    for j in range(active - 1, 0, -1):
        state ^= state << np.uint64(13)
        state ^= state >> np.uint64(7)
        state ^= state << np.uint64(17)
        t = np.int64(state % np.uint64(j + 1))
        idx[j], idx[t] = idx[t], idx[j]
    return state


def _epoch(Phi, QD, y, Cp, e, bp, w, idx, active, s, c, mu, gmax_old):
    """One pass over ``idx[:active]``: shrink, measure libsvm's gap, one-variable Newton step per star.

    ``bp`` (n,) and ``w`` (r,) are updated in place; ``c = nu + mu s`` is the gradient shift of
    the augmented Lagrangian.  Returns ``(active, s, gap, gmax_new)``; ``gap`` is libsvm's
    maximal-violating-pair gap from this pass's gradients (before each star's update).
    """
    INF = 1e300
    LB, UB, gmax_new = -INF, INF, 0.0
    j = 0
    while j < active:
        i = idx[j]
        G = c - y[i]
        for k in range(w.size):
            G += w[k] * Phi[i, k]
        Ci, bi = Cp[i], bp[i]
        Gp, Gn = G + e, G - e
        viol, shrink = 0.0, False
        if bi == 0.0:
            viol = -Gp if Gp < 0.0 else (Gn if Gn > 0.0 else 0.0)
            shrink = Gp > gmax_old and Gn < -gmax_old
        elif bi >= Ci:
            viol = Gp if Gp > 0.0 else 0.0
            shrink = Gp < -gmax_old
        elif bi <= -Ci:
            viol = -Gn if Gn < 0.0 else 0.0
            shrink = Gn > gmax_old
        else:
            viol = abs(Gp) if bi > 0.0 else abs(Gn)
        if shrink:                                      # liblinear's shrinking rule
            active -= 1
            idx[j], idx[active] = idx[active], idx[j]
            continue
        gmax_new = max(gmax_new, viol)
        if bi < Ci:                                     # libsvm's bounds on b (h = -G, shift-invariant)
            LB = max(LB, -G + e if bi < 0.0 else -G - e)
        if bi > -Ci:
            UB = min(UB, -G - e if bi > 0.0 else -G + e)
        H = QD[i]
        d = -Gp / H if Gp < H * bi else (-Gn / H if Gn > H * bi else -bi)
        nb = min(max(bi + d, -Ci), Ci)
        d = nb - bi
        if d != 0.0:
            bp[i] = nb
            s += d
            c += mu * d
            for k in range(w.size):
                w[k] += d * Phi[i, k]
        j += 1
    gap = max(LB - UB, 0.0) if (LB > -INF and UB < INF) else 0.0
    return active, s, gap, gmax_new


def _fresh_gap(Phi, y, Cp, e, bp, w, idx, n_use):
    """libsvm's gap over the stars ``idx[:n_use]`` from freshly computed ``h = y - Phi w``."""
    INF = 1e300
    LB, UB = -INF, INF
    for jj in range(n_use):
        i = idx[jj]
        h = y[i]
        for k in range(w.size):
            h -= w[k] * Phi[i, k]
        if bp[i] < Cp[i]:
            LB = max(LB, h + e if bp[i] < 0.0 else h - e)
        if bp[i] > -Cp[i]:
            UB = min(UB, h - e if bp[i] > 0.0 else h + e)
    return max(LB - UB, 0.0) if (LB > -INF and UB < INF) else 0.0


def _dcd_pixels(Phi, QD, Y, C, eps, beta, nu, tol, mu, max_epochs, seed, epochs, passes):
    """Solve the pixels ``p`` of ``Y`` (P, n) one after another; ``beta`` (P, n), ``nu`` (P,) in/out.

    ``epochs[p]``: coordinate-descent passes run; ``passes[p]``: coordinates visited / n
    (shrunk passes count in part).  Plain Python/NumPy; compiled by :func:`_compiled`.
    """
    n, r = Phi.shape
    w = np.zeros(r)
    idx = np.empty(n, np.int64)
    for p in range(Y.shape[0]):
        y, Cp, bp, e = Y[p], C[p], beta[p], eps[p]
        w[:] = 0.0
        s, n_use = 0.0, 0
        for i in range(n):                              # clip a warm start; the stars with C_i > 0
            bi = min(max(bp[i], -Cp[i]), Cp[i]) if Cp[i] > 0.0 else 0.0
            bp[i] = bi
            if Cp[i] > 0.0:
                idx[n_use] = i
                n_use += 1
            if bi != 0.0:
                s += bi
                for k in range(r):
                    w[k] += bi * Phi[i, k]
        active, gmax_old = n_use, 1e300
        state = np.uint64(seed) * np.uint64(2654435761) + np.uint64(88172645463325252)
        visited, ep = 0, 0
        while ep < max_epochs:
            state = _shuffle(idx, active, state)
            active, s, gap, gmax_new = _epoch(Phi, QD, y, Cp, e, bp, w, idx, active, s, nu[p] + mu * s,
                                              mu, gmax_old)
            visited += active
            ep += 1
            if gap > tol:
                gmax_old = gmax_new if gmax_new > 0.0 else 1e300
                continue
            if active < n_use:                          # converged on the shrunk set: recheck all
                active, gmax_old = n_use, 1e300
                continue
            visited += n_use
            if _fresh_gap(Phi, y, Cp, e, bp, w, idx, n_use) <= tol and abs(s) <= tol:
                break
            if abs(s) > tol:
                nu[p] += mu * s                         # method of multipliers
            gmax_old = 1e300
        epochs[p] = ep
        passes[p] = visited / max(n_use, 1)
    return 0


def features(ke: KernelEig) -> np.ndarray:
    """Features ``Phi`` (n, r) of a low-rank kernel, ``K~ = Phi Phi^T = U diag(lam) U^T``, C-ordered float64."""
    return np.ascontiguousarray(ke.U * np.sqrt(ke.lam))


def solve_svr_dcd(ke: KernelEig, Y: np.ndarray, C, epsilon, *, tol: float = 1e-3, max_epochs: int = 100_000,
                  mu: float = 1.0, warm: tuple | None = None, seed: int = 0) -> SVRBatchSolution:
    """Solve ``n_target`` epsilon-SVR duals on a low-rank kernel by dual coordinate descent.

    The same problem and stopping rule as :func:`mdslam.svr.solve_svr_staged` with the
    kernel ``K~ = U diag(lam) U^T`` of ``ke`` (the signature is the same, so
    :class:`mdslam.slam.distribute.BlockRunner` runs it on pixel blocks); the work per
    pass is ``O(n r)`` per target instead of ``O(n^2)``.  How many passes it needs on
    SLAM's problems, against the ADMM path, is measured in ``benchmarks/README.md``.

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
    max_epochs : int
        Cap on coordinate-descent epochs per target (``converged`` False where reached); SLAM's
        pixels at C = 10 need 17,000-33,000 (a cap of 2,000 left half the CV solves of
        ``scale_15k.py --accuracy`` above ``tol``, ``benchmarks/README.md``).
    mu : float
        Weight of the augmented-Lagrangian term ``mu/2 (sum beta)^2`` (the squared constant feature).
    warm : SVRBatchSolution.state, optional
        ``(beta, _, nu)`` of a previous solve on the same kernel and targets (e.g. the neighbouring
        ``C`` of a grid); ``beta`` is clipped to the new box.
    seed : int
        Seed of the pass order (the same for every target, whatever the pixel blocks).

    Returns
    -------
    SVRBatchSolution
        ``beta`` (n_target, n), ``intercept`` (n_target,), ``gap`` (libsvm's KKT quantity,
        float64, recomputed from ``beta``), ``n_iter`` = passes over the stars per target
        (a shrunk pass counts in part; rounded up), ``converged``, ``state = (beta, epochs, nu)``.
    """
    kernel = _compiled()
    Y = np.ascontiguousarray(Y, dtype=float)
    P, n = Y.shape
    Cf = np.ascontiguousarray(np.broadcast_to(_as_target_array(C, P, n), (P, n)), dtype=float)
    ef = np.ascontiguousarray(_as_target_array(epsilon, P), dtype=float)[:, 0].copy()
    if np.any(Cf < 0) or np.any(ef < 0):
        raise ValueError("C and epsilon must be non-negative")
    Phi = features(ke)
    QD = np.einsum("ik,ik->i", Phi, Phi) + mu
    beta = np.zeros((P, n)) if warm is None else np.array(warm[0], float, copy=True)
    nu = np.zeros(P) if warm is None else np.array(warm[2], float, copy=True).reshape(P)
    epochs, passes = np.zeros(P, np.int64), np.zeros(P)
    kernel(Phi, QD, Y, Cf, ef, beta, nu, float(tol), float(mu), int(max_epochs), int(seed), epochs, passes)
    gap, b = kkt_gap(beta, Y - ke.matmul(beta), Cf, ef[:, None])
    return SVRBatchSolution(beta=beta, intercept=b, gap=gap, n_iter=np.ceil(passes).astype(int),
                            converged=gap <= tol, state=(beta, epochs.reshape(P, 1).astype(float), nu))

"""Dual coordinate descent for epsilon-SVRs on a low-rank (Nystrom) kernel: passes that do not grow with n.

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
passes.

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

__all__ = ["features", "solve_svr_dcd"]

_KERNEL = None


def _compiled():
    """The numba-compiled solver (compiled once per process, cached on disk)."""
    global _KERNEL
    if _KERNEL is None:
        try:
            import numba
        except ImportError as exc:                      # one line, naming the option
            raise ImportError("SLAM(solver='dcd') needs numba (pip install 'mdslam[scale]'); "
                              "solver='admm' runs without it") from exc
        _KERNEL = numba.njit(nogil=True, cache=True, fastmath=False)(_dcd_pixels)
    return _KERNEL


def _dcd_pixels(Phi, QD, Y, C, eps, beta, nu, tol, mu, max_epochs, seed, epochs, passes):
    """Solve the pixels ``p`` of ``Y`` (P, n) one after another; ``beta`` (P, n), ``nu`` (P,) in/out.

    ``epochs[p]``: coordinate-descent passes run; ``passes[p]``: coordinates visited / n
    (shrunk passes count in part), float.  Plain Python/NumPy; compiled by :func:`_compiled`.
    """
    n, r = Phi.shape
    P = Y.shape[0]
    INF = 1e300
    w = np.zeros(r)
    idx = np.empty(n, np.int64)
    for p in range(P):
        e = eps[p]
        # w = Phi^T beta, s = sum beta; the stars of this pixel (C_i > 0)
        w[:] = 0.0
        s = 0.0
        n_use = 0
        for i in range(n):
            if C[p, i] > 0.0:
                idx[n_use] = i
                n_use += 1
                bi = min(max(beta[p, i], -C[p, i]), C[p, i])
                beta[p, i] = bi
                if bi != 0.0:
                    s += bi
                    for k in range(r):
                        w[k] += bi * Phi[i, k]
            else:
                beta[p, i] = 0.0
        active = n_use
        gmax_old = INF
        state = np.uint64(seed) * np.uint64(2654435761) + np.uint64(88172645463325252)
        visited = 0
        ep = 0
        while ep < max_epochs:
            # shuffle the active set (xorshift64: the same sequence whatever the block layout)
            for j in range(active - 1, 0, -1):
                state ^= state << np.uint64(13)
                state ^= state >> np.uint64(7)
                state ^= state << np.uint64(17)
                t = np.int64(state % np.uint64(j + 1))
                idx[j], idx[t] = idx[t], idx[j]
            LB = -INF
            UB = INF
            gmax_new = 0.0
            c = nu[p] + mu * s
            j = 0
            while j < active:
                i = idx[j]
                G = -Y[p, i] + c
                for k in range(r):
                    G += w[k] * Phi[i, k]
                Ci = C[p, i]
                bi = beta[p, i]
                Gp = G + e
                Gn = G - e
                viol = 0.0
                if bi == 0.0:
                    if Gp < 0.0:
                        viol = -Gp
                    elif Gn > 0.0:
                        viol = Gn
                    elif Gp > gmax_old and Gn < -gmax_old:
                        active -= 1
                        idx[j], idx[active] = idx[active], idx[j]
                        continue
                elif bi >= Ci:
                    if Gp > 0.0:
                        viol = Gp
                    elif Gp < -gmax_old:
                        active -= 1
                        idx[j], idx[active] = idx[active], idx[j]
                        continue
                elif bi <= -Ci:
                    if Gn < 0.0:
                        viol = -Gn
                    elif Gn > gmax_old:
                        active -= 1
                        idx[j], idx[active] = idx[active], idx[j]
                        continue
                elif bi > 0.0:
                    viol = abs(Gp)
                else:
                    viol = abs(Gn)
                gmax_new = max(gmax_new, viol)
                # libsvm's bounds on b (h = -G; shift-invariant): lower from I_low, upper from I_up
                if bi < Ci:
                    lo = -G + e if bi < 0.0 else -G - e
                    LB = max(LB, lo)
                if bi > -Ci:
                    up = -G - e if bi > 0.0 else -G + e
                    UB = min(UB, up)
                # one-variable Newton step (exact minimiser on the box)
                H = QD[i]
                if Gp < H * bi:
                    d = -Gp / H
                elif Gn > H * bi:
                    d = -Gn / H
                else:
                    d = -bi
                nb = min(max(bi + d, -Ci), Ci)
                d = nb - bi
                if d != 0.0:
                    beta[p, i] = nb
                    s += d
                    c += mu * d
                    for k in range(r):
                        w[k] += d * Phi[i, k]
                j += 1
            visited += active
            ep += 1
            gap = max(LB - UB, 0.0) if (LB > -INF and UB < INF) else 0.0
            if gap > tol:
                gmax_old = gmax_new if gmax_new > 0.0 else INF
                continue
            if active < n_use:                              # converged on the active set: recheck all
                active = n_use
                gmax_old = INF
                continue
            # fresh float64 pass: libsvm's gap over every star, and the equality residual
            LB = -INF
            UB = INF
            for jj in range(n_use):
                i = idx[jj]
                h = Y[p, i]
                for k in range(r):
                    h -= w[k] * Phi[i, k]
                bi = beta[p, i]
                if bi < C[p, i]:
                    LB = max(LB, h + e if bi < 0.0 else h - e)
                if bi > -C[p, i]:
                    UB = min(UB, h - e if bi > 0.0 else h + e)
            visited += n_use
            gap = max(LB - UB, 0.0) if (LB > -INF and UB < INF) else 0.0
            if gap <= tol and abs(s) <= tol:
                break
            if abs(s) > tol:
                nu[p] += mu * s                             # method of multipliers
            gmax_old = INF
        epochs[p] = ep
        passes[p] = visited / max(n_use, 1)
    return 0


def features(ke: KernelEig) -> np.ndarray:
    """Features ``Phi`` (n, r) of a low-rank kernel, ``K~ = Phi Phi^T = U diag(lam) U^T``, C-ordered float64."""
    return np.ascontiguousarray(ke.U * np.sqrt(ke.lam))


def solve_svr_dcd(ke: KernelEig, Y: np.ndarray, C, epsilon, *, tol: float = 1e-3, max_epochs: int = 2000,
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
        Cap on coordinate-descent passes per target (``converged`` False where reached).
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

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
element-wise; with numba installed it and the KKT check's bounds run as single
compiled passes, bit-identical to the NumPy passes used without it.  Iterations run in float32 by default and every target is
checked in float64 against libsvm's own stopping rule: the KKT gap
``max_{i in I_low} (y_i - f_i) - min_{i in I_up} (y_i - f_i) <= tol`` (the
"maximal violating pair" gap, with ``f`` without ``b``), so a solution
accepted here is at least as converged as libsvm's at the same ``tol``
(sklearn's default is 1e-3).  Targets that converge leave the batch.

Per-sample weights: ``C`` may be given per target *and* per sample, shape
``(n_target, n)``.  ``C_i = 0`` removes sample ``i`` from that target's
problem exactly (libsvm's ``sample_weight`` semantics); SLAM uses it for
masked training pixels.

Large training sets: :func:`nystrom_kernel` gives a low-rank kernel
``K~ = U diag(lam) U^T`` (``KernelEig.K is None``) that every solver here accepts;
the products with ``K`` become ``O(n r)`` and no ``n x n`` matrix is formed.  The
problem solved is then the SVR with kernel ``K~``, an approximation whose error
against the exact SVR is measured in ``benchmarks/README.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Largest ``n`` for which the ADMM linear step uses dense ``(K + rho I)^-1`` matrices (float32:
#: ``4 n^2`` bytes per penalty level) instead of the eigenbasis.
DENSE_STEP_MAX_N = 4000

__all__ = ["rbf_kernel", "squared_distances", "KernelEig", "nystrom_kernel", "SVRBatchSolution", "kkt_gap", "solve_svr_batch", "polish_svr_batch",
           "solve_svr_staged", "solve_svr_exact"]


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
    d2 = squared_distances(A, B)
    np.multiply(d2, -gamma, out=d2)
    return np.exp(d2, out=d2)


def squared_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``|a - b|^2`` of every pair, summed dimension by dimension from differences (no cancellation).

    Parameters
    ----------
    A : (n_a, n_dim) array
    B : (n_b, n_dim) array

    Returns
    -------
    (n_a, n_b) float64 array, the squared distances of :func:`rbf_kernel` (the same numbers
    wherever they are computed: the sum runs over the dimensions in order, in two buffers).
    """
    A = np.asarray(A, float)
    Bt = np.ascontiguousarray(np.asarray(B, float).T)          # (n_dim, n_b): contiguous columns
    d2 = np.zeros((A.shape[0], Bt.shape[1]))
    if A.shape[1] == 0:
        return d2
    np.subtract(A[:, 0, None], Bt[0], out=d2)
    np.multiply(d2, d2, out=d2)
    buf = np.empty_like(d2)
    for k in range(1, A.shape[1]):
        np.subtract(A[:, k, None], Bt[k], out=buf)
        np.multiply(buf, buf, out=buf)
        d2 += buf
    return d2


@dataclass
class KernelEig:
    """A kernel matrix with its truncated eigen decomposition, exact or low rank (Nystrom).

    Attributes
    ----------
    K : (n, n) float64 kernel matrix, or None for a low-rank kernel
        ``K~ = U diag(lam) U^T`` (see :func:`nystrom_kernel`), which is then the
        kernel of the problem solved.
    lam : (r,) eigenvalues kept (``lam > rel_cut * lam.max()``).
    U : (n, r) orthonormal eigenvectors.
    landmarks : (m,) int array or None
        Low rank only: indices of the ``m`` training points (Nystrom landmarks)
        over which the fitted function is an exact kernel expansion.
    factor : (m, n) array or None
        Low rank only: ``L^T`` of the pivoted Cholesky factor, ``K~ = L L^T``.
    cache : dict
        Matrices derived from the kernel by the solvers (the dense ADMM steps), shared by
        every solve on it.
    """

    K: np.ndarray | None
    lam: np.ndarray
    U: np.ndarray
    landmarks: np.ndarray | None = None
    factor: np.ndarray | None = None
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_kernel(cls, K: np.ndarray, rel_cut: float = 1e-12) -> KernelEig:
        """Decompose ``K``; eigenvalues below ``rel_cut * max`` are dropped.

        Dropping them changes the fitted function by at most
        ``lam_cut * |beta|`` (~1e-5 for rel_cut = 1e-10, C = 10 and 800
        samples), far below the solver tolerance; the KKT gap is always
        computed with the full ``K``.
        """
        K = np.asarray(K, float)
        lam, U = np.linalg.eigh(K)
        keep = lam > rel_cut * max(lam.max(), 1e-300)
        return cls(K=K, lam=lam[keep].copy(), U=np.ascontiguousarray(U[:, keep]))

    def matmul(self, B: np.ndarray) -> np.ndarray:
        """``B K`` for dual coefficients ``B`` (P, n), in the dtype of ``B``; (P, n)."""
        if self.K is not None:
            return B @ (self.K if B.dtype == self.K.dtype else self.K.astype(B.dtype))
        U = self.U.astype(B.dtype, copy=False)
        return ((B @ U) * self.lam.astype(B.dtype)) @ U.T

    def expansion(self, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Kernel-expansion coefficients of the fitted functions.

        Parameters
        ----------
        beta : (P, n) dual coefficients.

        Returns
        -------
        coef : (P, m) array and index : (m,) int array, such that
            ``f(x) = sum_j coef[:, j] k(x_index[j], x) + b`` with the *exact*
            kernel ``k``: for an exact kernel ``coef = beta`` over all ``n``
            points; for a Nystrom kernel ``coef = W^-1 K_mn beta`` over the
            landmarks (``W`` their kernel matrix), which is the Nystrom
            function ``sum_i beta_i k~(x_i, x)`` exactly.
        """
        if self.K is not None or self.landmarks is None:
            return beta, np.arange(self.U.shape[0])
        from scipy.linalg import solve_triangular

        Lmm = self.factor[:, self.landmarks].T                 # lower triangular (m, m)
        coef = solve_triangular(Lmm, self.factor @ np.asarray(beta, float).T, lower=True, trans="T")
        return np.ascontiguousarray(coef.T), self.landmarks


def nystrom_kernel(X: np.ndarray, gamma: float, max_rank: int, tol: float = 1e-6,
                   rel_cut: float = 1e-12) -> KernelEig:
    """Low-rank (Nystrom) RBF kernel by greedy pivoted Cholesky: the approximate path for large ``n``.

    Landmarks are chosen one at a time as the training point worst represented
    by the landmarks so far (largest residual diagonal ``K_ii - K~_ii``), until
    ``max_rank`` landmarks or a largest residual diagonal <= ``tol``.  The result
    ``K~ = K_nm W^-1 K_mn`` (``W`` = the landmarks' kernel matrix) is positive
    semi-definite, reproduces the landmarks' rows of ``K`` exactly, and
    ``|K_ij - K~_ij| <= max_i (K_ii - K~_ii)`` for all ``i, j``.  Cost
    ``O(n m^2)`` time and ``O(n m)`` memory instead of ``O(n^3)`` and ``O(n^2)``;
    an ADMM iteration of :func:`solve_svr_batch` then costs ``O(n m)`` per target.

    Parameters
    ----------
    X : (n, n_dim) array
        Training points (standardised labels).
    gamma : float
        RBF width, as in :func:`rbf_kernel`.
    max_rank : int
        Largest number of landmarks ``m``.
    tol : float
        Stop when every residual diagonal is <= ``tol`` (kernel units; the RBF diagonal is 1).
    rel_cut : float
        Eigenvalues of ``K~`` below ``rel_cut * max`` are dropped.

    Returns
    -------
    KernelEig with ``K = None``, ``lam``, ``U`` of ``K~``, ``landmarks`` and ``factor``.
    """
    X = np.asarray(X, float)
    n = X.shape[0]
    if max_rank < 1:
        raise ValueError(f"max_rank={max_rank}: need at least one landmark")
    m = min(int(max_rank), n)
    Lt = np.zeros((m, n))
    d = np.ones(n)                                        # residual diagonal (RBF: k(x, x) = 1)
    piv = np.zeros(m, int)
    for j in range(m):
        p = int(np.argmax(d))
        if d[p] <= tol:
            m = j
            break
        piv[j] = p
        col = rbf_kernel(X[p:p + 1], X, gamma)[0]
        if j:
            col -= Lt[:j, p] @ Lt[:j]
        col /= np.sqrt(d[p])
        Lt[j] = col
        d -= col * col
        d[piv[:j + 1]] = 0.0
    Lt, piv = Lt[:m], piv[:m]
    s2, Q = np.linalg.eigh(Lt @ Lt.T)                     # K~ = L L^T = U diag(s2) U^T, U = L Q / s
    keep = s2 > rel_cut * max(s2.max(), 1e-300)
    U = (Lt.T @ Q[:, keep]) / np.sqrt(s2[keep])
    return KernelEig(K=None, lam=s2[keep].copy(), U=np.ascontiguousarray(U), landmarks=piv, factor=Lt)


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
    # lo = h + eps where beta < 0 else h - eps, excluded (-inf) at the upper bound; up mirrored
    big = 1e30
    LB, UB = _bounds_on_b(beta, h, C, eps, big)
    LB[LB < -0.1 * big] = -np.inf
    UB[UB > 0.1 * big] = np.inf
    gap = np.maximum(LB - UB, 0.0)
    fl, fu = np.isfinite(LB), np.isfinite(UB)
    with np.errstate(invalid="ignore"):                 # inf - inf in the branch np.where discards
        b = np.where(fl & fu, 0.5 * (LB + UB), np.where(fl, LB, np.where(fu, UB, 0.0)))
    gap = np.where(fl & fu, gap, 0.0)
    gap = np.maximum(gap, np.abs(beta.sum(axis=1)))
    return gap, b


def _bounds_on_b(beta, h, C, eps, big: float) -> tuple[np.ndarray, np.ndarray]:
    """Per target the largest lower and smallest upper bound on the intercept (:func:`kkt_gap`).

    One compiled pass (:func:`_bounds_pass`) where numba is installed and the four arrays
    share a dtype, else NumPy passes; the same values (bounds excluded at the box: ``-big``
    and ``+big`` in NumPy, skipped in the compiled pass; NaN propagates in both).
    """
    fused = _compiled("bounds")
    if (fused is not None and beta.ndim == h.ndim == C.ndim == eps.ndim == 2 and eps.shape[1] == 1
            and C.shape[1] in (1, beta.shape[1]) and beta.dtype == h.dtype == C.dtype == eps.dtype):
        LB = np.empty(beta.shape[0], beta.dtype)
        UB = np.empty_like(LB)
        fused(beta, h, C, eps, LB, UB)
        return LB, UB
    # branch-free (np.where and masked assignment on these unpredictable masks are 3-10x slower)
    two_eps = 2 * eps
    lo = h - eps
    lo += (beta < 0) * two_eps
    lo -= (beta >= C) * big
    up = h + eps
    up -= (beta > 0) * two_eps
    up += (beta <= -C) * big
    return lo.max(axis=1), up.min(axis=1)


def _bounds_pass(beta, h, C, eps, LB, UB):
    """The compiled pass of :func:`_bounds_on_b`: ``LB``, ``UB`` (P,) filled in place."""
    P, n = beta.shape
    cs = 1 if C.shape[1] > 1 else 0
    for p in range(P):
        e = eps[p, 0]
        two_e = e + e                                 # (2 * e would be float64 in numba)
        lb = -np.inf
        ub = np.inf
        for j in range(n):
            bj = beta[p, j]
            cj = C[p, j * cs]
            hj = h[p, j]
            if hj != hj:                              # NaN, as NumPy's max / min give it
                lb = ub = hj
                break
            if not bj >= cj:
                lo = hj - e
                if bj < 0:
                    lo += two_e
                if lo > lb or lo != lo:
                    lb = lo
            if not bj <= -cj:
                up = hj + e
                if bj > 0:
                    up -= two_e
                if up < ub or up != up:
                    ub = up
        LB[p] = lb
        UB[p] = ub


def _as_target_array(v, P: int, n: int | None = None) -> np.ndarray:
    v = np.asarray(v, float)
    if n is not None and v.ndim == 2:
        return np.broadcast_to(v, (P, n))
    return np.broadcast_to(v.reshape(-1, 1) if v.ndim else v, (P, 1))


def _start_state(Cfull: np.ndarray, n: int, rho0: float | None, warm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADMM start (z, u, rho) per target for ``n`` samples: a warm state clipped to the box, or
    zeros and ``rho0`` (None: ``0.1 / max_i C_i`` per target, clipped to [3e-4, 1])."""
    P = Cfull.shape[0]
    if warm is not None:
        z0, u0, r0 = (np.array(a, float) for a in warm)
        return np.clip(z0, -Cfull, Cfull), u0, r0
    if rho0 is None:
        r0 = np.clip(0.1 / np.maximum(Cfull.max(axis=1), 1e-12), 3e-4, 1.0)
    else:
        r0 = np.full(P, float(rho0))
    return np.zeros((P, n)), np.zeros((P, n)), r0


def warm_state_on_rows(state: tuple, rows_from: np.ndarray, rows_to: np.ndarray,
                       C) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ADMM state ``(z, u, rho)`` of solves on the samples ``rows_from``, moved to the samples ``rows_to``.

    Parameters
    ----------
    state : (z, u, rho)
        ``z``, ``u`` (P, len(rows_from)), ``rho`` (P,): :attr:`SVRBatchSolution.state`.
    rows_from, rows_to : int arrays
        Indices of the two solves' samples in one data set (e.g. two CV folds' training stars).
    C : float, (P,) or (P, len(rows_to)) array
        Box of the new solves.

    Returns
    -------
    (z, u, rho) for :func:`solve_svr_batch`'s ``warm``: the shared samples' entries, 0 on the
    samples new in ``rows_to``; ``z`` clipped to ``[-C, C]``.
    """
    pos = np.full(int(max(rows_from.max(), rows_to.max())) + 1, -1)
    pos[rows_from] = np.arange(rows_from.size)
    j = pos[rows_to]
    shared = j >= 0
    z, u, rho = (np.asarray(a, float) for a in state)
    Cf = _as_target_array(C, z.shape[0], rows_to.size)
    z1 = np.where(shared, z[:, np.maximum(j, 0)], 0.0)
    return np.clip(z1, -Cf, Cf), np.where(shared, u[:, np.maximum(j, 0)], 0.0), rho.copy()


def _empty_phase_result(P: int, n: int) -> list[np.ndarray]:
    """Per-target outputs of an ADMM phase: beta, b, gap, n_iter, z, u, rho."""
    return [np.zeros((P, n)), np.zeros(P), np.full(P, np.inf), np.zeros(P, int),
            np.zeros((P, n)), np.zeros((P, n)), np.zeros(P)]


def solve_svr_batch(ke: KernelEig, Y: np.ndarray, C, epsilon, *, tol: float = 1e-3, max_iter: int = 20000,
                    rho0: float | None = None, alpha: float = 1.6, check_every: int = 10, adapt_every: int = 50,
                    dtype=np.float32, warm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    first_check: int = 0) -> SVRBatchSolution:
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
        Initial penalty (None: ``0.1 / max_i C_i``, clipped to [3e-4, 1]: the best start scales as 1/C, a poor
        one costs up to 5x the iterations), over-relaxation, KKT-check and ``rho``-rebalancing periods.
    dtype : numpy dtype
        Arithmetic of the iterations (float32 by default: twice as fast). The KKT gap is always
        checked in float64; targets that float32 cannot bring below ``tol`` continue in float64.
    warm : (z, u, rho), optional
        State of a previous solve on the same kernel (e.g. a neighbouring ``C``) to start from.
    first_check : int
        Iterations before the first KKT check (then every ``check_every``): from a cold start no
        SLAM pixel reaches libsvm's tolerance before ~50 iterations.

    Returns
    -------
    SVRBatchSolution
    """
    Y = np.asarray(Y, float)
    P, n = Y.shape
    Cfull = np.ascontiguousarray(_as_target_array(C, P, n))
    efull = np.ascontiguousarray(_as_target_array(epsilon, P))
    if np.any(Cfull < 0) or np.any(efull < 0):
        raise ValueError("C and epsilon must be non-negative")

    z0, u0, r0 = _start_state(Cfull, n, rho0, warm)
    out = _empty_phase_result(P, n)
    out[6][:] = r0
    remaining = np.arange(P)
    for phase_dtype in ([dtype, np.float64] if np.dtype(dtype) != np.float64 else [np.float64]):
        if remaining.size == 0:
            break
        res = _admm_phase(ke, Y[remaining], Cfull[remaining], efull[remaining],
                          z0[remaining], u0[remaining], r0[remaining], tol, max_iter,
                          alpha, check_every, adapt_every, np.dtype(phase_dtype),
                          first_check if phase_dtype is dtype else 0)
        for k, arr in enumerate(out):                     # beta, b, gap, n_iter, z, u, rho
            if k == 3:
                arr[remaining] += res[k]
            else:
                arr[remaining] = res[k]
        # continue in float64 only those float32 could not finish (and had iterations left)
        gap, nit, z, u, rho = res[2], res[3], res[4], res[5], res[6]
        again = (gap > tol) & (nit < max_iter)
        remaining = remaining[again]
        z0[remaining] = z[again]
        u0[remaining] = u[again]
        r0[remaining] = rho[again]
    out_beta, out_b, out_gap, out_it, out_z, out_u, out_rho = out
    return SVRBatchSolution(beta=out_beta, intercept=out_b, gap=out_gap, n_iter=out_it,
                            converged=out_gap <= tol, state=(out_z, out_u, out_rho))


class _LinearStep:
    """The ADMM linear step on one kernel in arithmetic ``dt``, for every target's ``rho`` at once.

    With ``K = U diag(lam) U^T``, ``x = (K + rho I)^-1 (r - nu 1)`` under ``sum x = 0`` is
    ``x = U (D * U^T r') + r' / rho`` with ``D = 1/(lam + rho) - 1/rho`` and ``r' = r - nu 1``;
    ``nu`` follows from ``sum x = 0`` and ``den = 1^T (K + rho I)^-1 1``.
    """

    #: Penalty levels of the dense step: ``rho`` rounded to ``10**(k / RHO_STEPS)``.
    RHO_STEPS = 4

    def __init__(self, ke: KernelEig, dt: np.dtype):
        self.dt = dt
        self.ke = ke
        self.Ut = ke.U.astype(dt)
        self.UtT = np.ascontiguousarray(self.Ut.T)
        self.Kt = ke.K.astype(dt) if ke.K is not None else None
        self.lam_t = ke.lam.astype(dt)
        self.lam64 = ke.lam.astype(float)
        self.c64 = ke.U.sum(axis=0)
        self.c2 = self.c64 * self.c64
        self.resid = max(float(ke.U.shape[0]) - float(self.c2.sum()), 0.0)   # |1 - U U^T 1|^2
        n, r = ke.U.shape
        # more than n/2 eigenvectors: one (n, n) product with (K + rho I)^-1 per penalty level
        # costs less than the two (n, r) products of the eigenbasis (the penalties are then
        # rounded to levels so that the few matrices are formed once per kernel)
        self.dense = ke.K is not None and 2 * r > n and n <= DENSE_STEP_MAX_N

    def level(self, rh: np.ndarray) -> np.ndarray:
        """Dense step: the penalty level index ``k`` of each ``rh`` (P,), ``rho = 10**(k / RHO_STEPS)``."""
        return np.rint(self.RHO_STEPS * np.log10(rh.astype(float))).astype(int)

    def level_rho(self, k):
        """Dense step: the penalty ``10**(k / RHO_STEPS)`` of level(s) ``k``."""
        return 10.0 ** (k / self.RHO_STEPS)

    def dense_factors(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """``M = (K + rho I)^-1`` (n, n), ``c = M 1`` (n,) and ``den = 1^T M 1`` at level ``k``, in ``dt``.

        ``K`` is the truncated ``U diag(lam) U^T`` of the eigen step (same operator); the
        matrices are kept on the kernel (``KernelEig.cache``) for every later solve.
        """
        key = ("dense", np.dtype(self.dt).str, int(k))
        hit = self.ke.cache.get(key)
        if hit is None:
            rho = self.level_rho(k)
            U = self.ke.U
            D = -self.lam64 / (rho * (self.lam64 + rho))               # 1/(lam+rho) - 1/rho
            M = (U * D) @ U.T
            M[np.diag_indices_from(M)] += 1.0 / rho
            c = U @ (self.c64 / (self.lam64 + rho)) + (1.0 - U @ self.c64) / rho
            den = float(self.resid / rho + (self.c2 / (self.lam64 + rho)).sum())
            hit = (M.astype(self.dt), c.astype(self.dt), den)
            self.ke.cache[key] = hit
        return hit

    def kmul(self, B: np.ndarray) -> np.ndarray:
        """``B K`` in the working precision (low rank: ``U (lam * U^T B)``, O(n r)); (P, n)."""
        if self.Kt is not None:
            return B @ self.Kt
        return ((B @ self.Ut) * self.lam_t) @ self.UtT

    def factors(self, rh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``D`` (P, r), ``D * c`` (P, r) and ``den`` (P,) for penalties ``rh`` (P,), in ``dt``.

        Computed in float64 and in forms without cancellation (for small rho the naive
        ``n/rho + sum D c^2`` loses all digits).
        """
        lam64, r64 = self.lam64, rh.astype(float)[:, None]
        D = -lam64[None, :] / (r64 * (lam64[None, :] + r64))
        den = self.resid / r64[:, 0] + (self.c2[None, :] / (lam64[None, :] + r64)).sum(axis=1)
        return D.astype(self.dt), (D * self.c64).astype(self.dt), den.astype(self.dt)


class _PhaseState:
    """Per-target arrays of one ADMM phase in the working precision; rows = the targets still running.

    ``active`` indexes the phase's targets; ``Y, C, nC, eps`` are the problem, ``z, u, rho``
    the ADMM state, ``x`` and ``zold`` the last iterate's linear-step output and previous ``z``
    (for the residuals of the ``rho`` adaptation), ``D, Dc, den`` the linear-step factors.
    """

    ROWS = ("active", "Y", "C", "nC", "eps", "z", "u", "rho", "x", "zold", "D", "Dc", "den")

    def __init__(self, lin: _LinearStep, Y, Cf, ef, z, u, rho):
        dt = lin.dt
        self.active = np.arange(Y.shape[0])
        self.Y, self.C, self.eps = Y.astype(dt), Cf.astype(dt), ef.astype(dt)
        self.nC = -self.C
        self.z, self.u = z.astype(dt), u.astype(dt)
        self.x = np.empty_like(self.z)
        self.zold = self.z
        self.set_rho(lin, rho)

    def set_rho(self, lin: _LinearStep, rho: np.ndarray) -> None:
        """New penalties ``rho`` (P,) and their linear-step factors.

        Dense step: ``rho`` is rounded to its level and the rows are sorted by level, so
        that each level's targets are one contiguous block (``groups``: slice, ``M``,
        ``c``, ``den``).
        """
        if not lin.dense:
            self.rho = rho.astype(lin.dt)
            self.D, self.Dc, self.den = lin.factors(self.rho)
            return
        lev = lin.level(rho)
        order = np.argsort(lev, kind="stable")
        if np.any(order[1:] < order[:-1]):
            for name in self.ROWS[:7] + ("x", "zold"):
                setattr(self, name, getattr(self, name)[order])
            lev = lev[order]
        self.rho = lin.level_rho(lev).astype(lin.dt)
        self.D = self.Dc = self.den = np.zeros((lev.size, 0), lin.dt)
        self._group(lin, lev)

    def _group(self, lin: _LinearStep, lev: np.ndarray) -> None:
        """``groups`` of the dense step from the sorted levels ``lev`` (P,)."""
        ks, starts = np.unique(lev, return_index=True)
        ends = np.append(starts[1:], lev.size)[:ks.size]
        self.groups = [(slice(a, b), *lin.dense_factors(k)) for k, a, b in zip(ks, starts, ends, strict=True)]

    def keep(self, keep: np.ndarray, lin: _LinearStep | None = None) -> None:
        """Keep the rows ``keep`` (bool over the running targets) of every array."""
        for name in self.ROWS:
            setattr(self, name, getattr(self, name)[keep])
        if lin is not None and lin.dense:
            self._group(lin, lin.level(self.rho))


def _admm_steps(st: _PhaseState, lin: _LinearStep, a, n_steps: int) -> None:
    """``n_steps`` over-relaxed ADMM iterations of every running target, in place on ``st``.

    With numba the element-wise part of an iteration (over-relaxation, soft threshold, box,
    dual update and the next right-hand side) is one compiled pass (:func:`_prox_pass`),
    bit-identical to the NumPy passes of :func:`_admm_steps_numpy`, which run without it.
    """
    fused = _compiled("prox")
    if fused is None:
        _admm_steps_numpy(st, lin, a, n_steps)
        return
    zt, ut, rh, x = st.z, st.u, st.rho, st.x
    b = 1 - a
    r = zt - ut
    r *= rh[:, None]
    r += st.Y                                         # r = y + rho (z - u)
    znew = np.empty_like(zt)
    for _ in range(n_steps):
        _linear_step(st, lin, r, x)
        fused(x, zt, ut, rh, st.Y, st.C, st.nC, st.eps, a, b, znew, r)
        zt, znew = znew, zt                           # znew now holds the previous z
    st.z, st.u, st.zold = zt, ut, znew


def _linear_step(st: _PhaseState, lin: _LinearStep, r: np.ndarray, x: np.ndarray) -> None:
    """``x = (K + rho I)^-1 (r - nu 1)`` with ``sum x = 0`` per target, in place on ``x`` (``r`` is overwritten)."""
    if lin.dense:
        _dense_step(st.groups, r, x)
        return
    rh, D, Dc, den = st.rho, st.D, st.Dc, st.den
    q = r @ lin.Ut                                    # (P, r)
    nu = (r.sum(axis=1) / rh + np.einsum("pk,pk->p", q, Dc)) / den
    q *= D
    q -= nu[:, None] * Dc
    np.matmul(q, lin.UtT, out=x)
    r -= nu[:, None]
    r /= rh[:, None]
    x += r


def _prox_pass(x, z, u, rh, Y, C, nC, eps, a, b, znew, r):
    """One element-wise pass of an ADMM iteration (compiled by numba; the same operations in the
    same order as :func:`_admm_steps_numpy`): ``v = a x + b z + u``, ``znew`` = ``v`` soft-thresholded
    by ``eps/rho`` and clipped to the box, ``u <- v - znew``, ``r <- (znew - u) rho + y``."""
    P, n = x.shape
    cs = 1 if C.shape[1] > 1 else 0                   # C, nC: (P, n) per sample or (P, 1)
    for p in range(P):
        rp = rh[p]
        t = eps[p, 0] / rp
        mt = -t
        for j in range(n):
            v = x[p, j] * a + b * z[p, j] + u[p, j]
            w = v - max(min(v, t), mt)
            w = max(min(w, C[p, j * cs]), nC[p, j * cs])
            uu = v - w
            znew[p, j] = w
            u[p, j] = uu
            r[p, j] = (w - uu) * rp + Y[p, j]


_COMPILED: dict = {}


def _compiled(name: str):
    """The numba compilation (``nogil``, cached on disk) of ``_prox_pass`` (``"prox"``) or
    ``_bounds_pass`` (``"bounds"``), or None without numba."""
    if name not in _COMPILED:
        try:
            import numba
        except ImportError:
            _COMPILED[name] = None
        else:
            fn = {"prox": _prox_pass, "bounds": _bounds_pass}[name]
            _COMPILED[name] = numba.njit(nogil=True, cache=True)(fn)
    return _COMPILED[name]


def _admm_steps_numpy(st: _PhaseState, lin: _LinearStep, a, n_steps: int) -> None:
    """The iterations of :func:`_admm_steps` in NumPy passes (without numba)."""
    zt, ut, rh, x = st.z, st.u, st.rho, st.x
    Ya, Ca, nCa, ea = st.Y, st.C, st.nC, st.eps
    zold = st.zold
    for _ in range(n_steps):
        r = zt - ut
        r *= rh[:, None]
        r += Ya                                       # r = y + rho (z - u)
        _linear_step(st, lin, r, x)
        v = x * a
        v += (1 - a) * zt
        v += ut
        zold = zt
        t = ea / rh[:, None]
        zt = np.minimum(v, t)                         # (minimum/maximum: 2-4x faster than np.clip)
        np.maximum(zt, -t, out=zt)
        np.subtract(v, zt, out=zt)                    # soft threshold by eps/rho
        np.minimum(zt, Ca, out=zt)                    # box
        np.maximum(zt, nCa, out=zt)
        ut = v
        ut -= zt
    st.z, st.u, st.zold = zt, ut, zold


def _dense_step(groups: list, r: np.ndarray, x: np.ndarray) -> None:
    """``x = M (r - nu 1)`` with ``sum x = 0`` for each penalty level's block of rows, in place on ``x``.

    ``groups``: (slice, ``M`` (n, n), ``c = M 1`` (n,), ``den = 1^T c``) per level; ``r``, ``x`` (P, n);
    ``nu = c^T r / den`` (``M`` symmetric).  ``r`` is overwritten by ``r - nu 1``.
    """
    for sl, M, c, den in groups:
        rs = r[sl]
        rs -= ((rs @ c) / den)[:, None]
        np.matmul(rs, M, out=x[sl])


def _admm_check(st: _PhaseState, lin: _LinearStep, ke: KernelEig, Y, Cf, ef, tol: float, it: int,
                max_iter: int, best_gap: np.ndarray, stall: np.ndarray):
    """KKT check of the running targets: which leave the batch, with their float64 solution.

    The gap is computed in the working precision; candidates are confirmed in float64 (a
    float32 "yes" that float64 contradicts goes on, unless stalled: float32 rounding floor).
    ``best_gap`` and ``stall`` (per phase target) are updated in place.

    Returns
    -------
    done : (n_active,) bool; z64 : (n_done, n) float64 or None; gap, b : (n_active,) float64
    (meaningful where ``done``).
    """
    active, f32 = st.active, lin.dt != np.float64
    h = st.Y - lin.kmul(st.z)
    gap, b = kkt_gap(st.z, h, st.C, st.eps)
    improved = gap < 0.5 * best_gap[active]
    best_gap[active] = np.minimum(best_gap[active], gap)
    stall[active] = np.where(improved, 0, stall[active] + 1)
    done = (gap <= tol) | (it >= max_iter)
    if f32:
        done |= stall[active] >= 30                   # float32 rounding floor: hand over
    z64 = None
    if done.any():
        z64 = st.z[done].astype(float)
        h64 = Y[active[done]] - ke.matmul(z64)
        gap64, b64 = kkt_gap(z64, h64, Cf[active[done]], ef[active[done]])
        if f32:                                       # float32 said yes but float64 says no: go on
            retry = (gap64 > tol) & (it < max_iter) & (stall[active[done]] < 30)
            if retry.any():
                done_idx = np.flatnonzero(done)
                done[done_idx[retry]] = False
                z64, gap64, b64 = z64[~retry], gap64[~retry], b64[~retry]
        gap = np.full(active.size, np.inf)
        b = np.zeros(active.size)
        gap[done] = gap64
        b[done] = b64
    return done, z64, gap, b


def _admm_adapt_rho(st: _PhaseState, lin: _LinearStep) -> None:
    """OSQP-style rebalancing of primal and dual residuals, per target, in place on ``st``.

    ``rho`` changes by the square root of their ratio (clipped to [0.2, 5]) where that is
    outside [0.5, 2]; the scaled dual ``u`` and the linear-step factors follow.
    """
    x, zt, ut, rh, zold, Ya = st.x, st.z, st.u, st.rho, st.zold, st.Y
    rp = np.abs(x - zt).max(axis=1) / np.maximum(
        np.maximum(np.abs(x).max(axis=1), np.abs(zt).max(axis=1)), 1e-30)
    rd = rh * np.abs(zt - zold).max(axis=1) / np.maximum(
        np.maximum(rh * np.abs(ut).max(axis=1), np.abs(Ya).max(axis=1)), 1e-30)
    fac = np.sqrt(rp / np.maximum(rd, 1e-30))
    fac = np.clip(fac, 0.2, 5.0)
    fac = np.where((fac > 2.0) | (fac < 0.5), fac, 1.0).astype(lin.dt)
    if np.any(fac != 1):
        rho_new = np.clip(rh * fac, 1e-4, 1e4)
        if lin.dense:                                 # u scales with the level actually used
            ut *= (rh / lin.level_rho(lin.level(rho_new)).astype(lin.dt))[:, None]
        else:
            ut /= fac[:, None]
        st.set_rho(lin, rho_new)


def _store_phase(out: list, idx: np.ndarray, z64: np.ndarray, b, gap, it: int, u, rho) -> None:
    """Write finished targets ``idx`` into the phase outputs (beta, b, gap, n_iter, z, u, rho)."""
    out_beta, out_b, out_gap, out_it, out_z, out_u, out_rho = out
    out_beta[idx] = z64
    out_b[idx] = b
    out_gap[idx] = gap
    out_it[idx] = it
    out_z[idx] = z64
    out_u[idx] = u
    out_rho[idx] = rho


def _admm_phase(ke, Y, Cf, ef, z, u, rho, tol, max_iter, alpha, check_every,
                adapt_every, dt, first_check=0):
    """ADMM iterations in arithmetic ``dt``; returns float64 results per target.

    A target leaves the batch when its float64 KKT gap is <= tol, or when it
    stops improving in float32 (rounding floor), or at ``max_iter``.  Returns the
    list (beta, b, gap, n_iter, z, u, rho) of :func:`_empty_phase_result`.
    """
    P, n = Y.shape
    out = _empty_phase_result(P, n)
    if P == 0:
        return out
    lin = _LinearStep(ke, dt)
    st = _PhaseState(lin, Y, Cf, ef, z, u, rho)
    a = dt.type(alpha)
    best_gap = np.full(P, np.inf)
    stall = np.zeros(P, int)
    it = 0
    while st.active.size and it < max_iter:
        n_inner = check_every if it >= first_check else max(check_every, first_check - it)
        n_steps = min(n_inner, max_iter - it)
        _admm_steps(st, lin, a, n_steps)
        it += n_steps
        done, z64, gap, b = _admm_check(st, lin, ke, Y, Cf, ef, tol, it, max_iter, best_gap, stall)
        if done.any():
            _store_phase(out, st.active[done], z64, b[done], gap[done], it, st.u[done], st.rho[done])
            st.keep(~done, lin)
        if st.active.size and adapt_every and it % adapt_every == 0:
            _admm_adapt_rho(st, lin)
    if st.active.size:  # hit max_iter inside the inner loop
        z64 = st.z.astype(float)
        h = Y[st.active] - ke.matmul(z64)
        gap, b = kkt_gap(z64, h, Cf[st.active], ef[st.active])
        _store_phase(out, st.active, z64, b, gap, it, st.u, st.rho)
    return out


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
    exactly (primal-dual active-set / semismooth Newton, OSQP's "polish");
    each further step re-splits the sets at the Newton iterate before it is
    clipped to the box.  A target keeps the polished solution only if its KKT gap went down, so
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
        beta_n, b = _reduced_kkt_solve(ke, Yt, beta, fp, fm, et[:, 0])
        beta = np.clip(beta_n, -Ct, Ct)
        h = Yt - ke.matmul(beta)
        gap, bmid = kkt_gap(beta, h, Ct, et)
        better = gap < gap_best[todo]
        idx = todo[better]
        beta_best[idx] = beta[better]
        b_best[idx] = bmid[better]
        gap_best[idx] = gap[better]
        # next split from the Newton iterate before clipping: v = beta_n - g / rho with
        # g = K beta_n + b - y (on its free set g = -+eps exactly, so a free coefficient that left
        # its box moves to the bound or to zero); split from the clipped iterate instead, a set
        # one or two samples off the optimum's can come back at every step
        if np.array_equal(beta_n, beta):
            hn = h
        else:
            hn = Yt - ke.matmul(beta_n)
        g = -hn + np.where(np.isfinite(b), b, bmid)[:, None]
        v[todo] = beta_n - g * tt
    return SVRBatchSolution(beta=beta_best, intercept=b_best, gap=gap_best, n_iter=sol.n_iter,
                            converged=gap_best <= tol,
                            state=sol.state)


def _reduced_kkt_solve(ke, Y, beta, fp, fm, eps):
    """Solve the free-set KKT systems of many targets (Cholesky of ``K_FF``).

    For target ``p`` with free set ``F`` (``m`` samples) the system is
    ``[[K_FF, 1], [1^T, 0]] [beta_F, b] = [r_F, s]`` with
    ``r_F = y_F - eps s_F - K_FB beta_B`` and ``s = -sum beta_B``.  With the
    Cholesky factor of the positive definite ``K_FF`` this is
    ``beta_F = K_FF^-1 (r_F - b 1)``, ``b = (1^T K_FF^-1 r_F - s) / (1^T K_FF^-1 1)``:
    half the work of an LU of the bordered matrix.  Where the factorisation
    fails (``K_FF`` numerically singular) the bordered system is solved by LU
    (least squares if singular too).  Targets without free samples keep
    ``b = NaN`` (not fixed by the equalities).

    The free sets, right-hand sides and ``s`` of all targets are gathered before the loop,
    which then holds little besides the gather of ``K_FF`` and the two LAPACK calls.
    """
    from scipy.linalg.lapack import dpotrf, dpotrs

    P, n = Y.shape
    b = np.full(P, np.nan)
    rhs_full = Y - eps[:, None] * np.where(fp, 1.0, -1.0) - ke.matmul(beta)
    s_all = -beta.sum(axis=1)
    rows, cols = np.nonzero(fp | fm)
    bounds = np.searchsorted(rows, np.arange(P + 1)).tolist()
    r_all = rhs_full[rows, cols]
    Kflat = ke.K.reshape(-1) if ke.K is not None else None
    for p in range(P):
        lo, hi = bounds[p], bounds[p + 1]
        m = hi - lo
        if m == 0:
            continue
        F = cols[lo:hi]
        # LAPACK's Cholesky directly (scipy's cho_factor/cho_solve call the same routines with
        # ~0.1 ms of argument checks each, a third of the polish on SLAM's problems)
        # one gather from the flat kernel (a third of the time of two axis gathers at m ~ 150)
        KFF = Kflat.take(F[:, None] * n + F) if ke.K is not None else (ke.U[F] * ke.lam) @ ke.U[F].T
        rhs = np.empty((m, 2), order="F")
        rhs[:, 0] = r_all[lo:hi]
        rhs[:, 1] = 1.0
        cf, info = dpotrf(KFF.T, lower=1, clean=0, overwrite_a=1)   # KFF.T: Fortran order, no copy
        if info == 0:
            sol, info = dpotrs(cf, rhs, lower=1, overwrite_b=1)
        s0, den = np.add.reduce(sol, axis=0).tolist() if info == 0 else (0.0, 0.0)
        if den != 0.0:
            bp = (s0 - s_all[p]) / den
            bf = sol[:, 0] - bp * sol[:, 1]          # finite if bp and both column sums are
            ok = math.isfinite(bp) and math.isfinite(s0) and math.isfinite(den)
        else:
            bf, bp = _bordered_solve(ke, F, r_all[lo:hi], s_all[p])
            ok = math.isfinite(bp) and bool(np.isfinite(bf).all())
        if ok:
            beta[p, F] = bf
            b[p] = bp
    return beta, b


def _bordered_solve(ke: KernelEig, F: np.ndarray, r: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """The reduced KKT system of free set ``F`` (m,) by LU of the bordered matrix (least squares if
    singular): ``beta_F`` (m,) and ``b``, for right-hand side ``r`` (m,) and ``s``."""
    m = F.size
    A = np.zeros((m + 1, m + 1))
    A[:m, :m] = ke.K[np.ix_(F, F)] if ke.K is not None else (ke.U[F] * ke.lam) @ ke.U[F].T
    A[:m, m] = 1.0
    A[m, :m] = 1.0
    R = np.append(r, s)
    try:
        S = np.linalg.solve(A, R)
    except np.linalg.LinAlgError:
        S = np.linalg.lstsq(A, R, rcond=None)[0]
    return S[:m], float(S[m])


def solve_svr_staged(
    ke: KernelEig,
    Y: np.ndarray,
    C,
    epsilon,
    *,
    tol: float = 1e-3,
    stops: tuple[int, ...] = (80, 160, 320),
    polish_steps: int = 3,
    max_iter: int = 20000,
    warm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    first_check: int = 50,
) -> SVRBatchSolution:
    """ADMM interleaved with polish attempts: the fast way to libsvm's tolerance.

    ADMM runs until iteration ``stops[0]``; the targets not yet at ``tol`` are
    polished (:func:`polish_svr_batch`; success means the exact optimum);
    the rest continue ADMM to the next stop, and so on, then ADMM alone.
    On SLAM's problems this halves the iterations of the slow pixels.

    Parameters
    ----------
    ke, Y, C, epsilon, tol, max_iter, warm : as for :func:`solve_svr_batch`.
        A warm state from another CV fold's solution (its training stars' entries, 0 on the
        others) or from a neighbouring ``(C, epsilon)`` did not save CPU on the reference
        problem of ``benchmarks/`` (``cv_warm_start.py``): about a third of the stars change set
        between folds, so neither ADMM nor the polish starts closer to the optimum.
    stops : iterations at which to try polishing.
    polish_steps : active-set Newton steps per attempt.
    first_check : int
        Iterations before the first KKT check (capped at ``stops[0]``).

    Returns
    -------
    SVRBatchSolution
    """
    Y = np.asarray(Y, float)
    P, n = Y.shape
    Cf = np.ascontiguousarray(np.broadcast_to(_as_target_array(C, P, n), (P, n)))
    ef = np.ascontiguousarray(_as_target_array(epsilon, P))[:, 0]
    first = stops[0] if stops else max_iter
    sol = solve_svr_batch(ke, Y, Cf, ef, tol=tol, max_iter=first, first_check=min(first_check, first), warm=warm)
    for k in range(len(stops)):
        todo = np.flatnonzero(sol.gap > tol)
        if todo.size == 0:
            break
        sub = SVRBatchSolution(sol.beta[todo], sol.intercept[todo], sol.gap[todo], sol.n_iter[todo],
                               sol.converged[todo], tuple(a[todo] for a in sol.state))
        pol = polish_svr_batch(ke, Y[todo], Cf[todo], ef[todo], sub, steps=polish_steps, tol=tol)
        ok = pol.gap <= tol
        idx = todo[ok]
        sol.beta[idx] = pol.beta[ok]
        sol.intercept[idx] = pol.intercept[ok]
        sol.gap[idx] = pol.gap[ok]
        todo = todo[~ok]
        if todo.size == 0:
            break
        budget = (stops[k + 1] - stops[k]) if k + 1 < len(stops) else max_iter
        z, u, r = sol.state
        cont = solve_svr_batch(ke, Y[todo], Cf[todo], ef[todo], tol=tol, max_iter=budget,
                               warm=(z[todo], u[todo], r[todo]))
        sol.beta[todo] = cont.beta
        sol.intercept[todo] = cont.intercept
        sol.gap[todo] = cont.gap
        sol.n_iter[todo] += cont.n_iter
        for i in range(3):
            sol.state[i][todo] = cont.state[i]
    sol.converged = sol.gap <= tol
    return sol


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
    """Solve to the exact optimum: ADMM and active-set polish, alternated.

    ADMM runs to ``tol``; every target is then polished
    (:func:`polish_svr_batch`), which lands on the exact optimum (KKT gap at
    rounding level) once the sets are identified.  Targets not yet there
    continue ADMM from their state with a 10 times tighter tolerance and are
    polished again, down to ``final_tol``; a last float64 ADMM stage catches
    any remainder.

    Parameters
    ----------
    ke, Y, C, epsilon : as for :func:`solve_svr_batch`.
    tol : float
        KKT gap of the first ADMM stage.
    final_tol : float
        Target KKT gap.
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
    sol = solve_svr_staged(ke, Y, Cf, ef, tol=tol, max_iter=max_iter)
    sol = polish_svr_batch(ke, Y, Cf, ef, sol, tol=final_tol)
    stages = [(dt, t) for t in (tol / 10, tol / 100) for dt in (np.float32,)] + [(np.float64, final_tol)]
    for dt, stage_tol in stages:
        todo = np.flatnonzero(sol.gap > final_tol)
        if todo.size == 0:
            break
        z, u, r = sol.state
        sub = solve_svr_batch(ke, Y[todo], Cf[todo], ef[todo], tol=max(stage_tol, final_tol),
                              max_iter=max_iter, warm=(z[todo], u[todo], r[todo]), dtype=dt)
        sub = polish_svr_batch(ke, Y[todo], Cf[todo], ef[todo], sub, tol=final_tol)
        better = sub.gap < sol.gap[todo]
        idx = todo[better]
        sol.beta[idx] = sub.beta[better]
        sol.intercept[idx] = sub.intercept[better]
        sol.gap[idx] = sub.gap[better]
        sol.n_iter[todo] += sub.n_iter
        for k in range(3):                                # continue from where ADMM got to
            sol.state[k][todo] = sub.state[k]
    sol.converged = sol.gap <= final_tol
    return sol

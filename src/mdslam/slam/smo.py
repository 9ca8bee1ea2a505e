"""libsvm's SMO for many epsilon-SVRs that share one exact kernel matrix.

For one (gamma, CV fold) every pixel's SVR has the same kernel ``K`` (``n x n``,
computed once and shared by all pixels and all ``(C, epsilon)``); libsvm
recomputes kernel rows per pixel.  This module runs libsvm's own algorithm on
that shared matrix: sequential minimal optimisation of the epsilon-SVR dual as
a ``2n``-variable problem (``alpha``, ``alpha*``), two variables per step chosen
by the second-order working-set selection of Fan, Chen & Lin (2005, JMLR 6,
"WSS 3"), the two-variable update of libsvm's ``Solver::Solve``, and libsvm's
stopping rule: the maximal-violating-pair gap ``m(alpha) - M(alpha) < tol``.
That gap is the quantity of :func:`mdslam.svr.kkt_gap` (SMO keeps
``sum beta = 0`` exactly), which the returned ``gap`` recomputes from ``beta``.

Only ``f = K beta`` (``n`` float64, ``beta = alpha - alpha*``) is kept: the
``2n`` gradients are ``+-f_i + epsilon -+ y_i``.  One step reads two kernel rows
to update ``f`` (fused with the next step's first selection pass) and a third
row for the second-order choice: ``O(n)`` per step, no kernel cache.  The kernel
may be read in float32 (``kernel_dtype``): ``f`` and the gradients stay float64.

Per-sample ``C`` (``C_i = 0``: sample ``i`` excluded, libsvm's sample weight)
and warm starts are supported.  :func:`solve_svr_smo_path` solves a ladder of
``C`` values per pixel, each started from the previous solution ("alpha
seeding" along the grid).  :func:`solve_svr_admm_smo` finishes with SMO the
solves that the ADMM path leaves above ``tol`` (at large ``C``).

On SLAM's problems SMO needs many steps (thousands at C = 1-10 and n = 640, up to
~10^6 at C = 1000 and n = 900: the RBF kernels of smooth label sets are nearly
singular), so from zero it is slower than the ADMM path; from ADMM's iterate it is
the fast finish (``benchmarks/README.md``, "SMO on the shared kernel").

The compiled loop needs ``numba`` (the ``scale`` extra); it is imported when a
solve is first asked for, so the rest of the package runs without it.
"""

from __future__ import annotations

import numpy as np

from ..svr import KernelEig, SVRBatchSolution, _as_target_array, kkt_gap
from ._util import numba_compile

__all__ = ["solve_svr_smo", "solve_svr_smo_path", "split_path", "solve_svr_admm_smo"]

_KERNELS: dict = {}
_HELPERS = ("_offsets", "_select_i", "_select_j", "_shrink", "_reconstruct", "_update_pair", "_smo_pixel", "_seed_scale")
#: libsvm's cap on SMO iterations is max(10^7, 100 l); the same here with l = 2n.
_LIBSVM_MAX_ITER = 10_000_000


def _compiled(name: str):
    """The numba-compiled driver ``name`` (compiled once per process, cached on disk)."""
    if name not in _KERNELS:
        _KERNELS[name] = numba_compile("solver='smo'", globals(), _HELPERS, name)
    return _KERNELS[name]


def _offsets(k, y, ap, an, Cv, eps, uy, ly, su, sl):
    """Sample ``k``'s extreme ``-y G`` in ``I_up`` (``uy[k] - f[k]``, variable sign ``su[k]``) and in
    ``I_low`` (``ly[k] - f[k]``, sign ``sl[k]``); excluded: -/+1e300.  Of a sample's two variables
    only the larger (``I_up``) or smaller (``I_low``) value can be chosen by libsvm's rules."""
    if an[k] > 0.0:                                     # alpha*_k in I_up: -y G = h + eps
        uy[k], su[k] = y[k] + eps, -1
    elif ap[k] < Cv[k]:                                 # alpha_k in I_up: -y G = h - eps
        uy[k], su[k] = y[k] - eps, 1
    else:
        uy[k], su[k] = -1e300, 0
    if ap[k] > 0.0:                                     # alpha_k in I_low
        ly[k], sl[k] = y[k] - eps, 1
    elif an[k] < Cv[k]:                                 # alpha*_k in I_low
        ly[k], sl[k] = y[k] + eps, -1
    else:
        ly[k], sl[k] = 1e300, 0
    return 0


def _select_i(uy, f, act, na):
    """First variable (libsvm): the maximum of ``-y G`` over ``I_up`` among ``act[:na]``; ``(Gmax, i)``."""
    Gmax, i = -1e300, -1
    for t in range(na):
        k = act[t]
        v = uy[k] - f[k]
        if v >= Gmax and v > -1e299:
            Gmax, i = v, k
    return Gmax, i


def _select_j(K, Kd, ly, f, i, Gmax, act, na):
    """Second-order choice of the second variable (libsvm's WSS 3) for the first, sample ``i``.

    Returns ``(j, Gmax2)``: sample ``j`` (its variable's sign is ``sl[j]``), ``-1`` if none;
    ``Gmax2 = -M(alpha)``, so that the gap is ``Gmax + Gmax2``.
    """
    Gmax2, best, jsel = -1e300, 0.0, -1
    Kii = Kd[i]
    for t in range(na):
        k = act[t]
        v = ly[k] - f[k]
        if -v > Gmax2:
            Gmax2 = -v
        gd = Gmax - v
        if gd > 0.0:
            quad = Kii + Kd[k] - 2.0 * K[i, k]
            od = gd * gd / (quad if quad > 0.0 else 1e-12)
            if od >= best:
                best, jsel = od, k
    return jsel, Gmax2


def _shrink(y, ap, an, Cv, eps, f, act, na, m, M):
    """libsvm's shrinking: drop from ``act[:na]`` the samples whose both variables are bounded on the side
    that cannot form a violating pair with ``m = max_{I_up}``, ``M = min_{I_low}`` of ``-y G``; new ``na``."""
    t = 0
    while t < na:
        k = act[t]
        h = y[k] - f[k]
        up, lo = ap[k] < Cv[k], ap[k] > 0.0             # alpha_k, -y G = h - eps
        sp = (not (up and lo)) and ((up and h - eps < M) or (lo and h - eps > m) or not (up or lo))
        up, lo = an[k] > 0.0, an[k] < Cv[k]             # alpha*_k, -y G = h + eps
        sn = (not (up and lo)) and ((up and h + eps < M) or (lo and h + eps > m) or not (up or lo))
        if sp and sn:
            na -= 1
            act[t], act[na] = act[na], act[t]
        else:
            t += 1
    return na


def _reconstruct(K, y, ap, an, f, act, na, n_all):
    """``f = K beta`` recomputed for the shrunk samples ``act[na:n_all]``."""
    for t in range(na, n_all):
        k = act[t]
        s = 0.0
        for q in range(y.size):
            bq = ap[q] - an[q]
            if bq != 0.0:
                s += K[k, q] * bq
        f[k] = s
    return 0


def _update_pair(K, Kd, y, ap, an, Cv, eps, f, i, si, j, sj):
    """libsvm's analytic update of the pair ``(i, si), (j, sj)``; returns the changes of ``beta_i, beta_j``."""
    ai = ap[i] if si > 0 else an[i]
    aj = ap[j] if sj > 0 else an[j]
    Ci, Cj = Cv[i], Cv[j]
    Gi = si * f[i] + eps - si * y[i]                    # G = Q alpha + p, p = eps -+ y
    Gj = sj * f[j] + eps - sj * y[j]
    Qij = si * sj * K[i, j]
    oi, oj = ai, aj
    if si != sj:
        quad = Kd[i] + Kd[j] + 2.0 * Qij
        if quad <= 0.0:
            quad = 1e-12
        delta = (-Gi - Gj) / quad
        diff = ai - aj
        ai += delta
        aj += delta
        if diff > 0.0:
            if aj < 0.0:
                aj, ai = 0.0, diff
        elif ai < 0.0:
            ai, aj = 0.0, -diff
        if diff > Ci - Cj:
            if ai > Ci:
                ai, aj = Ci, Ci - diff
        elif aj > Cj:
            aj, ai = Cj, Cj + diff
    else:
        quad = Kd[i] + Kd[j] - 2.0 * Qij
        if quad <= 0.0:
            quad = 1e-12
        delta = (Gi - Gj) / quad
        s = ai + aj
        ai -= delta
        aj += delta
        if s > Ci:
            if ai > Ci:
                ai, aj = Ci, s - Ci
        elif aj < 0.0:
            aj, ai = 0.0, s
        if s > Cj:
            if aj > Cj:
                aj, ai = Cj, s - Cj
        elif ai < 0.0:
            ai, aj = 0.0, s
    if si > 0:
        ap[i] = ai
    else:
        an[i] = ai
    if sj > 0:
        ap[j] = aj
    else:
        an[j] = aj
    return si * (ai - oi), sj * (aj - oj)


def _smo_pixel(K, Kd, y, ap, an, Cv, eps, f, tol, max_iter, shrinking):
    """SMO on one target until ``gap < tol``; ``ap``, ``an``, ``f = K (ap - an)`` updated in place.

    With ``shrinking > 0``, every ``shrinking`` steps the samples that cannot move are left out
    of the passes (libsvm's rule), all are put back once the gap is below ``10 tol``, and the
    optimum on the active samples is confirmed on all before returning.  Returns ``(steps, gap)``.
    """
    n = y.size
    act = np.empty(n, np.int64)
    uy, ly = np.empty(n), np.empty(n)
    su, sl = np.empty(n, np.int64), np.empty(n, np.int64)
    n_all = 0
    for k in range(n):
        _offsets(k, y, ap, an, Cv, eps, uy, ly, su, sl)
        if Cv[k] > 0.0:                                 # samples with C_k = 0 never move
            act[n_all] = k
            n_all += 1
    na, every = n_all, shrinking if shrinking > 0 else n + 1
    counter, unshrunk = every, False
    Gmax, i = _select_i(uy, f, act, na)
    it, gap = 0, 0.0
    while i >= 0 and it < max_iter:
        counter -= 1
        if counter == 0:
            counter = every
            j, Gmax2 = _select_j(K, Kd, ly, f, i, Gmax, act, na)
            if not unshrunk and Gmax + Gmax2 <= 10.0 * tol:
                unshrunk = True
                _reconstruct(K, y, ap, an, f, act, na, n_all)
                na = n_all
            na = _shrink(y, ap, an, Cv, eps, f, act, na, Gmax, -Gmax2)
            Gmax, i = _select_i(uy, f, act, na)
        j, Gmax2 = _select_j(K, Kd, ly, f, i, Gmax, act, na)
        gap = max(Gmax + Gmax2, 0.0)
        if Gmax + Gmax2 < tol or j < 0:
            if na == n_all:
                break
            _reconstruct(K, y, ap, an, f, act, na, n_all)   # optimal on the active set: check on all
            na, counter = n_all, 1
            Gmax, i = _select_i(uy, f, act, na)
            if i < 0:
                break
            j, Gmax2 = _select_j(K, Kd, ly, f, i, Gmax, act, na)
            gap = max(Gmax + Gmax2, 0.0)
            if Gmax + Gmax2 < tol or j < 0:
                break
        dbi, dbj = _update_pair(K, Kd, y, ap, an, Cv, eps, f, i, su[i], j, sl[j])
        it += 1
        ii, jj = i, j
        _offsets(ii, y, ap, an, Cv, eps, uy, ly, su, sl)
        _offsets(jj, y, ap, an, Cv, eps, uy, ly, su, sl)
        Gmax, i = -1e300, -1
        for t in range(na):                             # f += dbeta K[:, (i, j)], fused with the next choice of i
            k = act[t]
            fk = f[k] + dbi * K[ii, k] + dbj * K[jj, k]
            f[k] = fk
            v = uy[k] - fk
            if v >= Gmax:
                Gmax, i = v, k
        if Gmax < -1e299:
            i = -1
    if na < n_all:                                      # stopped at max_iter with samples shrunk
        _reconstruct(K, y, ap, an, f, act, na, n_all)
    return it, gap


def _smo_batch(K, Kd, Y, C, eps, beta, F, tol, max_iter, shrinking, iters, gaps):
    """SMO on every row of ``Y`` (P, n) from ``beta`` (feasible) with ``F = beta K``; all in/out."""
    n = Y.shape[1]
    ap = np.empty(n)
    an = np.empty(n)
    for p in range(Y.shape[0]):
        for k in range(n):
            ap[k] = max(beta[p, k], 0.0)
            an[k] = max(-beta[p, k], 0.0)
        it, gap = _smo_pixel(K, Kd, Y[p], ap, an, C[p], eps[p], F[p], tol, max_iter, shrinking)
        iters[p] += it
        gaps[p] = gap
        for k in range(n):
            beta[p, k] = ap[k] - an[k]
    return 0


def _smo_ladder(K, Kd, Y, W, Cs, eps, seed, beta, F, tol, max_iter, shrinking, iters, gaps):
    """SMO of every row of ``Y`` (P, n) at each ``C = Cs[c] * W[p]``, in the order of ``Cs``.

    ``seed``: 1 starts each ``C`` from the previous solution (kept where ``C`` grows), 2 from
    that solution scaled by ``Cs[c] / Cs[c - 1]``, 0 (and 1 where ``C`` falls) from zero.  Out: ``beta``, ``F`` (P, nC, n), ``iters``, ``gaps`` (P, nC).
    """
    n = Y.shape[1]
    ap = np.zeros(n)
    an = np.zeros(n)
    f = np.zeros(n)
    Cv = np.empty(n)
    for p in range(Y.shape[0]):
        for c in range(Cs.size):
            if c > 0 and seed == 2:
                _seed_scale(ap, an, f, Cs[c] / Cs[c - 1])
            elif not (c > 0 and seed == 1 and Cs[c] >= Cs[c - 1]):
                ap[:] = 0.0
                an[:] = 0.0
                f[:] = 0.0
            for k in range(n):
                Cv[k] = Cs[c] * W[p, k]
            it, gap = _smo_pixel(K, Kd, Y[p], ap, an, Cv, eps[p], f, tol, max_iter, shrinking)
            iters[p, c] = it
            gaps[p, c] = gap
            for k in range(n):
                beta[p, c, k] = ap[k] - an[k]
                F[p, c, k] = f[k]
    return 0


def _seed_scale(ap, an, f, ratio):
    """Scale a solution to a box ``ratio`` times as large (feasible, ``sum beta`` unchanged)."""
    for k in range(ap.size):
        ap[k] *= ratio
        an[k] *= ratio
        f[k] *= ratio
    return 0


def _exact_kernel(ke: KernelEig) -> np.ndarray:
    """``ke.K`` (C-ordered float64); the SMO path needs the exact kernel matrix."""
    if ke.K is None:
        raise ValueError("solver='smo' needs the exact kernel matrix: use it with kernel_rank=None")
    return np.ascontiguousarray(ke.K, dtype=float)


#: Steps between two shrinkings (None: libsvm's min(l, 1000) with l = 2n variables).
SHRINK_EVERY: int | None = None


def _period(shrinking: bool, n: int) -> int:
    """Steps between shrinkings passed to the compiled loop (0: no shrinking)."""
    if not shrinking:
        return 0
    return int(SHRINK_EVERY) if SHRINK_EVERY else min(2 * n, 1000)


def _max_iter(max_iter: int | None, n: int) -> int:
    return int(max_iter) if max_iter is not None else max(_LIBSVM_MAX_ITER, 200 * n)


def _finish(K64, Y, Cf, ef, beta, iters, gaps, tol, max_iter, K, shrinking):
    """float64 check of ``beta`` (P, n); rows above ``tol`` solved on in float64 if ``K`` was float32."""
    gap, b = kkt_gap(beta, Y - beta @ K64, Cf, ef[:, None])
    redo = np.flatnonzero(gap > tol)
    if redo.size and K.dtype != np.float64:
        sub_b = np.ascontiguousarray(beta[redo])
        sub_F = sub_b @ K64
        it2, g2 = np.zeros(redo.size, np.int64), np.zeros(redo.size)
        _compiled("_smo_batch")(K64, np.ascontiguousarray(np.diag(K64)), Y[redo], Cf[redo], ef[redo], sub_b,
                                sub_F, float(tol), int(max_iter), _period(shrinking, Y.shape[1]), it2, g2)
        beta[redo] = sub_b
        iters[redo] += it2
        gaps[redo] = g2
        gap[redo], b[redo] = kkt_gap(sub_b, Y[redo] - sub_b @ K64, Cf[redo], ef[redo, None])
    return gap, b


def _prepare(ke, Y, C, epsilon, kernel_dtype):
    K64 = _exact_kernel(ke)
    Y = np.ascontiguousarray(Y, dtype=float)
    P, n = Y.shape
    Cf = np.ascontiguousarray(np.broadcast_to(_as_target_array(C, P, n), (P, n)), dtype=float)
    ef = np.ascontiguousarray(_as_target_array(epsilon, P), dtype=float)[:, 0].copy()
    if np.any(Cf < 0) or np.any(ef < 0):
        raise ValueError("C and epsilon must be non-negative")
    K = K64 if np.dtype(kernel_dtype) == np.float64 else np.ascontiguousarray(K64, dtype=kernel_dtype)
    return K64, K, np.ascontiguousarray(np.diag(K)), Y, Cf, ef


def solve_svr_smo(ke: KernelEig, Y: np.ndarray, C, epsilon, *, tol: float = 1e-3, max_iter: int | None = None,
                  warm: tuple | None = None, kernel_dtype=np.float64, shrinking: bool = True) -> SVRBatchSolution:
    """Solve ``n_target`` epsilon-SVR duals on a shared exact kernel by libsvm's SMO.

    The same problem, signature and stopping rule as :func:`mdslam.svr.solve_svr_staged`
    (so :class:`mdslam.slam.distribute.BlockRunner` runs it on pixel blocks, in threads:
    the compiled loop releases the GIL).

    Parameters
    ----------
    ke : KernelEig
        Exact kernel of the ``n`` training points (``ke.K`` is used; its eigenpairs are not).
    Y : (n_target, n) array
        Targets (standardised fluxes); entries with ``C == 0`` are ignored.
    C : float, (n_target,) or (n_target, n) array
        Box bounds; per-sample values are sample weights (0 = excluded).
    epsilon : float or (n_target,) array
        Tube half-widths, in the units of ``Y``.
    tol : float
        libsvm's tolerance on the maximal-violating-pair gap (sklearn's default 1e-3).
    max_iter : int, optional
        Cap on SMO steps per target (default libsvm's, ``max(10^7, 200 n)``).
    warm : SVRBatchSolution.state, optional
        ``(beta, ...)`` of a previous solve on the same kernel; ``beta`` is clipped to the new
        box and its sum repaired to 0 (:func:`_feasible`).
    kernel_dtype : numpy dtype
        Precision in which the kernel is read (float32 halves the memory traffic); targets
        whose float64 gap is then above ``tol`` go on with the float64 kernel.
    shrinking : bool
        libsvm's shrinking heuristic (its default): samples that cannot move are left out of
        the passes and put back for the final check, which is always over all samples.

    Returns
    -------
    SVRBatchSolution
        ``beta`` (n_target, n), ``intercept`` (n_target,) (mid-point of libsvm's interval
        for ``b``), ``gap`` (recomputed in float64 from ``beta``), ``n_iter`` = SMO steps,
        ``converged``, ``state = (beta, K beta, m - M)``: the last is the solver's own
        maximal-violating-pair gap over the ``2n`` variables, shape (n_target, 1).
    """
    K64, K, Kd, Y, Cf, ef = _prepare(ke, Y, C, epsilon, kernel_dtype)
    P, n = Y.shape
    mi = _max_iter(max_iter, n)
    beta = np.zeros((P, n)) if warm is None else _feasible(np.array(warm[0], float), Cf)
    F = beta @ K64 if warm is not None else np.zeros((P, n))
    iters, gaps = np.zeros(P, np.int64), np.zeros(P)
    _compiled("_smo_batch")(K, Kd, Y, Cf, ef, beta, F, float(tol), mi, _period(shrinking, Y.shape[1]), iters, gaps)
    gap, b = _finish(K64, Y, Cf, ef, beta, iters, gaps, tol, mi, K, shrinking)
    return SVRBatchSolution(beta=beta, intercept=b, gap=gap, n_iter=iters, converged=gap <= tol,
                            state=(beta, beta @ K64, gaps.reshape(P, 1)))


def _feasible(beta: np.ndarray, Cf: np.ndarray) -> np.ndarray:
    """``beta`` (P, n) clipped to ``[-C, C]`` with ``sum beta = 0`` restored.

    The sum is moved to 0 over the coefficients with room in the needed direction,
    in proportion to that room, so the result stays in the box.
    """
    beta = np.clip(beta, -Cf, Cf)
    s = beta.sum(axis=1, keepdims=True)
    room = np.where(s > 0, beta + Cf, Cf - beta)
    tot = room.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        move = np.where(tot > 0, np.abs(s) / tot, 0.0)
    beta -= np.sign(s) * room * np.minimum(move, 1.0)
    return np.clip(beta, -Cf, Cf)


def solve_svr_smo_path(ke: KernelEig, Y: np.ndarray, C, epsilon, *, Cs, tol: float = 1e-3,
                       max_iter: int | None = None, seed: str = "keep",
                       kernel_dtype=np.float64, shrinking: bool = True) -> SVRBatchSolution:
    """SMO of every target at each ``C`` of a ladder, each seeded from the previous one.

    Parameters
    ----------
    ke, Y, epsilon, tol, max_iter, kernel_dtype, shrinking : as for :func:`solve_svr_smo`.
    C : float, (n_target,) or (n_target, n) array
        Per-sample weights ``w``: the box of ladder step ``c`` is ``Cs[c] * w``.
    Cs : (n_C,) array
        The ``C`` values, solved in this order (ascending is the natural seeding order).
    seed : "keep", "scale" or "none"
        Alpha seeding: start step ``c`` from step ``c - 1``'s solution, as it is ("keep",
        feasible where ``C`` grows; a falling step starts from zero) or times
        ``Cs[c] / Cs[c - 1]`` ("scale", feasible for any ratio); "none": every step from zero.

    Returns
    -------
    SVRBatchSolution
        With a ladder axis after the target axis: ``beta`` (n_target, n_C, n), ``intercept``,
        ``gap``, ``n_iter``, ``converged`` (n_target, n_C); ``state`` holds ``beta`` three
        times (no warm state for later solves).  :func:`split_path` cuts it per ``C``.
    """
    K64, K, Kd, Y, W, ef = _prepare(ke, Y, C, epsilon, kernel_dtype)
    P, n = Y.shape
    Cs = np.asarray(Cs, float).ravel()
    modes = {"none": 0, "keep": 1, "scale": 2}
    if seed not in modes:
        raise ValueError(f"seed={seed!r}: must be 'keep', 'scale' or 'none'")
    mi = _max_iter(max_iter, n)
    beta, F = np.zeros((P, Cs.size, n)), np.zeros((P, Cs.size, n))
    iters, gaps = np.zeros((P, Cs.size), np.int64), np.zeros((P, Cs.size))
    _compiled("_smo_ladder")(K, Kd, Y, W, Cs, ef, modes[seed], beta, F, float(tol), mi,
                             _period(shrinking, Y.shape[1]), iters, gaps)
    gap, b = np.zeros((P, Cs.size)), np.zeros((P, Cs.size))
    for c in range(Cs.size):
        bc, ic, gc = (np.ascontiguousarray(a[:, c]) for a in (beta, iters, gaps))
        gap[:, c], b[:, c] = _finish(K64, Y, Cs[c] * W, ef, bc, ic, gc, tol, mi, K, shrinking)
        beta[:, c], iters[:, c] = bc, ic
    return SVRBatchSolution(beta=beta, intercept=b, gap=gap, n_iter=iters, converged=gap <= tol,
                            state=(beta, beta, beta))


def split_path(sol: SVRBatchSolution) -> list[SVRBatchSolution]:
    """The per-``C`` solutions of :func:`solve_svr_smo_path`, in ladder order."""
    out = []
    for c in range(sol.beta.shape[1]):
        beta = sol.beta[:, c]
        out.append(SVRBatchSolution(beta=beta, intercept=sol.intercept[:, c], gap=sol.gap[:, c],
                                    n_iter=sol.n_iter[:, c], converged=sol.converged[:, c],
                                    state=(beta, beta, beta)))
    return out


def solve_svr_admm_smo(ke: KernelEig, Y: np.ndarray, C, epsilon, *, tol: float = 1e-3,
                       admm_max_iter: int = 3000, kernel_dtype=np.float64) -> SVRBatchSolution:
    """ADMM + polish up to ``admm_max_iter`` iterations, then SMO from its solution where still above ``tol``.

    At large C the ADMM path's slow targets stall near libsvm's tolerance while SMO from zero
    needs ~10^6 steps; SMO started from the ADMM iterate needs 10^3-10^5
    (``benchmarks/README.md``).  Signature as :func:`solve_svr_smo`; ``ke`` needs its
    eigenpairs (ADMM) and ``K`` (SMO).  ``n_iter`` counts ADMM iterations plus SMO steps.
    """
    from ..svr import solve_svr_staged

    Y = np.ascontiguousarray(Y, dtype=float)
    P, n = Y.shape
    Cf = np.ascontiguousarray(np.broadcast_to(_as_target_array(C, P, n), (P, n)), dtype=float)
    ef = np.ascontiguousarray(_as_target_array(epsilon, P), dtype=float)[:, 0]
    sol = solve_svr_staged(ke, Y, Cf, ef, tol=tol, max_iter=admm_max_iter)
    todo = np.flatnonzero(sol.gap > tol)
    if todo.size:
        sub = solve_svr_smo(ke, Y[todo], Cf[todo], ef[todo], tol=tol, warm=(sol.beta[todo],),
                            kernel_dtype=kernel_dtype)
        sol.beta[todo], sol.intercept[todo], sol.gap[todo] = sub.beta, sub.intercept, sub.gap
        sol.n_iter[todo] += sub.n_iter
    sol.converged = sol.gap <= tol
    return sol

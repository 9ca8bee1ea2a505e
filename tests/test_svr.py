"""The batched SVR solver (mdslam.svr) on the hard case of SLAM's grid: C = 1000, against libsvm.

At C = 1000 the box hardly binds and the dual is badly conditioned (the kernel's
small eigenvalues matter); these are the problems that take ADMM the longest.  The
reference is scikit-learn's ``SVR`` (libsvm) at ``tol = 1e-9`` on the same
precomputed kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold
from sklearn.svm import SVR

from mdslam.svr import (
    KernelEig,
    nystrom_kernel,
    polish_svr_batch,
    rbf_kernel,
    solve_svr_exact,
    solve_svr_staged,
    squared_distances,
    warm_state_on_rows,
)


def test_squared_distances_by_hand_and_the_kernel_of_sklearn():
    """|a - b|^2 of a 3-4-5 triangle and a zero distance; no dimensions gives zeros; the RBF kernel built on
    them equals sklearn's."""
    from sklearn.metrics.pairwise import rbf_kernel as sk_rbf

    A = np.array([[0.0, 0.0], [3.0, 4.0]])
    B = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
    assert squared_distances(A, B).tolist() == [[25.0, 0.0, 2.0], [0.0, 25.0, 13.0]]
    assert squared_distances(np.empty((2, 0)), np.empty((3, 0))).tolist() == [[0.0] * 3] * 2
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(7, 3)), rng.normal(size=(11, 3))
    assert np.allclose(rbf_kernel(X, Y, 0.7), sk_rbf(X, Y, gamma=0.7), rtol=1e-13, atol=0)


def _smooth_pixels(n: int, n_pix: int, snr: float, seed: int):
    """Standardised labels (n, 3) and standardised targets (n_pix, n): smooth sigmoid lines, little noise."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.7, 1.7, (n, 3))
    c = np.random.default_rng(99).normal(0, 1, (4, n_pix))
    z = c[0] * X[:, :1] + 0.6 * c[1] * X[:, 1:2] + 0.5 * c[2] * X[:, :1] * X[:, 2:3] + 0.4 * c[3] * X[:, :1] ** 2
    f = 1.0 - 0.5 / (1.0 + np.exp(-z)) + rng.normal(0, 1.0 / snr, z.shape)
    Y = ((f - f.mean(0)) / f.std(0)).T
    X = (X - X.mean(0)) / X.std(0)
    return X, np.ascontiguousarray(Y)


def _libsvm(K, Y, C, eps, tol=1e-9):
    B, b = [], []
    for y in Y:
        s = SVR(kernel="precomputed", C=C, epsilon=eps, tol=tol).fit(K, y)
        beta = np.zeros(K.shape[0])
        beta[s.support_] = s.dual_coef_[0]
        B.append(beta)
        b.append(s.intercept_[0])
    return np.array(B), np.array(b)


def _dual_objective(B, K, Y, eps):
    return 0.5 * np.einsum("pi,ij,pj->p", B, K, B) - (Y * B).sum(1) + eps * np.abs(B).sum(1)


@pytest.fixture(scope="module")
def hard():
    """Six low-noise pixels, standardised, 160 stars, for C = 1000 (the top of SLAM's default grid,
    where ADMM needs the most iterations; at gamma < 1 libsvm itself needs minutes at tol 1e-9)."""
    return _smooth_pixels(160, 6, snr=2000.0, seed=5)


def test_exact_solver_matches_libsvm_at_C_1000(hard):
    """Exact path: dual objective <= libsvm's at tol 1e-9, KKT gap at rounding level, same fitted values."""
    X, Y = hard
    C, eps = 1000.0, 0.01
    K = rbf_kernel(X, X, 1.0)
    sol = solve_svr_exact(KernelEig.from_kernel(K), Y, C, eps, tol=1e-3, final_tol=1e-9)
    Bs, bs = _libsvm(K, Y, C, eps)
    free = (np.abs(Bs) > 0) & (np.abs(Bs) < C)
    assert np.all(free.sum(1) >= 10), "the box should not be what decides the solution"
    obj, obj_sk = _dual_objective(sol.beta, K, Y, eps), _dual_objective(Bs, K, Y, eps)
    assert np.all(obj <= obj_sk + 1e-9 * np.abs(obj_sk))
    assert np.max(sol.gap) < 1e-9
    assert np.all(np.abs(sol.beta) <= C + 1e-9) and np.all(np.abs(sol.beta.sum(1)) < 1e-7)
    f, f_sk = sol.beta @ K + sol.intercept[:, None], Bs @ K + bs[:, None]
    assert np.max(np.abs(f - f_sk)) < 1e-4


def test_cv_solver_meets_libsvm_tolerance_at_C_1000(hard):
    """CV path (ADMM + polish, tol 1e-3 as libsvm's default): every target converged, and its
    held-out predictions differ from the exact SVR's by far less than the held-out residuals."""
    X, Y = hard
    C, eps, g = 1000.0, 0.01, 1.0
    tr, te = next(iter(KFold(4).split(X)))
    ke = KernelEig.from_kernel(rbf_kernel(X[tr], X[tr], g), rel_cut=1e-8)   # the CV driver's cut
    sol = solve_svr_staged(ke, Y[:, tr], C, eps, tol=1e-3)
    assert sol.converged.all() and np.max(sol.gap) <= 1e-3
    Kv = rbf_kernel(X[tr], X[te], g)
    pred = sol.beta @ Kv + sol.intercept[:, None]
    pred_sk = np.array([SVR(C=C, epsilon=eps, gamma=g, tol=1e-9).fit(X[tr], y[tr]).predict(X[te]) for y in Y])
    resid = np.sqrt(np.mean((pred_sk - Y[:, te]) ** 2, axis=1))
    assert np.all(np.sqrt(np.mean((pred - pred_sk) ** 2, axis=1)) < 0.1 * resid)
    mse, mse_sk = np.mean((pred - Y[:, te]) ** 2, 1), np.mean((pred_sk - Y[:, te]) ** 2, 1)
    assert np.all(np.abs(mse / mse_sk - 1) < 0.02)


def test_cv_solver_at_C_1000_and_gamma_0p3_lands_on_libsvm():
    """C = 1000 at gamma 0.3 (a broad kernel: small eigenvalues, the slow ADMM case): the CV path
    converges on 8 pixels of 150 training stars and its held-out predictions equal libsvm's at
    tol 1e-7 to 0.1 % of the held-out residual (the polish reaches the exact optimum), CV-MSE to 0.05 %."""
    X, Y = _smooth_pixels(200, 8, snr=2000.0, seed=5)
    C, eps, g = 1000.0, 0.01, 0.3
    tr, te = next(iter(KFold(4).split(X)))
    ke = KernelEig.from_kernel(rbf_kernel(X[tr], X[tr], g), rel_cut=1e-8)
    sol = solve_svr_staged(ke, Y[:, tr], C, eps, tol=1e-3)
    assert sol.converged.all() and np.max(sol.gap) <= 1e-3
    pred = sol.beta @ rbf_kernel(X[tr], X[te], g) + sol.intercept[:, None]
    pred_sk = np.array([SVR(C=C, epsilon=eps, gamma=g, tol=1e-7).fit(X[tr], y[tr]).predict(X[te]) for y in Y])
    resid = np.sqrt(np.mean((pred_sk - Y[:, te]) ** 2, axis=1))
    assert np.all(np.sqrt(np.mean((pred - pred_sk) ** 2, axis=1)) < 1e-3 * resid)
    mse, mse_sk = np.mean((pred - Y[:, te]) ** 2, 1), np.mean((pred_sk - Y[:, te]) ** 2, 1)
    assert np.all(np.abs(mse / mse_sk - 1) < 5e-4)


def test_polish_falls_back_when_the_free_kernel_block_is_singular():
    """Duplicated training stars make ``K_FF`` singular: the Cholesky fails, the bordered LU/least-squares
    fallback is used, and the exact path still matches libsvm (tol 1e-9) in fitted values and objective."""
    X, Y = _smooth_pixels(80, 3, snr=200.0, seed=8)
    X, Y = np.vstack([X, X[:20]]), np.hstack([Y, Y[:, :20]])           # 20 stars twice, same targets
    C, eps = 10.0, 0.02
    K = rbf_kernel(X, X, 0.5)
    sol = solve_svr_exact(KernelEig.from_kernel(K), Y, C, eps, tol=1e-3, final_tol=1e-8)
    Bs, bs = _libsvm(K, Y, C, eps)
    obj, obj_sk = _dual_objective(sol.beta, K, Y, eps), _dual_objective(Bs, K, Y, eps)
    assert np.all(obj <= obj_sk + 1e-8 * np.abs(obj_sk))
    f, f_sk = sol.beta @ K + sol.intercept[:, None], Bs @ K + bs[:, None]
    assert np.max(np.abs(f - f_sk)) < 1e-4


def test_polish_from_admm_at_libsvm_tol_lands_on_libsvm_optimum():
    """One polish call from the ADMM solution at libsvm's tolerance (1e-3) finishes most targets exactly.

    The sets of each Newton step are split at the previous Newton iterate before clipping. On this
    problem (500 stars, 40 targets, C = 1, epsilon 0.1) 37 of 40 targets reach a KKT gap <= 1e-9
    in 4 steps (a count this code produced; splitting at the clipped iterate instead reached 33);
    every target that does equals libsvm at tol 1e-9 in fitted values, and none gets worse."""
    X, Y = _smooth_pixels(500, 40, snr=100.0, seed=3)
    C, eps = 1.0, 0.1
    K = rbf_kernel(X, X, 0.3)
    ke = KernelEig.from_kernel(K)
    st = solve_svr_staged(ke, Y, C, eps, tol=1e-3)
    gap0 = st.gap.copy()
    pol = polish_svr_batch(ke, Y, C, eps, st, steps=4, tol=1e-9)
    assert np.all(pol.gap <= gap0)
    exact = pol.gap <= 1e-9
    assert exact.sum() >= 36
    Bs, bs = _libsvm(K, Y[exact], C, eps)
    f, f_sk = pol.beta[exact] @ K + pol.intercept[exact, None], Bs @ K + bs[:, None]
    assert np.max(np.abs(f - f_sk)) < 1e-4


def test_nystrom_kernel_is_the_pivoted_cholesky_approximation():
    """Landmark rows exact, entry-wise error <= the largest residual diagonal <= tol, and the
    landmark expansion equals sum_i beta_i K~(x_i, x) with K~ = K_nm W^-1 K_mn built by numpy."""
    X, _ = _smooth_pixels(400, 1, snr=100.0, seed=3)
    g = 0.3
    K = rbf_kernel(X, X, g)
    kn = nystrom_kernel(X, g, 400, tol=1e-6)
    Kt = (kn.U * kn.lam) @ kn.U.T
    m = kn.landmarks
    assert 20 < m.size < 300, "a smooth 3-D kernel needs fewer landmarks than points"
    assert np.max(np.abs(Kt[m] - K[m])) < 1e-8
    assert np.max(np.diag(K - Kt)) <= 1e-6 and np.max(np.abs(K - Kt)) <= 1e-6
    W = K[np.ix_(m, m)]
    Xq = np.random.default_rng(1).normal(0, 1, (7, 3))
    beta = np.random.default_rng(2).normal(0, 1, (2, 400))
    ref = beta @ K[:, m] @ np.linalg.solve(W, rbf_kernel(X[m], Xq, g))
    coef, idx = kn.expansion(beta)
    assert np.array_equal(idx, m)
    assert np.allclose(coef @ rbf_kernel(X[idx], Xq, g), ref, atol=1e-6 * np.abs(ref).max())


def test_nystrom_svr_stays_within_its_documented_bound():
    """Approximate path (Nystrom kernel, default landmark tolerance, ADMM + polish to libsvm's tol)
    against the exact SVR on the held-out stars of one fold: the rms forward-model difference is
    <= 2 % of the exact held-out rms residual on every pixel and the held-out MSE agrees to 1 %
    (the bound documented in benchmarks/README.md; measured here 0.2-0.3 % and <= 0.15 %).
    Reference: libsvm (sklearn ``SVR``, tol 1e-7) for C <= 10; for C = 100, where libsvm takes
    a minute, the exact-kernel solver to a KKT gap of 1e-9 (checked against libsvm above)."""
    X, Y = _smooth_pixels(400, 8, snr=100.0, seed=11)
    tr, te = next(iter(KFold(5, shuffle=True, random_state=0).split(X)))
    for C, eps, g in ((1.0, 0.05, 0.3), (10.0, 0.05, 0.1), (100.0, 0.01, 0.3)):
        kn = nystrom_kernel(X[tr], g, 2000)
        assert kn.landmarks.size < 0.8 * tr.size, "the approximation must be active (rank < n)"
        sol = solve_svr_staged(kn, Y[:, tr], C, eps, tol=1e-3)
        assert sol.converged.all()
        coef, idx = kn.expansion(sol.beta)
        pred = coef @ rbf_kernel(X[tr][idx], X[te], g) + sol.intercept[:, None]
        if C <= 10:
            pred_ref = np.array([SVR(C=C, epsilon=eps, gamma=g, tol=1e-7).fit(X[tr], y[tr]).predict(X[te])
                                 for y in Y])
        else:
            ex = solve_svr_exact(KernelEig.from_kernel(rbf_kernel(X[tr], X[tr], g)), Y[:, tr], C, eps,
                                 final_tol=1e-9)
            assert np.max(ex.gap) < 1e-9
            pred_ref = ex.beta @ rbf_kernel(X[tr], X[te], g) + ex.intercept[:, None]
        mse_ref = np.mean((pred_ref - Y[:, te]) ** 2, axis=1)
        diff = np.sqrt(np.mean((pred - pred_ref) ** 2, axis=1))
        assert np.all(diff <= 0.02 * np.sqrt(mse_ref)), (C, eps, g, diff / np.sqrt(mse_ref))
        assert np.all(np.abs(np.mean((pred - Y[:, te]) ** 2, axis=1) / mse_ref - 1) < 0.01)


def test_slam_kernel_rank_is_opt_in_and_close_to_the_exact_model():
    """``SLAM(kernel_rank=m)``: the forward model at held-out labels is within the same 2 % of
    sqrt(CV-MSE) of the exact model's, the same hyperparameters are chosen, the expansion uses
    fewer training stars than the exact one, and a bad ``kernel_rank`` is a one-line error."""
    from mdslam.slam import SLAM

    X, Y = _smooth_pixels(360, 6, snr=100.0, seed=21)
    flux, labels = 1.0 + 0.1 * Y.T[:300], X[:300]
    grid = {"C": (1.0, 10.0), "epsilon": (0.05,), "gamma": (0.1, 0.3), "cv": 3}
    exact = SLAM(**grid).fit(flux, labels)
    approx = SLAM(**grid, kernel_rank=2000).fit(flux, labels)
    assert exact.kernel_rank is None
    assert np.array_equal(exact.C_, approx.C_) and np.array_equal(exact.gamma_, approx.gamma_)
    assert np.all(np.abs(approx.cv_mse_ / exact.cv_mse_ - 1) < 0.01)
    used = np.any(approx.dual_coef_ != 0, axis=0).sum()
    assert used < 0.8 * np.any(exact.dual_coef_ != 0, axis=0).sum()
    d = np.sqrt(np.mean((approx.predict_flux(X[300:]) - exact.predict_flux(X[300:])) ** 2, axis=0))
    assert np.all(d <= 0.02 * np.sqrt(exact.cv_mse_))
    with pytest.raises(ValueError, match="kernel_rank=0"):
        SLAM(**grid, kernel_rank=0).fit(flux, labels)


def test_dense_linear_step_solves_the_bordered_system():
    """The dense ADMM step (kernels of rank > n/2): ``x = M r - nu c`` at a penalty level is the
    solution of ``[[K + rho I, 1], [1^T, 0]] [x, nu] = [r, 0]`` by numpy's LU (truncated ``K``)."""
    from mdslam.svr import _dense_step, _LinearStep

    X, _ = _smooth_pixels(90, 1, snr=2000.0, seed=3)
    ke = KernelEig.from_kernel(rbf_kernel(X, X, 1.0), rel_cut=1e-8)
    lin = _LinearStep(ke, np.dtype(np.float64))
    assert lin.dense and 2 * ke.U.shape[1] > 90
    r = np.random.default_rng(4).normal(size=(3, 90))
    Kt = (ke.U * ke.lam) @ ke.U.T
    for k in (-8, -3, 0):
        rho = 10.0 ** (k / lin.RHO_STEPS)
        x = np.empty_like(r)
        _dense_step([(slice(None), *lin.dense_factors(k))], r.copy(), x)
        A = np.block([[Kt + rho * np.eye(90), np.ones((90, 1))], [np.ones((1, 90)), np.zeros((1, 1))]])
        ref = np.linalg.solve(A, np.vstack([r.T, np.zeros((1, 3))]))[:90].T
        assert np.max(np.abs(x - ref)) < 1e-8 * np.max(np.abs(ref))
        assert np.max(np.abs(x.sum(axis=1))) < 1e-9 * np.max(np.abs(ref))


@pytest.mark.parametrize("C", [1.0, 10.0])
def test_cv_solver_with_dense_step_matches_libsvm(C):
    """CV path at gamma 1 on 200 stars (kernel rank > n/2: dense steps, penalties on levels): every
    pixel at libsvm's tol, held-out predictions equal sklearn's SVR (tol 1e-7) to 1 % of the residual."""
    X, Y = _smooth_pixels(250, 10, snr=300.0, seed=8)
    eps, g = 0.05, 1.0
    tr, te = next(iter(KFold(5).split(X)))
    ke = KernelEig.from_kernel(rbf_kernel(X[tr], X[tr], g), rel_cut=1e-8)
    assert 2 * ke.U.shape[1] > tr.size
    sol = solve_svr_staged(ke, Y[:, tr], C, eps, tol=1e-3)
    assert sol.converged.all() and np.max(sol.gap) <= 1e-3
    assert any(k[0] == "dense" for k in ke.cache)
    pred = sol.beta @ rbf_kernel(X[tr], X[te], g) + sol.intercept[:, None]
    pred_sk = np.array([SVR(C=C, epsilon=eps, gamma=g, tol=1e-7).fit(X[tr], y[tr]).predict(X[te]) for y in Y])
    resid = np.sqrt(np.mean((pred_sk - Y[:, te]) ** 2, axis=1))
    assert np.all(np.sqrt(np.mean((pred - pred_sk) ** 2, axis=1)) < 1e-2 * resid)


def test_reduced_kkt_solves_equal_the_bordered_systems_by_hand():
    """The polish's reduced solves for targets with different free sets (sizes 0 to 40, fixed samples at
    +-C or 0) equal ``[[K_FF, 1], [1^T, 0]] [beta_F, b] = [y_F -+ eps - K_FB beta_B, -sum beta_B]``
    solved by ``numpy.linalg.solve`` one target at a time; a target without free samples keeps
    ``b = NaN`` and its coefficients."""
    from mdslam.svr import _reduced_kkt_solve

    rng = np.random.default_rng(4)
    X, Y = _smooth_pixels(60, 5, snr=100.0, seed=2)
    K = rbf_kernel(X, X, 0.5)
    C, eps = 2.0, 0.05
    sizes = [0, 1, 7, 25, 40]
    fp, fm = np.zeros(Y.shape, bool), np.zeros(Y.shape, bool)
    beta = np.zeros(Y.shape)
    for p, m in enumerate(sizes):
        perm = rng.permutation(60)
        F, B = perm[:m], perm[m:m + 10]
        fp[p, F[: m // 2]], fm[p, F[m // 2:]] = True, True
        beta[p, B] = C * rng.choice([-1.0, 1.0], B.size)
    beta0 = beta.copy()
    out, b = _reduced_kkt_solve(KernelEig.from_kernel(K), Y, beta.copy(), fp, fm, np.full(5, eps))
    for p, m in enumerate(sizes):
        F = np.flatnonzero(fp[p] | fm[p])
        if m == 0:
            assert np.isnan(b[p]) and np.array_equal(out[p], beta0[p])
            continue
        A = np.zeros((m + 1, m + 1))
        A[:m, :m], A[:m, m], A[m, :m] = K[np.ix_(F, F)], 1.0, 1.0
        sgn = np.where(fp[p, F], 1.0, -1.0)
        rhs = np.append(Y[p, F] - eps * sgn - K[F] @ beta0[p], -beta0[p].sum())
        ref = np.linalg.solve(A, rhs)
        assert np.allclose(out[p, F], ref[:m], rtol=1e-6, atol=1e-8 * np.abs(ref[:m]).max())
        assert b[p] == pytest.approx(ref[m], rel=1e-8, abs=1e-10)
        fixed = np.setdiff1d(np.arange(60), F)
        assert np.array_equal(out[p, fixed], beta0[p, fixed])


def test_warm_state_on_rows_keeps_the_shared_samples_and_zeroes_the_new():
    z = np.array([[0.5, -2.0, 1.0, 0.0]])
    u = np.array([[1.0, 2.0, 3.0, 4.0]])
    z1, u1, r1 = warm_state_on_rows((z, u, np.array([0.3])), np.array([0, 2, 5, 7]), np.array([2, 3, 5, 7]), 1.5)
    assert np.array_equal(z1, [[-1.5, 0.0, 1.0, 0.0]])          # sample 3 is new; -2 clipped to the box
    assert np.array_equal(u1, [[2.0, 0.0, 3.0, 4.0]])
    assert np.array_equal(r1, [0.3])


def test_cv_solves_warm_started_from_the_previous_fold():
    """A fold's CV solves started from the previous fold's ADMM state (shared stars' entries,
    0 on the new ones): every solve at libsvm's tol; each (pixel, grid point)'s held-out MSE
    within 1 % of the cold start's (both are solutions to gap 1e-3) and the cold start's
    bit-identical to a start from the zero state; the same chosen grid point per pixel."""
    X, Y = _smooth_pixels(250, 10, snr=300.0, seed=8)
    folds = list(KFold(5).split(X))
    g = 1.0
    mse = {"cold": [], "warm": []}
    for C in (1.0, 10.0):
        for eps in (0.05, 0.1):
            prev = None
            e = {"cold": 0.0, "warm": 0.0}
            for tr, te in folds[:3]:
                ke = KernelEig.from_kernel(rbf_kernel(X[tr], X[tr], g), rel_cut=1e-8)
                Kv = rbf_kernel(X[tr], X[te], g)
                cold = solve_svr_staged(ke, Y[:, tr], C, eps, tol=1e-3)
                zero = (np.zeros_like(cold.beta), np.zeros_like(cold.beta), np.full(Y.shape[0], 0.1 / C))
                again = solve_svr_staged(ke, Y[:, tr], C, eps, tol=1e-3, warm=zero)
                assert np.array_equal(again.beta, cold.beta) and np.array_equal(again.intercept, cold.intercept)
                warm = cold
                if prev is not None:
                    start = warm_state_on_rows(prev[0].state, prev[1], tr, C)
                    warm = solve_svr_staged(ke, Y[:, tr], C, eps, tol=1e-3, warm=start,
                                            stops=(30, 60, 90, 160, 320), first_check=10)
                    assert warm.converged.all() and np.max(warm.gap) <= 1e-3
                r2 = {name: np.mean((s.beta @ Kv + s.intercept[:, None] - Y[:, te]) ** 2, axis=1)
                      for name, s in (("cold", cold), ("warm", warm))}
                assert np.all(np.abs(r2["warm"] / r2["cold"] - 1) < 1e-2)
                e = {name: e[name] + r2[name] for name in e}
                prev = (cold, tr)
            mse["cold"].append(e["cold"])
            mse["warm"].append(e["warm"])
    assert np.array_equal(np.argmin(mse["warm"], axis=0), np.argmin(mse["cold"], axis=0))


@pytest.mark.parametrize("gamma, per_sample_C", [(1.0, False), (0.1, False), (1.0, True)])
def test_compiled_admm_passes_equal_the_numpy_passes(monkeypatch, gamma, per_sample_C):
    """The numba passes of the ADMM iterations and KKT checks give bit for bit the NumPy passes'
    solutions, iteration counts and penalties (dense step at gamma 1, eigenbasis step at gamma 0.1;
    C per target and per sample, with masked samples), through the float32 phase and the float64
    one that follows."""
    pytest.importorskip("numba")
    import mdslam.svr as svr

    X, Y = _smooth_pixels(200, 12, snr=300.0, seed=11)
    ke = KernelEig.from_kernel(rbf_kernel(X, X, gamma), rel_cut=1e-8)
    assert svr._LinearStep(ke, np.dtype(np.float32)).dense == (gamma == 1.0)
    C = 10.0
    if per_sample_C:
        C = np.full(Y.shape, 10.0)
        C[:, ::7] = 0.0                                 # masked pixels
    runs = []
    for compiled in (False, True):
        monkeypatch.setattr(svr, "_COMPILED", {} if compiled else {"prox": None, "bounds": None})
        ke.cache.clear()
        runs.append(svr.solve_svr_batch(ke, Y, C, 0.05, tol=1e-5))
    numpy_run, compiled_run = runs
    assert svr._compiled("prox") is not None and svr._compiled("bounds") is not None
    assert np.all(numpy_run.n_iter >= 20)
    for a, b in zip((numpy_run.beta, numpy_run.intercept, numpy_run.n_iter, *numpy_run.state),
                    (compiled_run.beta, compiled_run.intercept, compiled_run.n_iter, *compiled_run.state), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_kkt_gap_equals_the_numpy_gap(monkeypatch, dtype):
    """kkt_gap's compiled pass against its NumPy passes on coefficients at both bounds, inside,
    at zero, on masked samples (C = 0), rows with every sample at a bound and a row with NaN."""
    pytest.importorskip("numba")
    import mdslam.svr as svr

    rng = np.random.default_rng(2)
    P, n = 40, 30
    C = np.where(rng.random((P, n)) < 0.1, 0.0, rng.choice([1.0, 10.0], (P, 1))).astype(dtype)
    beta = (rng.choice([-1.0, 0.0, 1.0, 0.3, -0.7], (P, n)) * C).astype(dtype)
    beta[:3] = C[:3]                                     # every sample at the upper bound
    beta[3] = -C[3]
    h = rng.normal(0, 1, (P, n)).astype(dtype)
    h[5, 4] = np.nan
    eps = rng.uniform(0, 0.1, (P, 1)).astype(dtype)
    out = []
    for compiled in (False, True):
        monkeypatch.setattr(svr, "_COMPILED", {} if compiled else {"bounds": None})
        out.append(svr.kkt_gap(beta, h, C, eps))
        out.append(svr.kkt_gap(beta, h, C[:, :1], eps))
    assert svr._compiled("bounds") is not None
    for a, b in zip(out[:2], out[2:], strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True)

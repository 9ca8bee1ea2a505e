"""libsvm's SMO on a shared exact kernel (mdslam.slam.smo) against libsvm itself (scikit-learn's SVR).

References: ``sklearn.svm.SVR(kernel="precomputed")`` on the same kernel at ``tol = 1e-9`` (its
solution is then the optimum to ~1e-9), the dual objective and libsvm's KKT quantity recomputed
here from the returned coefficients (:func:`mdslam.svr.kkt_gap`, whose formula the tests of
``test_svr.py`` check by hand).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from test_svr import _dual_objective, _libsvm, _smooth_pixels

from mdslam.slam import smo
from mdslam.slam.smo import (
    _feasible,
    solve_svr_admm_smo,
    solve_svr_smo,
    solve_svr_smo_path,
    split_path,
)
from mdslam.svr import KernelEig, kkt_gap, nystrom_kernel, rbf_kernel

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba (scale extra)")


@pytest.fixture(scope="module")
def hard():
    """160 stars, 3 smooth pixels at SNR 2000 (the hard case of the ADMM path at C = 1000)."""
    X, Y = _smooth_pixels(160, 3, snr=2000.0, seed=5)
    K = rbf_kernel(X, X, 0.3)
    return K, Y, KernelEig(K=K, lam=np.zeros(0), U=np.zeros((160, 0)))


@needs_numba
@pytest.mark.parametrize("C", [1.0, 1000.0])
def test_smo_reaches_libsvms_optimum(hard, C):
    """At tol 1e-3: gap <= 1e-3 recomputed here and equal to the solver's own libsvm criterion, sum beta = 0, box kept, dual objective within
    1e-3 x (1 + |objective|) of libsvm at tol 1e-9 and never below it (libsvm's is the optimum);
    at tol 1e-7 the fitted values agree with libsvm to 1e-4."""
    K, Y, ke = hard
    B, b = _libsvm(K, Y, C, 0.01)
    ref = _dual_objective(B, K, Y, 0.01)
    sol = solve_svr_smo(ke, Y, C, 0.01, tol=1e-3)
    gap, _ = kkt_gap(sol.beta, Y - sol.beta @ K, np.full_like(Y, C), np.full((3, 1), 0.01))
    assert np.all(gap <= 1e-3) and sol.converged.all() and np.allclose(gap, sol.gap)
    # kkt_gap (on beta, n values) equals libsvm's m - M over the 2n variables that SMO itself stopped on
    assert np.allclose(gap, sol.state[2][:, 0], rtol=0, atol=1e-9)
    assert np.all(np.abs(sol.beta.sum(axis=1)) < 1e-10) and np.all(np.abs(sol.beta) <= C)
    obj = _dual_objective(sol.beta, K, Y, 0.01)
    assert np.all(obj >= ref - 1e-8) and np.all(obj - ref <= 1e-3 * (1 + np.abs(ref)))
    tight = solve_svr_smo(ke, Y, C, 0.01, tol=1e-7)
    f_ref = B @ K + b[:, None]
    assert np.max(np.abs(tight.beta @ K + tight.intercept[:, None] - f_ref)) < 1e-4


@needs_numba
def test_admm_then_smo_finishes_what_admm_leaves(hard):
    """C = 1000 with ADMM capped at 100 iterations (so SMO has to finish): every target at
    gap <= 1e-3 (recomputed here) and dual objective within 1e-3 x (1 + |objective|) of libsvm."""
    K, Y, _ = hard
    ke = KernelEig.from_kernel(K)
    sol = solve_svr_admm_smo(ke, Y, 1000.0, 0.01, tol=1e-3, admm_max_iter=100)
    gap, _ = kkt_gap(sol.beta, Y - sol.beta @ K, np.full_like(Y, 1000.0), np.full((3, 1), 0.01))
    assert np.all(gap <= 1e-3) and sol.converged.all() and np.all(np.abs(sol.beta.sum(axis=1)) < 1e-9)
    ref = _dual_objective(_libsvm(K, Y, 1000.0, 0.01)[0], K, Y, 0.01)
    assert np.all(_dual_objective(sol.beta, K, Y, 0.01) - ref <= 1e-3 * (1 + np.abs(ref)))


@needs_numba
def test_float32_kernel_and_no_shrinking_give_the_same_optimum(hard):
    """Reading the kernel in float32 or without shrinking: still gap <= tol in float64 and the
    same fitted values as the float64 default within the tolerance's reach (1e-3 at tol 1e-5)."""
    K, Y, ke = hard
    base = solve_svr_smo(ke, Y, 100.0, 0.03, tol=1e-5)
    for kw in ({"kernel_dtype": np.float32}, {"shrinking": False}):
        sol = solve_svr_smo(ke, Y, 100.0, 0.03, tol=1e-5, **kw)
        assert np.all(sol.gap <= 1e-5), kw
        f, f0 = sol.beta @ K + sol.intercept[:, None], base.beta @ K + base.intercept[:, None]
        assert np.max(np.abs(f - f0)) < 1e-3, kw


@needs_numba
def test_masked_stars_are_removed_exactly(hard):
    """Per-sample C = 0 on 40 stars: their coefficients stay 0 and the fit equals libsvm trained
    without them (fitted values at the kept stars within 1e-4, both at tight tolerances)."""
    K, Y, ke = hard
    rng = np.random.default_rng(3)
    drop = rng.choice(160, 40, replace=False)
    keep = np.setdiff1d(np.arange(160), drop)
    W = np.ones_like(Y)
    W[:, drop] = 0.0
    sol = solve_svr_smo(ke, Y, 10.0 * W, 0.03, tol=1e-7)
    assert np.all(sol.beta[:, drop] == 0.0)
    B, b = _libsvm(K[np.ix_(keep, keep)], Y[:, keep], 10.0, 0.03)
    f_ref = B @ K[keep][:, keep] + b[:, None]
    f = sol.beta @ K[:, keep] + sol.intercept[:, None]
    assert np.max(np.abs(f - f_ref)) < 1e-4


@needs_numba
def test_seeded_ladder_equals_cold_solves(hard):
    """Alpha seeding along C = 1, 10, 100, 1000 ("keep" and "scale") lands within tol of the
    cold solves (fitted values within 1e-3 at tol 1e-5; gaps recomputed) with fewer SMO steps
    in total than from zero; split_path returns the points in ladder order."""
    K, Y, ke = hard
    Cs = np.array([1.0, 10.0, 100.0, 1000.0])
    cold = [solve_svr_smo(ke, Y, C, 0.03, tol=1e-5) for C in Cs]
    for seed in ("keep", "scale"):
        path = split_path(solve_svr_smo_path(ke, Y, 1.0, 0.03, Cs=Cs, tol=1e-5, seed=seed))
        assert len(path) == 4
        for C, s, c in zip(Cs, path, cold, strict=True):
            gap, _ = kkt_gap(s.beta, Y - s.beta @ K, np.full_like(Y, C), np.full((3, 1), 0.03))
            assert np.all(gap <= 1e-5) and np.all(np.abs(s.beta) <= C)
            f, f0 = s.beta @ K + s.intercept[:, None], c.beta @ K + c.intercept[:, None]
            assert np.max(np.abs(f - f0)) < 1e-3
    keep = solve_svr_smo_path(ke, Y, 1.0, 0.03, Cs=Cs, tol=1e-5, seed="keep")
    assert keep.n_iter.sum() < sum(c.n_iter.sum() for c in cold)


def test_feasible_repair_keeps_box_and_sum():
    """A warm start outside a smaller box: clipped, then sum moved to 0 within the box (hand case)."""
    beta = np.array([[3.0, 2.0, -1.0, 0.0]])
    C = np.full((1, 4), 1.5)
    out = _feasible(beta, C)
    assert np.all(np.abs(out) <= 1.5 + 1e-15) and abs(out.sum()) < 1e-12
    # clipped to (1.5, 1.5, -1, 0), sum 2: moved down in proportion to the room (3, 3, 0.5, 1.5) / 8
    assert np.allclose(out, [[1.5 - 0.75, 1.5 - 0.75, -1.0 - 0.125, -0.375]])


def test_smo_needs_the_exact_kernel():
    """A Nystrom kernel (no K matrix) is refused with a one-line message naming the option."""
    X, Y = _smooth_pixels(40, 1, snr=100.0, seed=1)
    with pytest.raises(ValueError, match=r"solver='smo' needs the exact kernel"):
        solve_svr_smo(nystrom_kernel(X, 0.3, 10), Y, 1.0, 0.1)


def test_missing_numba_is_a_one_line_error(monkeypatch):
    """Without numba: ImportError naming solver='smo' and the extra, on one line."""
    X, Y = _smooth_pixels(40, 1, snr=100.0, seed=1)
    ke = KernelEig.from_kernel(rbf_kernel(X, X, 0.3))
    monkeypatch.setattr(smo, "_KERNELS", {})
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(ImportError, match=r"solver='smo'\) needs numba") as err:
        solve_svr_smo(ke, Y, 1.0, 0.1)
    assert "\n" not in str(err.value)


@needs_numba
@pytest.mark.slow
def test_slam_solver_smo_matches_admm():
    """SLAM(solver="smo") on 240 stars x 3 pixels, 2x2x2 grid, 3-fold: the same chosen
    hyperparameters as the ADMM path and CV-MSE within 0.5 % on every pixel (both solve to
    libsvm's tolerance); every CV solve converged; forward models within 1 % of sqrt(CV-MSE)."""
    from mdslam.slam import SLAM

    X, Y = _smooth_pixels(240, 3, snr=100.0, seed=21)
    flux, labels = Y.T, X * np.array([300.0, 0.2, 0.3]) + np.array([3500.0, 4.8, -0.3])
    grid = {"C": (1.0, 100.0), "epsilon": (0.03, 0.1), "gamma": (0.3, 1.0), "cv": 3, "n_jobs": 2}
    admm = SLAM(**grid).fit(flux, labels)
    fast = SLAM(**grid, solver="smo").fit(flux, labels)
    assert fast.solver_info_["cv_n_unconverged"] == 0 and fast.solver_info_["cv_max_kkt_gap"] <= 1e-3
    for k in ("C_", "epsilon_", "gamma_"):
        assert np.array_equal(getattr(admm, k), getattr(fast, k)), k
    assert np.all(np.abs(fast.cv_mse_ / admm.cv_mse_ - 1) <= 0.005)
    d = np.sqrt(np.mean((fast.predict_flux(labels) - admm.predict_flux(labels)) ** 2, axis=0))
    assert np.all(d <= 0.01 * np.sqrt(admm.cv_mse_))
    hybrid = SLAM(**grid, solver="admm-smo").fit(flux, labels)
    assert hybrid.solver_info_["cv_n_unconverged"] == 0
    assert np.array_equal(admm.C_, hybrid.C_) and np.all(np.abs(hybrid.cv_mse_ / admm.cv_mse_ - 1) <= 0.005)
    for solver in ("smo", "admm-smo"):
        with pytest.raises(ValueError, match="kernel_rank"):
            SLAM(**grid, solver=solver, kernel_rank=50).fit(flux, labels)

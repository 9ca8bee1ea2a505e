"""Tests of the fast labelling paths: the blocked forward model, LM's ``sigma_tol`` and ``lm_float32``.

Each option is checked against an independent reference (the kernel expansion written out
pixel by pixel, scipy's least squares) or against the default float64 path on a mock problem
with known truth.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from _spectra import LABELS
from _spectra import sigmoid_spectra as _spectra
from scipy.optimize import least_squares

from mdslam.slam import SLAM, forward, lm
from mdslam.svr import rbf_kernel


@pytest.fixture(scope="module")
def fitted():
    flux, ivar, lab = _spectra(300, seed=1)
    model = SLAM(C=(1.0, 10.0), epsilon=(0.02,), gamma=(0.1, 0.5), cv=3, random_state=0)
    return model.fit(flux, lab, ivar, label_names=LABELS)


def test_blocked_forward_model_equals_the_kernel_expansion(fitted):
    """More rows than one block: F and dF/dtheta equal sum_i beta_ij k_i (+ b_j) written out per pixel."""
    _check_expansion(fitted, np.where(np.arange(fitted.n_features_in_) % 3 == 0, 0.5, 0.1))   # two groups
    half = fitted.n_features_in_ // 2                                                     # two runs of pixels
    _check_expansion(fitted, np.where(np.arange(fitted.n_features_in_) < half, 0.5, 0.1))


def _check_expansion(fitted, gamma):
    """F and dF/dtheta of ``fitted`` with RBF widths ``gamma`` per pixel against the expansion per pixel."""
    model = copy.deepcopy(fitted)
    model.gamma_ = gamma
    model._reset_cache()
    rng = np.random.default_rng(2)
    m = 2 * forward.ROW_BLOCK + 7
    th = model.X_train_[rng.integers(0, model.n_train_, m)] + rng.normal(0, 0.2, (m, 3))
    F, J = model._model_scaled(th, jacobian=True)
    Fv, _ = model._model_scaled(th)
    _, J32 = model._model_scaled(th, jacobian=True, dtype=np.float32)        # the float32 products
    assert np.allclose(J32, J, rtol=1e-4, atol=1e-5 * np.abs(J).max())
    for j in range(model.n_features_in_):
        k = rbf_kernel(th, model.X_train_, model.gamma_[j])       # (m, n_train)
        beta = model.dual_coef_[j]
        assert np.allclose(F[:, j], k @ beta + model.intercept_[j], rtol=1e-12, atol=1e-12)
        for li in range(3):
            dk = -2 * model.gamma_[j] * (th[:, li, None] - model.X_train_[None, :, li]) * k
            assert np.allclose(J[:, j, li], dk @ beta, rtol=1e-9, atol=1e-10 * np.abs(J).max())
    assert np.allclose(F, Fv, rtol=1e-12, atol=1e-12)


def test_lm_sigma_tol_stops_within_that_fraction_of_the_formal_error(decay):
    """sigma_tol = 0.01: every parameter within 0.01 of its standard error of scipy's optimum, in fewer steps."""
    _decay = decay.model
    x, truth, sigma, y, w = decay.problem(4, 8, 60)
    start = np.tile([1.0, 1.0, 0.0], (8, 1))
    tight = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, max_iter=200, xtol=1e-12, ftol=1e-15)
    fast = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, max_iter=200, xtol=1e-12, ftol=1e-15,
                                  sigma_tol=0.01)
    assert fast.converged.all()
    assert fast.n_iter.sum() < tight.n_iter.sum()
    for i in range(8):
        sw = np.sqrt(w[i])
        ref = least_squares(lambda p, sw=sw, yi=y[i]: sw * (yi - _decay(p[None], x)[0][0]), [1.0, 1.0, 0.0],
                            jac=lambda p, sw=sw: -sw[:, None] * _decay(p[None], x)[1][0], xtol=1e-15, ftol=1e-15)
        err = np.sqrt(np.diag(np.linalg.inv(ref.jac.T @ ref.jac)))
        assert np.all(np.abs(fast.theta[i] - ref.x) <= 0.01 * err), i
        assert fast.chi2[i] - 2 * ref.cost <= 1e-4                 # chi2 within 0.01^2 of the minimum


def test_slam_lm_sigma_tol_labels_agree_with_the_default(fitted):
    """SLAM(lm_sigma_tol=0.01) on held-out spectra: labels within 0.05 formal errors of the default, same flags."""
    flux, ivar, lab = _spectra(150, seed=7)
    ref = copy.deepcopy(fitted).predict_table(flux, ivar)
    fast = copy.deepcopy(fitted).set_params(lm_sigma_tol=0.01).predict_table(flux, ivar)
    assert np.array_equal(ref["flag"], fast["flag"])
    assert np.mean(fast["n_iter"]) < np.mean(ref["n_iter"])
    for n, true in zip(LABELS, lab.T, strict=True):
        assert np.all(np.abs(fast[n] - ref[n]) <= 0.05 * ref[f"e_{n}"]), n
        rms = [np.sqrt(np.mean((t[n] - true) ** 2)) for t in (fast, ref)]
        assert abs(rms[0] / rms[1] - 1) < 0.01, (n, rms)


def test_lm_float32_keeps_float64_values_and_chi2(fitted):
    """lm_float32: float32 only in the Jacobian, so chi2 is the float64 chi2 and labels agree to 1 % of the errors."""
    flux, ivar, lab = _spectra(150, seed=8)
    t64 = copy.deepcopy(fitted).predict_table(flux, ivar)
    t32 = copy.deepcopy(fitted).set_params(lm_float32=True).predict_table(flux, ivar)
    assert np.array_equal(t32["flag"], t64["flag"])
    assert np.allclose(t32["chi2"], t64["chi2"], rtol=1e-8)
    for n in LABELS:
        assert np.all(np.abs(t32[n] - t64[n]) <= 0.01 * t64[f"e_{n}"]), n
        assert np.allclose(t32[f"e_{n}"], t64[f"e_{n}"], rtol=1e-4)


def test_stored_start_grid_is_the_model_at_the_training_labels(fitted, tmp_path):
    """quick_flux_ = the forward model at every training label (float64), kept in the file; labels equal with it
    stored, recomputed (a file without it) or after a save/load round trip."""
    model = copy.deepcopy(fitted)
    phys = model.label_mean_ + model.X_train_ * model.label_scale_
    assert model.quick_flux_.dtype == np.float64 and model.quick_flux_.shape == (model.n_train_, 40)
    assert np.allclose(model.quick_flux_, model.predict_flux(phys), rtol=1e-12, atol=1e-12)
    flux, ivar, _ = _spectra(60, seed=9)
    ref = model.predict_table(flux, ivar)
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path) as z:
        assert np.array_equal(z["quick_flux"], model.quick_flux_)
    loaded = SLAM.load(path)
    bare = copy.deepcopy(fitted)
    bare.quick_flux_ = None                       # as a file written without the member
    bare._reset_cache()
    for other in (loaded, bare):
        t = other.predict_table(flux, ivar)
        for name in ref.colnames:
            assert np.array_equal(np.asarray(t[name]), np.asarray(ref[name]), equal_nan=True), name


def test_stored_start_grid_gives_the_labels_of_the_grid_evaluated_at_labelling(fitted):
    """The stored start grid is the forward model as labelling evaluated it before it was stored: the same
    labels, errors and flags bit for bit (a float32 grid changed them where chi2 has two minima)."""
    flux, ivar, _ = _spectra(200, seed=10)
    stored = copy.deepcopy(fitted)
    ref = copy.deepcopy(fitted)
    F64 = ref.flux_mean_ + ref._model_scaled(ref.X_train_)[0] * ref.flux_scale_
    ref._cache["quick"] = (ref.X_train_, F64)             # the grid as evaluated before it was stored
    t_ref, t = ref.predict_table(flux, ivar), stored.predict_table(flux, ivar)
    for name in t_ref.colnames:
        assert np.array_equal(np.asarray(t[name]), np.asarray(t_ref[name]), equal_nan=True), name


def test_lm_start_values_given_save_one_evaluation_and_change_nothing(decay):
    """``f0`` = the model at the start (as the start grid holds it): the same result bit for bit, one
    ``values`` call fewer."""
    _decay = decay.model
    x, _, _, y, w = decay.problem(6, 10, 40)
    start = np.tile([1.5, 1.0, 0.0], (10, 1))
    calls = []

    def values(th):
        calls.append(th.shape[0])
        return _decay(th, x)[0]

    split = (values, lambda th: _decay(th, x)[1])
    kw = dict(max_iter=50, split=split, sigma_tol=0.01)

    def both(th):                                        # the model as SLAM's LM gets it: values, then J
        return split[0](th), split[1](th)

    plain = lm.levenberg_marquardt(both, y, w, start, **kw)
    n_plain, calls[:] = len(calls), []
    given = lm.levenberg_marquardt(both, y, w, start, f0=values(start), **kw)
    assert len(calls) == n_plain                         # the one call above replaces the start's
    for a, b in zip(plain, given, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


def test_plus_diagonal_adds_to_the_diagonals_only():
    rng = np.random.default_rng(7)
    A, d = rng.normal(size=(4, 3, 3)), rng.normal(size=(4, 3))
    out = lm._plus_diagonal(A, d)
    assert np.array_equal(out, A + np.stack([np.diag(x) for x in d]))
    assert np.array_equal(lm._plus_diagonal(A, d[:, :1]), A + d[:, :1, None] * np.eye(3))
    assert not np.shares_memory(out, A)


def test_grid_index_is_the_grid_point_of_least_chi2():
    """The row of least sum w (y - f)^2, written out point by point."""
    rng = np.random.default_rng(4)
    grid_model = rng.normal(size=(30, 12))
    y = grid_model[[3, 17, 29]] + rng.normal(0, 0.05, (3, 12))
    w = rng.uniform(1, 4, (3, 12))
    chi2 = ((y[:, None, :] - grid_model[None]) ** 2 * w[:, None, :]).sum(axis=2)
    assert lm.grid_index(y, w, grid_model).tolist() == np.argmin(chi2, axis=1).tolist() == [3, 17, 29]


def test_batched_covariance_equals_per_matrix_inverse():
    """lm._inverse: one batched call, bit-identical to np.linalg.inv per matrix; NaN where singular or not finite."""
    rng = np.random.default_rng(3)
    J = rng.normal(size=(6, 20, 3))
    A = np.matmul(J.transpose(0, 2, 1), J)
    cov = lm._inverse(A)
    for i in range(6):
        assert np.array_equal(cov[i], np.linalg.inv(A[i]))
    A[2] = 0.0                                           # singular
    A[4, 0, 0] = np.nan
    cov = lm._inverse(A)
    assert np.isnan(cov[[2, 4]]).all()
    for i in (0, 1, 3, 5):
        assert np.array_equal(cov[i], np.linalg.inv(A[i]))


def test_one_blas_thread_limits_and_restores_blas():
    """The cached-controller limit sets every BLAS library to one thread and restores the previous counts."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from mdslam.slam._util import one_blas_thread

    with threadpool_limits(limits=2, user_api="blas"):
        before = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
        with one_blas_thread():
            inside = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
        after = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    assert inside and all(n == 1 for n in inside)
    assert after == before


def test_lm_nielsen_damping_reaches_the_least_squares_optimum(decay):
    """damping='nielsen': every problem at scipy's optimum (1e-6 of the standard errors), no more steps rejected."""
    _decay = decay.model
    x, truth, sigma, y, w = decay.problem(5, 12, 60)
    start = np.tile([1.0, 1.0, 0.0], (12, 1))
    kw = dict(max_iter=200, xtol=1e-12, ftol=1e-15)
    fixed = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, **kw)
    niel = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, damping="nielsen", **kw)
    assert niel.converged.all()
    for i in range(12):
        sw = np.sqrt(w[i])
        ref = least_squares(lambda p, sw=sw, yi=y[i]: sw * (yi - _decay(p[None], x)[0][0]), [1.0, 1.0, 0.0],
                            jac=lambda p, sw=sw: -sw[:, None] * _decay(p[None], x)[1][0], xtol=1e-15, ftol=1e-15)
        err = np.sqrt(np.diag(np.linalg.inv(ref.jac.T @ ref.jac)))
        assert np.all(np.abs(niel.theta[i] - ref.x) <= 1e-6 * err), i
        assert np.allclose(niel.cov[i], fixed.cov[i], rtol=1e-6)
    with pytest.raises(ValueError, match="damping='lazy'"):
        lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, damping="lazy")


def test_slam_nielsen_damping_labels_agree_with_the_default(fitted):
    """SLAM(lm_damping='nielsen') on held-out spectra: labels within 0.01 formal errors of the default, same flags."""
    flux, ivar, _ = _spectra(150, seed=12)
    ref = copy.deepcopy(fitted).predict_table(flux, ivar)
    niel = copy.deepcopy(fitted).set_params(lm_damping="nielsen").predict_table(flux, ivar)
    assert np.array_equal(ref["flag"], niel["flag"])
    for n in LABELS:
        assert np.all(np.abs(niel[n] - ref[n]) <= 0.01 * ref[f"e_{n}"]), n
    with pytest.raises(ValueError, match="lm_damping='lazy'"):
        copy.deepcopy(fitted).set_params(lm_damping="lazy").predict_table(flux, ivar)


def _decay_curvature(x):
    """``sum_j u_j d^2 f_j / d theta^2`` of the decay model ``a exp(-b x) + c``, written out."""
    def curvature(th, u):
        a, b = th[:, 0:1], th[:, 1:2]
        e = np.exp(-b * x[None, :])
        R = np.zeros((th.shape[0], 3, 3))
        R[:, 0, 1] = R[:, 1, 0] = np.sum(u * (-x[None, :] * e), axis=1)
        R[:, 1, 1] = np.sum(u * (a * x[None, :] ** 2 * e), axis=1)
        return R
    return curvature


def test_lm_newton_steps_reach_the_least_squares_optimum_in_fewer_iterations(decay):
    """curvature (Newton steps near the minimum): scipy's optimum within 1e-6 standard errors, the Gauss-Newton
    covariance, and fewer iterations than Gauss-Newton where the residuals are large (data from another curve)."""
    _decay = decay.model
    x, truth, sigma, y, w = decay.problem(6, 10, 60)
    y = y + 0.3 * np.sin(3 * x)[None, :]                          # a misfit: large residuals
    start = np.tile([1.0, 1.0, 0.0], (10, 1))
    kw = dict(max_iter=300, xtol=1e-12, ftol=1e-15)
    gn = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, **kw)
    newton = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, curvature=_decay_curvature(x), **kw)
    assert newton.converged.all()
    assert newton.n_iter.sum() < gn.n_iter.sum()
    for i in range(10):
        sw = np.sqrt(w[i])
        ref = least_squares(lambda p, sw=sw, yi=y[i]: sw * (yi - _decay(p[None], x)[0][0]), [1.0, 1.0, 0.0],
                            jac=lambda p, sw=sw: -sw[:, None] * _decay(p[None], x)[1][0], xtol=1e-15, ftol=1e-15)
        err = np.sqrt(np.diag(np.linalg.inv(ref.jac.T @ ref.jac)))
        assert np.all(np.abs(newton.theta[i] - ref.x) <= 1e-6 * err), i
        assert np.allclose(newton.cov[i], np.linalg.inv(ref.jac.T @ ref.jac), rtol=1e-6), i


def test_newton_matrix_is_the_hessian_only_near_a_minimum_and_where_positive_definite():
    """H = A - R where the Gauss-Newton step is within NEWTON_RADIUS formal errors and H is positive definite;
    A elsewhere (far from the minimum, or an indefinite H)."""
    A = np.tile(np.diag([4.0, 1.0]), (3, 1, 1))
    R = np.array([[[1.0, 0.0], [0.0, 0.5]], [[1.0, 0.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, 2.0]]])
    g = np.array([[0.2, 0.1], [20.0, 0.0], [0.2, 0.1]])        # GN steps 0.11, 10, 0.11 formal errors
    M = lm.newton_matrix(A, R, g)
    assert np.array_equal(M[0], A[0] - R[0])
    assert np.array_equal(M[1], A[1]) and np.array_equal(M[2], A[2])

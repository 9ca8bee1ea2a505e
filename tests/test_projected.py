"""Tests of the projected forward model (``SLAM(lm_rank=r)``) and LM's per-problem iteration cap.

References: the kernel expansion written out with :func:`mdslam.svr.rbf_kernel` (the full
model), the singular values of the start grid (the projection's residual), finite
differences (the Jacobian) and the full model's own labels (the exact last LM stage).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from _spectra import LABELS
from _spectra import sigmoid_spectra as _spectra

from mdslam.slam import SLAM, forward, infer, lm
from mdslam.svr import rbf_kernel


@pytest.fixture(scope="module")
def trained():
    flux, ivar, lab = _spectra(300, seed=1)
    model = SLAM(C=(1.0, 10.0), epsilon=(0.02,), gamma=(0.1, 0.5), cv=3, random_state=0)
    return model.fit(flux, lab, ivar, label_names=LABELS)


@pytest.fixture(scope="module")
def fitted(trained):
    """The trained model with two pixel groups for certain (every third pixel at the other width)."""
    model = copy.deepcopy(trained)
    model.gamma_ = np.where(np.arange(model.n_features_in_) % 3 == 0, 0.5, 0.1)
    model.quick_flux_ = None                                     # the start grid of these widths
    model._reset_cache()
    return model


def _full_flux(model, th):
    """Flux and d flux / d theta (standardised labels) of the kernel expansion written out pixel by pixel."""
    F = np.empty((th.shape[0], model.n_features_in_))
    J = np.empty(F.shape + (th.shape[1],))
    for j in range(model.n_features_in_):
        k = rbf_kernel(th, model.X_train_, model.gamma_[j])
        beta, s = model.dual_coef_[j], model.flux_scale_[j]
        F[:, j] = model.flux_mean_[j] + s * (k @ beta + model.intercept_[j])
        for li in range(th.shape[1]):
            dk = -2 * model.gamma_[j] * (th[:, li, None] - model.X_train_[None, :, li]) * k
            J[:, j, li] = s * (dk @ beta)
    return F, J


def test_projected_model_at_full_rank_is_the_kernel_expansion(fitted):
    """rank = n_pix: the basis spans every spectrum, so F_r and its Jacobian equal the kernel expansion; the
    Jacobian computed from the kernel rows of the previous values call equals a fresh one."""
    model = copy.deepcopy(fitted).set_params(lm_rank=fitted.n_features_in_)
    rng = np.random.default_rng(3)
    m = forward.ROW_BLOCK + 9
    th = model.X_train_[rng.integers(0, model.n_train_, m)] + rng.normal(0, 0.3, (m, 3))
    F_ref, J_ref = _full_flux(model, th)
    values, jacobian, _ = infer._projected_fns(model, np.float64)
    F = values(th)
    assert np.allclose(F, F_ref, rtol=1e-10, atol=1e-10)
    rows = np.flatnonzero(rng.random(m) < 0.5)
    J_reused = jacobian(th[rows])                                  # rows of the last values call
    J_fresh = forward.projected_flux(th[rows], model.X_train_, infer.projected(model), jacobian=True)[1]
    assert np.array_equal(J_reused, J_fresh)
    assert np.allclose(J_reused, J_ref[rows], rtol=1e-8, atol=1e-10 * np.abs(J_ref).max())


def test_projected_model_residual_is_the_discarded_singular_values_and_its_jacobian_is_its_derivative(fitted):
    """rank 6 of 40: the stated residual chi2 is the mean chi2 of F - F_r over the start grid, in units of the
    model error; the analytic Jacobian of F_r matches central finite differences of F_r."""
    model = copy.deepcopy(fitted).set_params(lm_rank=6)
    pm = infer.projected(model)
    sigma = np.sqrt(model.cv_mse_)
    F_full = _full_flux(model, model.X_train_)[0]
    F_r = forward.projected_flux(model.X_train_, model.X_train_, pm)[0]
    resid = np.mean((((F_full - F_r) / sigma) ** 2).sum(axis=1))
    assert pm.residual_chi2 == pytest.approx(resid, rel=1e-8)
    assert resid > 1e-6                                             # the test is not at full rank
    th = model.X_train_[:5] + 0.1
    J = forward.projected_flux(th, model.X_train_, pm, jacobian=True, values=False)[1]
    h = 1e-6
    for li in range(3):
        e = np.zeros(3)
        e[li] = h
        fd = (forward.projected_flux(th + e, model.X_train_, pm)[0]
              - forward.projected_flux(th - e, model.X_train_, pm)[0]) / (2 * h)
        assert np.allclose(J[:, :, li], fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())


def test_lm_rank_gives_the_full_models_labels(trained):
    """lm_rank = 4 (a coarse basis): LM's last stage on the full model lands on the full model's optimum, so
    labels agree within 1e-3 formal errors, chi2 to 1e-6 and errors to 1e-4, flags equal."""
    flux, ivar, _ = _spectra(120, seed=11)
    ref = copy.deepcopy(trained).predict_table(flux, ivar)
    low = copy.deepcopy(trained).set_params(lm_rank=4).predict_table(flux, ivar)
    assert (ref["flag"] == 0).mean() > 0.9
    assert np.array_equal(ref["flag"], low["flag"])
    assert np.allclose(low["chi2"], ref["chi2"], rtol=1e-6)
    for n in LABELS:
        assert np.all(np.abs(low[n] - ref[n]) <= 1e-3 * ref[f"e_{n}"]), n
        assert np.allclose(low[f"e_{n}"], ref[f"e_{n}"], rtol=1e-4), n
    assert np.all(low["n_iter"] <= trained.lm_max_iter)


@pytest.mark.parametrize("rank", [0, 41, 10_000])
def test_lm_rank_out_of_range_is_a_one_line_error(fitted, rank):
    flux, ivar, _ = _spectra(3, seed=12)
    with pytest.raises(ValueError, match=f"lm_rank={rank}: must be None or between 1 and 40"):
        copy.deepcopy(fitted).set_params(lm_rank=rank).predict_table(flux, ivar)


def test_lm_iteration_cap_per_problem(decay):
    """max_iter as an array: each row stops at its own cap (0: the start, not converged); rows with a large
    cap reach the same optimum as with a scalar cap."""
    x, truth, sigma, y, w = decay.problem(4, 4, 60)
    start = np.tile([1.0, 1.0, 0.0], (4, 1))

    def model(th):
        return decay.model(th, x)

    caps = np.array([0, 2, 200, 200])
    capped = lm.levenberg_marquardt(model, y, w, start, max_iter=caps, xtol=1e-12, ftol=1e-15)
    free = lm.levenberg_marquardt(model, y, w, start, max_iter=200, xtol=1e-12, ftol=1e-15)
    assert np.all(capped.n_iter <= caps)
    assert capped.n_iter[0] == 0 and not capped.converged[0] and np.array_equal(capped.theta[0], start[0])
    assert capped.n_iter[1] == 2 and not capped.converged[1]
    assert np.array_equal(capped.theta[2:], free.theta[2:]) and capped.converged[2:].all()


def test_float32_jacobian_from_the_values_calls_kernel_rows_is_bit_identical(fitted):
    """lm_float32: the Jacobian of rows of the last values call (kernel rows reused) equals, bit for bit, the
    Jacobian computed from scratch; rows the values call did not see are computed afresh."""
    model = copy.deepcopy(fitted).set_params(lm_float32=True)
    rng = np.random.default_rng(4)
    th = model.X_train_[:50] + rng.normal(0, 0.2, (50, 3))
    values, jacobian, _ = infer._split_fns(model, np.float32)
    scale = model.flux_scale_[None, :, None]
    rows = np.array([3, 7, 8, 40])
    fresh = model._model_scaled(th[rows], jacobian=True, dtype=np.float32, values=False)[1] * scale
    values(th)
    assert np.array_equal(jacobian(th[rows]), fresh)
    other = th[:5] + 0.01                                   # not from the last values call
    ref = model._model_scaled(other, jacobian=True, dtype=np.float32, values=False)[1] * scale
    assert np.array_equal(jacobian(other), ref)
    F = values(th)
    assert np.array_equal(F, model.flux_mean_ + model._model_scaled(th)[0] * model.flux_scale_)


def test_sparse_groups_take_their_columns_of_the_kernel_rows_and_of_the_projection(fitted):
    """Coefficients that vanish off a fifth of the stars (as a Nystrom model's off its landmarks): the
    kernel rows of the float32 path, the distances to the support stars and the full-rank projection
    all give the kernel expansion written out pixel by pixel."""
    model = copy.deepcopy(fitted)
    keep = np.arange(model.X_train_.shape[0]) % 5 == 0
    model.dual_coef_ = np.where(keep[None, :], model.dual_coef_, 0.0)
    model.quick_flux_ = None
    model._reset_cache()
    groups = model._groups()
    assert all(grp[4] is not None for grp in groups)
    th = model.X_train_[:7] + 0.05
    F_ref, J_ref = _full_flux(model, th)
    K = forward.kernel_rows(th, model.X_train_, np.array([grp[0] for grp in groups]))
    for Kx in (None, K):
        F, J = forward.model_flux(th, model.X_train_, groups, model.n_features_in_, jacobian=True, K=Kx)
        np.testing.assert_allclose(model.flux_mean_ + model.flux_scale_ * F, F_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(model.flux_scale_[None, :, None] * J, J_ref, rtol=0, atol=1e-9)
    grid = _full_flux(model, model.X_train_)[0]
    pm = forward.project(groups, model.flux_mean_, model.flux_scale_, grid, np.ones(model.n_features_in_),
                         model.n_features_in_, n_train=len(model.X_train_))
    Fp, Jp = forward.projected_flux(th, model.X_train_, pm, jacobian=True)
    np.testing.assert_allclose(Fp, F_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(Jp, J_ref, rtol=0, atol=1e-8)


def _fd_hessian(phi, th, h=1e-3):
    """Central finite-difference Hessian (m, L, L) of a scalar function of each row of ``th``."""
    m, L = th.shape
    H = np.empty((m, L, L))
    for a in range(L):
        for b in range(L):
            ea, eb = h * np.eye(L)[a], h * np.eye(L)[b]
            H[:, a, b] = (phi(th + ea + eb) - phi(th + ea - eb) - phi(th - ea + eb) + phi(th - ea - eb)) / (4 * h * h)
    return H


def test_residual_curvature_is_the_second_derivative_of_u_dot_flux(fitted):
    """R = sum_j u_j d^2 F_j / d theta^2 (the term Gauss-Newton leaves out): finite differences of u . F for the
    kernel expansion written out pixel by pixel (two widths, float64) and of the projected model's u . F_r."""
    model = copy.deepcopy(fitted).set_params(lm_rank=8)
    rng = np.random.default_rng(3)
    th = model.X_train_[:6] + 0.05 * rng.standard_normal((6, 3))
    u = rng.standard_normal((6, model.n_features_in_))

    def phi(t):
        return np.einsum("mj,mj->m", u, _full_flux(model, t)[0])

    R = forward.residual_curvature(th, model.X_train_, model._groups(), model.flux_scale_, u)
    H = _fd_hessian(phi, th)
    assert np.allclose(R, H, rtol=1e-4, atol=1e-5 * np.abs(H).max())
    assert np.allclose(R, R.transpose(0, 2, 1))
    pm = infer.projected(model)
    Rp = forward.projected_residual_curvature(th, model.X_train_, pm, u)
    Hp = _fd_hessian(lambda t: np.einsum("mj,mj->m", u, forward.projected_flux(t, model.X_train_, pm)[0]), th)
    assert np.allclose(Rp, Hp, rtol=1e-4, atol=1e-5 * np.abs(Hp).max())


def test_slam_lm_newton_reaches_the_same_labels_in_fewer_iterations(trained):
    """lm_newton=True (alone, with lm_rank, and with lm_rank and lm_float32): labels within 0.01 formal errors
    of the default float64 Gauss-Newton path, the same flags, chi2 to 1e-6; in float64 fewer LM iterations
    in total than the same settings without it.

    In float32 the iteration totals of this small model move by ~5 % when the model's dual coefficients
    change by 1e-10 (measured: 1264 / 1299 without / with Newton after such a change, 1314 / 1223
    before it), so there the count is not asserted; the throughput in float32 is measured in
    ``benchmarks/throughput.py``.
    """
    flux, ivar, _ = _spectra(120, seed=13)
    ref = copy.deepcopy(trained).predict_table(flux, ivar)
    for opts in ({}, {"lm_rank": 8}, {"lm_rank": 8, "lm_float32": True}):
        base = copy.deepcopy(trained).set_params(**opts).predict_table(flux, ivar)
        new = copy.deepcopy(trained).set_params(lm_newton=True, **opts).predict_table(flux, ivar)
        assert np.array_equal(ref["flag"], new["flag"]), opts
        assert np.allclose(new["chi2"], ref["chi2"], rtol=1e-6), opts
        if not opts.get("lm_float32"):
            assert np.sum(new["n_iter"]) < np.sum(base["n_iter"]), opts
        for n in LABELS:
            assert np.all(np.abs(new[n] - ref[n]) <= 0.01 * ref[f"e_{n}"]), (opts, n)
            assert np.allclose(new[f"e_{n}"], ref[f"e_{n}"], rtol=1e-3), (opts, n)

"""Tests of the fast labelling paths: the blocked forward model, LM's ``sigma_tol`` and ``lm_float32``.

Each option is checked against an independent reference (the kernel expansion written out
pixel by pixel, scipy's least squares) or against the default float64 path on a mock problem
with known truth.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.optimize import least_squares

from mdslam.slam import SLAM, forward, lm
from mdslam.svr import rbf_kernel

LABELS = ["teff", "logg", "fe_h"]


def _spectra(n, n_pix=40, snr=80.0, seed=0):
    """Mock spectra: sigmoid line depths, smooth in 3 labels, Gaussian noise. flux, ivar (n, n_pix), labels (n, 3)."""
    rng = np.random.default_rng(seed)
    lab = np.column_stack([rng.uniform(3100, 4100, n), rng.uniform(4.5, 5.1, n), rng.uniform(-0.8, 0.4, n)])
    t, g, m = (lab[:, 0:1] - 3600) / 500, (lab[:, 1:2] - 4.8) / 0.3, (lab[:, 2:3] + 0.2) / 0.6
    c = np.random.default_rng(99).normal(0, 1, (5, n_pix))
    z = c[0] * t + 0.6 * c[1] * g + 0.8 * c[2] * m + 0.4 * c[3] * t * m + 0.3 * c[4] * t**2
    flux = 1.0 - 0.5 / (1.0 + np.exp(-z)) + rng.normal(0, 1 / snr, z.shape)
    return flux, np.full(z.shape, snr**2), lab


@pytest.fixture(scope="module")
def fitted():
    flux, ivar, lab = _spectra(300, seed=1)
    model = SLAM(C=(1.0, 10.0), epsilon=(0.02,), gamma=(0.1, 0.5), cv=3, random_state=0)
    return model.fit(flux, lab, ivar, label_names=LABELS)


def test_blocked_forward_model_equals_the_kernel_expansion(fitted):
    """More rows than one block: F and dF/dtheta equal sum_i beta_ij k_i (+ b_j) written out per pixel."""
    model = copy.deepcopy(fitted)
    model.gamma_ = np.where(np.arange(model.n_features_in_) % 3 == 0, 0.5, 0.1)   # two pixel groups
    model._reset_cache()
    rng = np.random.default_rng(2)
    m = 2 * forward.ROW_BLOCK + 7
    th = model.X_train_[rng.integers(0, model.n_train_, m)] + rng.normal(0, 0.2, (m, 3))
    F, J = model._model_scaled(th, jacobian=True)
    Fv, _ = model._model_scaled(th)
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
